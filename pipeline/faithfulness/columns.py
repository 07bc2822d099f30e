"""The faithfulness columns of one batch, on the device: one call from :func:`pipeline.compute.audit_batch`.

Per image (``samples.parquet``):
- ``<m>_masked_prob``, ``<m>_confidence_drop``, ``<m>_confidence_increase`` for ``m`` = ``pred`` and
  ``true`` (:mod:`.confidence`), with ``faithfulness.confidence``: one forward of ``x * E`` per **distinct**
  map; when the prediction is right the true-class map is the predicted-class map and its values are copied
  (as every other ``true_*`` score of the run: :mod:`pipeline.scores.distinct`);
- ``pred_deletion_auc``, ``pred_insertion_auc`` (:mod:`.causal`) for the images of the sample
  (``faithfulness.sample``, :mod:`.sample`) whose predicted-class map is not empty; null (NaN here) elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import torch
from torch import Tensor

from pipeline.faithfulness.causal import area_under_curve, deletion_insertion_curves, rise_blur_kernel
from pipeline.faithfulness.confidence import confidence_change, masked_inputs
from pipeline.faithfulness.sample import hash_sample
from pipeline.scores.distinct import distinct_maps

SALT = "faithfulness"  # the deletion / insertion sample's hash salt (pipeline.faithfulness.sample)
CONFIDENCE_MAPS = ("pred", "true")  # maps 0 and 1 of audit_batch's targets
CONFIDENCE_COLUMNS = {
    "masked_prob": (
        pa.float32(),
        "O: softmax probability of this map's class on the input multiplied by the map (x * E, E in [0, 1] at "
        "the input's resolution, x the normalised input; faithfulness.confidence)",
    ),
    "confidence_drop": (
        pa.float32(),
        "max(0, Y - O) / Y with Y this class's probability on the input and O the masked_prob: its mean is the "
        "average drop (Grad-CAM++ paper, sec. 5.1; lower = the map keeps what the class needs); "
        "null when Y is 0",
    ),
    "confidence_increase": (
        pa.bool_(),
        "O > Y: the class is more probable on the input kept by the map than on the whole input; its share is "
        "the increase in confidence (Grad-CAM++ paper, sec. 5.1)",
    ),
}
CAUSAL_COLUMNS = {
    "pred_deletion_auc": (
        pa.float32(),
        "deletion AUC of the predicted-class map (RISE): the predicted class's softmax probability as the "
        "pixels are set to 0 (the mean colour) in the map's order, faithfulness.steps steps, trapezoid area in "
        "[0, 1]; lower = more faithful. Only for the faithfulness.sample images (null elsewhere and for an "
        "empty map)",
    ),
    "pred_insertion_auc": (
        pa.float32(),
        "insertion AUC of the predicted-class map (RISE): the same probability as the pixels of a blurred copy "
        "(Gaussian 11 px, sigma 5) are put back in the map's order; higher = more faithful. Only for the "
        "faithfulness.sample images (null elsewhere and for an empty map)",
    ),
}


def faithfulness_fields(settings) -> list[tuple[str, pa.DataType, str]]:
    """``(column, Arrow type, description)`` of the columns :func:`faithfulness_columns` adds with
    ``settings`` (a :class:`~pipeline.settings.FaithfulnessSettings`), in table order."""
    fields = []
    if settings.confidence:
        for name in CONFIDENCE_MAPS:
            about = "the predicted class's map" if name == "pred" else "the true class's map"
            fields += [(f"{name}_{c}", dtype, f"{text}; {about}") for c, (dtype, text) in CONFIDENCE_COLUMNS.items()]
    if settings.sample > 0:
        fields += [(name, dtype, text) for name, (dtype, text) in CAUSAL_COLUMNS.items()]
    return fields


@dataclass
class FaithfulnessPlan:
    """What :func:`faithfulness_columns` computes for a run.

    Attributes:
        confidence: ``faithfulness.confidence``.
        sample_ids: the ids of the deletion / insertion sample (empty: off).
        steps: ``faithfulness.steps``.
        kernel: the insertion blur ``[k, k]`` float64 (:func:`~pipeline.faithfulness.causal.rise_blur_kernel`).
        in_sample: ``[R]`` bool on the device, row ``i`` of the records the run's batches index (``Batch.index``)
            is in the sample; set by :meth:`bind` before the first batch (unbound: no image is).
    """

    confidence: bool
    sample_ids: frozenset[str]
    steps: int
    kernel: Tensor
    in_sample: Tensor | None = None

    def bind(self, records: Sequence, device: torch.device) -> None:
        """Tell the plan which records the batches' ``index`` refers to (the run's list of images to audit)."""
        self.in_sample = torch.tensor([r.sample_id in self.sample_ids for r in records], dtype=torch.bool).to(device)


def plan_faithfulness(settings, records: Sequence) -> FaithfulnessPlan:
    """The plan of a run from ``settings`` (``faithfulness``) and every record of its dataset: the sample is
    drawn among the usable records (those without an index problem), so a resume, which audits only the
    rest, keeps the same sample."""
    ids = [r.sample_id for r in records if not r.problem]
    return FaithfulnessPlan(
        settings.confidence,
        hash_sample(ids, settings.sample, SALT),
        settings.steps,
        rise_blur_kernel(settings.blur_kernel, settings.blur_sigma),
    )


def model_forward(engine, channels_last: bool):
    """``images -> logits`` through the engine's model without maps: no gradients, the engine's autocast and
    the run's memory format. (The engine's hook still keeps the target layer's output of the last call.)"""

    def predict(images: Tensor) -> Tensor:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        dtype = engine.autocast_dtype
        with (
            torch.no_grad(),
            torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            return engine.model(images).float()

    return predict


def faithfulness_columns(
    plan: FaithfulnessPlan | None,
    predict,
    images: Tensor,
    maps: Tensor,
    empty: Tensor,
    targets: Tensor,
    probs: Tensor,
    rows: Tensor,
) -> dict[str, Tensor]:
    """The batch's faithfulness columns (see the module's docstring), each ``[B]`` on the device.

    Args:
        plan: the run's :class:`FaithfulnessPlan` (None: no columns).
        predict: normalised inputs -> logits (:func:`model_forward`).
        images: ``[B, 3, H, W]`` the normalised inputs the maps were made for.
        maps: ``[B, K, H, W]`` normalised maps in ``[0, 1]`` (``UpsampledMaps.normalised``); map 0 is the
            predicted class's, map 1 the true class's.
        empty: ``[B, K]`` bool, the map is empty.
        targets: ``[B, K]`` long, each map's class.
        probs: ``[B, C]`` softmax of the run's forward.
        rows: ``[B]`` long, the batch's ``index`` (rows of the records the plan is bound to).
    """
    if plan is None:
        return {}
    batch = images.shape[0]
    columns: dict[str, Tensor] = {}
    chunk = max(1, 2 * batch)
    if plan.confidence:
        pair = targets[:, :2]
        distinct, copy_of = distinct_maps(pair)  # flat k * B + b, the true map copied from pred when equal
        image_of, map_of = distinct % batch, distinct // batch
        selected = maps[image_of, map_of]  # [U, H, W]
        classes = pair.transpose(0, 1).reshape(-1)[distinct]  # [U]
        before = probs.gather(1, pair).transpose(0, 1).reshape(-1)[distinct]  # Y of each distinct map
        after = torch.cat(
            [
                predict(masked_inputs(images[image_of[b : b + chunk]], selected[b : b + chunk]))
                .softmax(dim=1)
                .gather(1, classes[b : b + chunk, None])[:, 0]
                for b in range(0, distinct.numel(), chunk)
            ]
        )
        drop, increase = confidence_change(before, after)
        for k, name in enumerate(CONFIDENCE_MAPS):
            flat = copy_of.view(2, batch)[k]
            columns[f"{name}_masked_prob"] = after[flat]
            columns[f"{name}_confidence_drop"] = drop[flat]
            columns[f"{name}_confidence_increase"] = torch.where(
                torch.isnan(drop[flat]), torch.full_like(drop[flat], float("nan")), increase[flat].float()
            )
    if plan.sample_ids:
        deletion = torch.full((batch,), float("nan"), device=images.device)
        insertion = torch.full((batch,), float("nan"), device=images.device)
        members = torch.zeros(batch, dtype=torch.bool, device=images.device)
        if plan.in_sample is not None:
            members = plan.in_sample[rows.to(plan.in_sample.device)].to(images.device) & ~empty[:, 0]
        chosen = members.nonzero().squeeze(1)  # [S]: a [B] flag to the host, never a map
        if chosen.numel():
            pred = targets[chosen, 0]
            curves = deletion_insertion_curves(
                predict,
                images[chosen],
                maps[chosen, 0],
                pred,
                plan.steps,
                plan.kernel,
                chunk,
                probability=probs[chosen].gather(1, pred[:, None])[:, 0],
            )
            deletion[chosen] = area_under_curve(curves[0])
            insertion[chosen] = area_under_curve(curves[1])
        columns["pred_deletion_auc"] = deletion
        columns["pred_insertion_auc"] = insertion
    return columns


def audit_batch_columns(setup, images: Tensor, maps, targets: Tensor, probs: Tensor, rows: Tensor) -> dict[str, Tensor]:
    """:func:`faithfulness_columns` for :func:`pipeline.compute.audit_batch`: ``setup`` an
    :class:`~pipeline.setup.AuditSetup` (its ``faithfulness`` plan, engine and memory format), ``maps`` the
    batch's input-space :class:`~pipeline.maps.engine.UpsampledMaps`."""
    predict = model_forward(setup.engine, setup.channels_last)
    return faithfulness_columns(setup.faithfulness, predict, images, maps.normalised, maps.empty, targets, probs, rows)
