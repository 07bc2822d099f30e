"""The CAM engine against a direct computation on a tiny model."""

import dataclasses
import functools

import pytest
import torch
from torch import nn

from pipeline.maps.engine import CamEngine, upsample_and_normalise
from pipeline.maps.methods import METHODS, get_method, gradcampp


class Tiny(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.target = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.after = nn.ReLU(inplace=True)  # in-place right after the target layer: must not corrupt the maps
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.pool(self.after(self.target(self.stem(x)))).flatten(1))


def direct_acts_and_grads(model, images, targets, softmax=False):
    """Full autograd through a copy of the model: activations and d score / d activations."""
    kept = {}

    def hook(module, inputs, output):
        output.retain_grad()
        kept["a"] = output
        return output

    handle = model.target.register_forward_hook(hook)
    model.after.inplace = False
    grads = []
    for k in range(targets.shape[1]):
        logits = model(images)
        scores = logits.softmax(1) if softmax else logits
        scores.gather(1, targets[:, k : k + 1]).sum().backward()
        grads.append(kept["a"].grad.detach().clone())
        model.zero_grad()
    handle.remove()
    model.after.inplace = True
    return kept["a"].detach(), torch.stack(grads, 1)


@pytest.mark.parametrize("softmax", [False, True])
def test_gradcam_matches_direct_computation(softmax):
    """The engine, on its own copy of the model, gives Grad-CAM as computed by full autograd through a
    reference copy with the same weights, and leaves no parameter gradients on the model it was given."""
    torch.manual_seed(0)
    reference = Tiny()
    model = Tiny()
    model.load_state_dict(reference.state_dict())
    images = torch.randn(4, 3, 12, 20)
    targets = torch.tensor([[0, 1], [2, 2], [4, 0], [3, 1]])
    acts, grads = direct_acts_and_grads(reference, images, targets, softmax)
    expected = torch.einsum("bkc,bchw->bkhw", grads.mean((-2, -1)), acts)
    out = CamEngine(model, model.target, get_method("gradcam"), "softmax" if softmax else "logit")(images, targets)
    assert out.signed_maps.shape == (4, 2, 6, 10)
    torch.testing.assert_close(out.signed_maps, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, reference(images).detach())
    assert all(p.grad is None for p in model.parameters()), "no parameter gradients"
    for name, value in model.state_dict().items():  # the engine does not change the weights it was given
        assert torch.equal(value, reference.state_dict()[name]), name


def test_backward_stays_in_the_head():
    """No graph is recorded before the target layer (so no backward through the trunk), one is after it."""
    model = Tiny()
    recorded = {}
    model.stem[0].register_forward_hook(lambda m, i, o: recorded.update(trunk=o.requires_grad))
    model.fc.register_forward_hook(lambda m, i, o: recorded.update(head=i[0].requires_grad))
    engine = CamEngine(model, model.target, get_method("gradcam"))
    engine(torch.randn(2, 3, 16, 16), torch.tensor([[0, 1], [1, 2]]))
    assert recorded == {"trunk": False, "head": True}
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def _library_signed_map(name: str, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's map for one target before its ReLU, ``[B, h, w]``: its own
    ``get_cam_image`` (weights and weighted sum, or the element-wise product) on the given activations
    and gradients ``[B, C, h, w]``, in float64. Its Grad-CAM++ adds eps = 1e-6 to the denominator."""
    library = pytest.importorskip("pytorch_grad_cam")
    cls = {
        "gradcam": library.GradCAM,
        "gradcampp": library.GradCAMPlusPlus,
        "hirescam": library.HiResCAM,
        "xgradcam": library.XGradCAM,
        "layercam": library.LayerCAM,
    }[name]
    tool = cls.__new__(cls)  # only its formulas are used: no model, no hooks
    cam = tool.get_cam_image(None, None, None, acts.double().numpy(), grads.double().numpy(), False)
    return torch.from_numpy(cam).float()


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "hirescam", "xgradcam", "layercam"])
def test_every_gradient_method_matches_pytorch_grad_cam_on_direct_gradients(name):
    """Oracle: the engine's signed map against pytorch-grad-cam's formula applied to activations and
    gradients from full autograd through a reference copy of the model (nothing copied from methods.py).
    Grad-CAM++ is compared with the library's eps = 1e-6; eps = 0 (the paper) is checked against the
    library on real photographs in test_oracle_gradcam.py."""
    torch.manual_seed(1)
    reference, model = Tiny(), Tiny()
    model.load_state_dict(reference.state_dict())
    images = torch.randn(3, 3, 16, 16)
    targets = torch.tensor([[0, 1], [2, 3], [4, 4]])
    acts, grads = direct_acts_and_grads(reference, images, targets)
    method = METHODS[name]
    if name == "gradcampp":
        method = dataclasses.replace(method, function=functools.partial(gradcampp, eps=1e-6))
    out = CamEngine(model, model.target, method)(images, targets).signed_maps
    for k in range(targets.shape[1]):
        expected = _library_signed_map(name, acts, grads[:, k])
        assert expected.abs().max() > 1e-3  # a real map, not two zero maps agreeing
        torch.testing.assert_close(out[:, k], expected, rtol=1e-4, atol=1e-6, msg=f"{name} target {k}")


def test_cam_is_gradcam_times_area_for_a_gap_linear_head():
    model = Tiny()
    images, targets = torch.randn(2, 3, 16, 16), torch.tensor([[0, 1], [3, 3]])
    cam = CamEngine(model, model.target, METHODS["cam"], head_weight=model.fc.weight.detach())(
        images, targets
    ).signed_maps
    # After in-place ReLU the gradient is masked where A <= 0, so compare on a head without that ReLU.
    model.after = nn.Identity()
    grad = CamEngine(model, model.target, METHODS["gradcam"])(images, targets).signed_maps
    torch.testing.assert_close(cam / 64, grad, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_gives_float32_maps():
    model = Tiny()
    out = CamEngine(model, model.target, METHODS["gradcam"], autocast_dtype=torch.bfloat16)(
        torch.randn(2, 3, 16, 16), torch.tensor([[0, 1], [1, 1]])
    )
    assert out.signed_maps.dtype == torch.float32 and out.logits.dtype == torch.float32
    assert torch.isfinite(out.signed_maps).all()


def test_upsample_normalise_empty_and_negative():
    signed = torch.zeros(2, 2, 3, 4)
    signed[0, 0] = torch.arange(12.0).view(3, 4) - 5  # mixed signs
    signed[1, 1] = 2.5  # constant positive: empty after normalisation
    maps = upsample_and_normalise(signed, (6, 8))
    assert maps.normalised.shape == (2, 2, 6, 8)
    assert maps.empty.tolist() == [[False, True], [True, True]]
    assert maps.normalised[0, 0].max() == 1 and maps.normalised[0, 0].min() == 0
    assert (maps.normalised[maps.empty] == 0).all()
    assert torch.isclose(maps.raw_max[1, 1], torch.tensor(2.5))
    negative = upsample_and_normalise(signed, (6, 8), negative=True)
    assert not negative.empty[0, 0] and negative.empty[1, 1]
    # the negative map is large where the signed map is most negative
    assert negative.normalised[0, 0, 0, 0] == 1


def test_engine_removes_its_hook_when_closed(tiny_model):
    """``with CamEngine(...)`` leaves the target layer with the hooks it had before; a closed engine
    refuses to run (it would silently make no maps), and the model runs without it."""
    layer = tiny_model.features
    before = len(layer._forward_hooks)
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([[0], [2]])
    with CamEngine(tiny_model, layer, METHODS["gradcam"]) as engine:
        assert len(layer._forward_hooks) == before + 1
        assert engine(images, targets).signed_maps.shape == (2, 1, 8, 8)
    assert len(layer._forward_hooks) == before
    engine.close()  # idempotent
    assert len(layer._forward_hooks) == before
    with pytest.raises(RuntimeError, match="closed"):
        engine(images, targets)
    # a second engine on the same layer works alone: its hook is the only one
    with CamEngine(tiny_model, layer, METHODS["gradcam"]) as second:
        assert len(layer._forward_hooks) == before + 1
        assert torch.isfinite(second(images, targets).signed_maps).all()
    assert len(layer._forward_hooks) == before
