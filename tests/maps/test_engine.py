"""The CAM engine against a direct computation on a tiny model."""

import pytest
import torch
from torch import nn

from pipeline.maps.engine import CamEngine, upsample_and_normalise
from pipeline.maps.methods import METHODS, get_method


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
        scores.gather(1, targets[:, k:k + 1]).sum().backward()
        grads.append(kept["a"].grad.detach().clone())
        model.zero_grad()
    handle.remove()
    model.after.inplace = True
    return kept["a"].detach(), torch.stack(grads, 1)


@pytest.mark.parametrize("softmax", [False, True])
def test_gradcam_matches_direct_computation(softmax):
    torch.manual_seed(0)
    model = Tiny()
    images = torch.randn(4, 3, 12, 20)
    targets = torch.tensor([[0, 1], [2, 2], [4, 0], [3, 1]])
    acts, grads = direct_acts_and_grads(model, images, targets, softmax)
    expected = torch.einsum("bkc,bchw->bkhw", grads.mean((-2, -1)), acts)
    engine = CamEngine(Tiny().load_state_dict(model.state_dict()) and model, model.target, get_method("gradcam"),
                       "softmax" if softmax else "logit")
    out = engine(images, targets)
    assert out.signed_maps.shape == (4, 2, 6, 10)
    torch.testing.assert_close(out.signed_maps, expected, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters()), "no parameter gradients"


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


def test_every_gradient_method_matches_its_formula_on_direct_gradients():
    torch.manual_seed(1)
    model = Tiny()
    images = torch.randn(3, 3, 16, 16)
    targets = torch.tensor([[0, 1], [2, 3], [4, 4]])
    acts, grads = direct_acts_and_grads(model, images, targets)
    a = acts[:, None]
    formulas = {
        "gradcam": (grads.mean((-2, -1))[..., None, None] * a).sum(2),
        "hirescam": (grads * a).sum(2),
        "layercam": (grads.clamp(min=0) * a).sum(2),
        "xgradcam": (((grads * a).sum((-2, -1)) / (acts.sum((-2, -1))[:, None] + 1e-7))[..., None, None] * a).sum(2),
    }
    g2, g3 = grads ** 2, grads ** 3
    denominator = 2 * g2 + acts.sum((-2, -1))[:, None, :, None, None] * g3
    alpha = torch.where(denominator != 0, g2 / denominator, torch.zeros_like(g2))
    formulas["gradcampp"] = (((alpha * grads.clamp(min=0)).sum((-2, -1)))[..., None, None] * a).sum(2)
    for name, expected in formulas.items():
        out = CamEngine(model, model.target, METHODS[name])(images, targets)
        torch.testing.assert_close(out.signed_maps, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_cam_is_gradcam_times_area_for_a_gap_linear_head():
    model = Tiny()
    images, targets = torch.randn(2, 3, 16, 16), torch.tensor([[0, 1], [3, 3]])
    cam = CamEngine(model, model.target, METHODS["cam"], head_weight=model.fc.weight.detach())(images, targets).signed_maps
    # After in-place ReLU the gradient is masked where A <= 0, so compare on a head without that ReLU.
    model.after = nn.Identity()
    grad = CamEngine(model, model.target, METHODS["gradcam"])(images, targets).signed_maps
    torch.testing.assert_close(cam / 64, grad, rtol=1e-5, atol=1e-6)


def test_bf16_autocast_gives_float32_maps():
    model = Tiny()
    out = CamEngine(model, model.target, METHODS["gradcam"], autocast_dtype=torch.bfloat16)(torch.randn(2, 3, 16, 16), torch.tensor([[0, 1], [1, 1]]))
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
