"""Transformer families: ViT tokens and Swin's channels-last maps, against pytorch-grad-cam.

The library needs a ``reshape_transform`` for these models (its documented recipe for ViT and Swin); the
product finds the layout itself (``model.layout=auto``). Weights are random (seeded): the comparison is
of implementations, not of what a trained model looks at; the test checks the maps are not empty.
"""

import copy

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam import GradCAM, LayerCAM  # noqa: E402
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from pipeline.maps.engine import CamEngine, upsample_and_normalise  # noqa: E402
from pipeline.maps.methods import METHODS  # noqa: E402
from pipeline.model.layers import resolve_target_layer  # noqa: E402
from pipeline.model.layout import FeatureLayout, detect_layout  # noqa: E402


def seeded(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


def vit_tokens_to_map(tensor, height=14, width=14):  # pytorch-grad-cam's documented ViT recipe
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_to_nchw(tensor):  # timm's Swin stages are [B, h, w, C]
    return tensor.permute(0, 3, 1, 2)


def test_layouts_are_found_from_the_model():
    assert detect_layout(seeded("vit_tiny_patch16_224")) == FeatureLayout("tokens", 1, (14, 14))
    assert detect_layout(seeded("deit_tiny_distilled_patch16_224")) == FeatureLayout(
        "tokens", 2, (14, 14)
    )  # class + distillation
    assert detect_layout(seeded("resnet18")).kind == "nchw"
    with pytest.raises(ValueError, match="tokens needs"):
        detect_layout(seeded("resnet18"), "tokens")


def test_auto_target_layer_for_vit_is_the_last_blocks_norm1_not_an_attention_tensor():
    vit = seeded("vit_tiny_patch16_224")
    name, _, shape = resolve_target_layer(vit, "auto", 224, layout=detect_layout(vit))
    assert name == "blocks.11.norm1" and shape == (192, 14, 14)
    # read as NCHW, the attention's [B, heads, tokens, dims] passes for a map but lacks the 192 feature
    # channels; only the patch embedding is left, a map of the input, not of the class evidence
    assert resolve_target_layer(vit, "auto", 224)[0] == "patch_embed.proj"


def test_token_model_without_a_patch_grid_is_refused_not_guessed():
    """TNT states tokens but no patch grid: auto must not fall back to an attention tensor."""
    tnt = seeded("tnt_s_patch16_224")
    with pytest.raises(ValueError, match="384 feature channels"):
        resolve_target_layer(tnt, "auto", 224, layout=detect_layout(tnt))


def test_vit_with_dynamic_image_size_gets_the_grid_of_the_input_size():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, dynamic_img_size=True).eval()
    layout = detect_layout(vit, "auto", 288)
    assert layout == FeatureLayout("tokens", 1, (18, 18))
    assert resolve_target_layer(vit, "auto", 288, layout=layout)[2] == (192, 18, 18)


@pytest.mark.parametrize(
    "model_name,layer_name,reshape",
    [
        ("vit_tiny_patch16_224", "blocks.11.norm1", vit_tokens_to_map),
        # Swin-T at 224 px, three passes of three images per method: 13-28 s each on 2 cores (make test-all); its
        # channels-last layout stays in the fast suite through the audit below and the layout tests
        pytest.param("swin_tiny_patch4_window7_224", "layers.3", swin_to_nchw, marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_maps_match_pytorch_grad_cam_with_its_reshape_recipe(model_name, layer_name, reshape, method):
    ours_model = seeded(model_name)
    their_model = copy.deepcopy(ours_model)
    layout = detect_layout(ours_model)
    modules = dict(ours_model.named_modules())
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ranked = their_model(images).argsort(dim=1, descending=True)
    targets = torch.stack([ranked[:, 0], ranked[:, 3]], dim=1)
    signed = CamEngine(ours_model, modules[layer_name], METHODS[method], layout=layout)(images, targets).signed_maps
    product = upsample_and_normalise(signed, (224, 224))
    assert not product.empty.any()
    theirs_class = {"gradcam": GradCAM, "layercam": LayerCAM}[method]
    cam = theirs_class(
        model=their_model, target_layers=[dict(their_model.named_modules())[layer_name]], reshape_transform=reshape
    )
    for k in range(2):
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in targets[:, k]])
        ours = product.normalised[:, k].numpy()
        assert np.abs(theirs - ours).max() < 1e-4, f"{model_name} {method} target {k}: {np.abs(theirs - ours).max()}"
        assert (
            np.abs(theirs - scale_cam_image(scale_cam_image(signed[:, k].clamp(min=0).numpy(), (224, 224)))).max()
            < 1e-4
        )


def test_vit_and_swin_audit_end_to_end_and_cam_is_refused_for_a_class_token_head(tmp_path):
    from pipeline.errors import ConfigError
    from tests.helpers_corpus import base_overrides, good_dataset, run_in_process

    root = tmp_path / "data"
    good_dataset(root, 4)
    for name, layer in (("vit_tiny_patch16_224", "blocks.11.norm1"), ("swin_tiny_patch4_window7_224", "norm")):
        overrides = base_overrides(
            root,
            tmp_path / "cache",
            **{
                "model": "timm",
                "model.name": f"timm:{name}",
                "model.checkpoint": "null",
                "model.allow_random_weights": "true",
                "model.num_classes": 3,
                "model._target_": None,
                "+model.kwargs.num_classes": None,
                "data.preprocess.size": "auto",
                "data.preprocess.resize_size": "auto",
                # what this test checks is the layout and the layer through a run: the faithfulness columns and
                # the sanity check (about 130 more forwards of each model at 224 px) are tested on their own
                "faithfulness.confidence": "false",
                "faithfulness.sample": 0,
                "sanity.sample": 0,
            },
        )
        summary = run_in_process(overrides, tmp_path / f"run_{name}")
        assert summary["images"] == 4 and summary["target_layer"] == layer
    with pytest.raises(ConfigError) as error:
        run_in_process(
            base_overrides(
                root,
                tmp_path / "cache",
                **{
                    "model": "timm",
                    "model.name": "timm:vit_tiny_patch16_224",
                    "model.checkpoint": "null",
                    "model.allow_random_weights": "true",
                    "model.num_classes": 3,
                    "model._target_": None,
                    "+model.kwargs.num_classes": None,
                    "data.preprocess.size": 224,
                    "data.preprocess.resize_size": 256,
                    "cam.method": "cam",
                },
            ),
            tmp_path / "run_cam",
        )
    assert error.value.option == "cam.method"
