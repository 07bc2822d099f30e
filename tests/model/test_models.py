"""Model zoo: torchvision/timm by name, checkpoints loaded safely, target layers, the CAM head."""

import pytest
import torch
from omegaconf import OmegaConf

from pipeline.errors import ConfigError
from pipeline.model.build import infer_num_classes, load_state_dict
from pipeline.model.from_config import build_model
from pipeline.model.layers import find_linear_head, resolve_target_layer


def model_cfg(**values):
    base = {
        "name": "resnet18",
        "checkpoint": None,
        "weights": None,
        "num_classes": None,
        "load_by_position": False,
        "allow_random_weights": False,
        "target_layer": "auto",
        "mean": None,
        "std": None,
    }
    return OmegaConf.create({**base, **values})


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "ddp"])
def test_checkpoint_layouts_load_and_give_the_same_logits(tmp_path, wrap):
    import torchvision

    reference = torchvision.models.resnet18(num_classes=7).eval()
    state = reference.state_dict()
    if wrap == "ddp":
        saved = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "bare":
        saved = state
    else:
        saved = {wrap: state, "epoch": 3}
    path = tmp_path / "ckpt.pt"
    torch.save(saved, path)
    built = build_model(model_cfg(checkpoint=str(path)), tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(built.module.eval()(x), reference(x))
    assert infer_num_classes(load_state_dict(path)[0]) == 7


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pickle executed",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(ConfigError) as error:
        build_model(model_cfg(checkpoint=str(path), num_classes=10), tmp_path)
    assert error.value.option == "model.checkpoint"


def test_published_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    with pytest.raises(ConfigError, match="not in the local cache"):
        build_model(model_cfg(weights="DEFAULT"), tmp_path)


def test_unknown_model_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        build_model(model_cfg(name="resnet_does_not_exist"), tmp_path)
    assert error.value.option == "model.name"


def test_auto_target_layer_and_wrong_name_lists_candidates():
    import torchvision

    model = torchvision.models.resnet18(num_classes=5).eval()
    name, module, shape = resolve_target_layer(model, "auto", 64)
    assert name == "layer4" and module is model.layer4 and shape == (512, 2, 2)
    assert resolve_target_layer(model, "layer3.1", 64)[0] == "layer3.1"
    with pytest.raises(ValueError, match="layer4"):
        resolve_target_layer(model, "layer9", 64)
    with pytest.raises(ValueError):
        resolve_target_layer(model, "fc", 64)  # exists, but is not a spatial map


def test_cam_head_found_for_gap_linear_heads_only():
    import torchvision

    resnet = torchvision.models.resnet18(num_classes=5)
    assert find_linear_head(resnet, 512) is resnet.fc.weight or torch.equal(
        find_linear_head(resnet, 512), resnet.fc.weight
    )
    assert find_linear_head(resnet, 256) is None  # a layer whose channels do not feed the head directly


def test_timm_model_by_name(tmp_path):
    pytest.importorskip("timm")
    built = build_model(model_cfg(name="timm:resnet18", num_classes=4, allow_random_weights=True), tmp_path)
    with torch.no_grad():
        assert built.module.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    assert resolve_target_layer(built.module, "auto", 64)[0] == "layer4"


class SmallNet(torch.nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, num_classes)
        )

    def forward(self, x):
        return self.head(self.body(x))


def test_any_module_through_hydra_target(tmp_path):
    cfg = model_cfg(name="custom", _target_="tests.model.test_models.SmallNet", kwargs={"num_classes": 6})
    built = build_model(cfg, tmp_path)
    assert isinstance(built.module, SmallNet) and built.module.head[-1].out_features == 6
    assert resolve_target_layer(built.module, "auto", 16)[0] == "body"


def test_torchvision_weights_metadata_gives_their_preprocessing():
    import torchvision

    from pipeline.model.build import torchvision_preprocess

    b1 = torchvision.models.get_model_weights("efficientnet_b1").IMAGENET1K_V2
    assert torchvision_preprocess(b1)[0] == {"size": 240, "resize_size": 255, "interpolation": "bilinear"}
    preprocess, mean, std = torchvision_preprocess(torchvision.models.get_model_weights("resnet50").IMAGENET1K_V2)
    assert preprocess == {"size": 224, "resize_size": 232, "interpolation": "bilinear"}
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))


def test_cached_torchvision_weights_bring_their_preprocessing(tmp_path, monkeypatch):
    """model.weights from the local hub cache (a stand-in file): efficientnet_b0 V1 was evaluated bicubic."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub-home"))
    chosen = torchvision.models.get_model_weights("efficientnet_b0").IMAGENET1K_V1
    cached = tmp_path / "hub-home" / "hub" / "checkpoints" / chosen.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.efficientnet_b0().state_dict(), cached)
    built = build_model(model_cfg(name="efficientnet_b0", weights="IMAGENET1K_V1"), tmp_path)
    assert built.preprocess == {"size": 224, "resize_size": 256, "interpolation": "bicubic"}
    keys, names = built.classes  # categories as names; WordNet ids as keys (timm supplies them)
    assert len(keys) == len(names) == 1000 and (keys[0], names[0]) == ("n01440764", "tench")
    assert (keys[999], names[999]) == ("n15075141", "toilet tissue")
    assert built.preprocess_source == "torchvision weights efficientnet_b0 IMAGENET1K_V1"


def test_timm_pretrained_cfg_gives_size_crop_and_interpolation():
    from pipeline.model.build import timm_preprocess

    cfg = {"input_size": (3, 240, 240), "crop_pct": 0.882, "interpolation": "bicubic"}
    assert timm_preprocess(cfg) == {"size": 240, "resize_size": 272, "interpolation": "bicubic"}  # floor(240 / 0.882)
    assert timm_preprocess({}) == {}


def test_checkpoint_metadata_describes_its_weights_and_config_still_wins(tmp_path):
    import torchvision

    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "state_dict": torchvision.models.resnet18(num_classes=3).state_dict(),
            "mean": [0.5, 0.5, 0.5],
            "classes": ["cat", "dog", "fox"],
            "std": [0.25, 0.25, 0.25],
            "input_size": 160,
            "interpolation": "bicubic",
        },
        path,
    )
    built = build_model(model_cfg(checkpoint=str(path)), tmp_path)
    assert built.preprocess == {"size": 160, "interpolation": "bicubic"}
    assert built.mean == (0.5, 0.5, 0.5) and built.std == (0.25, 0.25, 0.25)
    assert built.preprocess_source == f"checkpoint {path}"
    assert built.classes == (("cat", "dog", "fox"), ("cat", "dog", "fox")) and built.class_keys == ["cat", "dog", "fox"]
    explicit = build_model(model_cfg(checkpoint=str(path), mean=[0.1, 0.2, 0.3]), tmp_path)
    assert explicit.mean == (0.1, 0.2, 0.3) and explicit.std == (0.25, 0.25, 0.25)
    # no weights, no metadata: ImageNet normalisation
    plain = build_model(model_cfg(allow_random_weights=True), tmp_path)
    assert plain.preprocess == {} and plain.mean == (0.485, 0.456, 0.406) and plain.classes is None


def test_timm_imagenet_model_names_its_classes_by_wordnet_id(tmp_path):
    pytest.importorskip("timm")
    keys, names = build_model(model_cfg(name="timm:resnet18", allow_random_weights=True), tmp_path).classes
    assert len(keys) == 1000 and (keys[0], names[0]) == ("n01440764", "tench")
    new_head = model_cfg(name="timm:resnet18", num_classes=4, allow_random_weights=True)
    assert build_model(new_head, tmp_path).classes is None  # a new head: no names


def test_auto_preprocessing_resolution():
    from pipeline.data.dataset import resolve_preprocess

    auto = {"mode": "resize_crop", "size": "auto", "resize_size": "auto", "interpolation": "auto", "fill": 0}
    spec, sources = resolve_preprocess(auto, {"size": 240, "resize_size": 255, "interpolation": "bicubic"})
    assert (spec.size, spec.resize_size, spec.interpolation) == (240, 255, "bicubic")
    assert set(sources.values()) == {"model"}
    spec, sources = resolve_preprocess(auto, {"interpolation": "bicubic"})
    assert (spec.size, spec.resize_size, spec.interpolation) == (224, 256, "bicubic")
    assert sources == {"size": "fallback", "resize_size": "fallback", "interpolation": "model"}
    spec, sources = resolve_preprocess(
        {**auto, "interpolation": "nearest", "size": 200}, {"size": 240, "interpolation": "bicubic"}
    )
    assert (spec.size, spec.interpolation) == (200, "nearest") and sources["size"] == sources[
        "interpolation"
    ] == "config"
    # a size from the config keeps the weights' crop ratio: resnet50 V2 (232 / 224) audited at 384
    spec, sources = resolve_preprocess(
        {**auto, "size": 384}, {"size": 224, "resize_size": 232, "interpolation": "bilinear"}
    )
    assert (spec.size, spec.resize_size, sources["resize_size"]) == (384, 398, "model")  # round(384 * 232 / 224)
    spec, sources = resolve_preprocess({**auto, "size": 320}, {})
    assert (spec.resize_size, sources["resize_size"]) == (366, "fallback")  # round(320 * 256 / 224)
    spec, sources = resolve_preprocess({**auto, "mode": "letterbox"}, {"resize_size": 232, "size": 224})
    assert spec.resize_size is None and sources["resize_size"] == "unused"
    for bad, option in [
        ({"interpolation": "cubic"}, "interpolation"),
        ({"mode": "crop"}, "mode"),
        ({"size": 224, "resize_size": 200}, "resize_size"),
        ({"size": 4}, "size"),
    ]:
        with pytest.raises(ValueError, match=f"^{option}: "):
            resolve_preprocess({**auto, **bad}, {})
