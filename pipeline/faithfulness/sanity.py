"""The explainer's sanity check, once per run, after the loop and before the report: do the maps change
when the model's weights are randomised, and do they change with the class?

1. **Cascading model-parameter randomisation** (Adebayo et al. 2018, *Sanity Checks for Saliency Maps*,
   NeurIPS, arXiv 1810.03292; Quantus ``MPRT``, ``layer_order="top_down"``): on a copy of the model the
   stages of :mod:`.randomisation` (the head, then one block at a time from the last one down) are
   re-initialised one after the other, and after each the maps of the original prediction are made again
   and compared with the original maps: Spearman rank correlation of the signed map and of its absolute
   value (the map before the ReLU, upsampled to the input), SSIM of the normalised maps (after the ReLU, in
   ``[0, 1]``, what the audit scores).
2. **Class sensitivity** (Sixt et al. 2020, *When Explanations Lie: Why Many Modified BP Attributions
   Fail*, ICML, arXiv 1912.09818; Quantus ``RandomLogit``): the map of the predicted class against the map
   of a random other class (seeded), same three similarities.

Verdicts (pass / fail, not a ranking of methods; Binder et al. 2023, arXiv 2211.12486, show that these
checks can be passed by uninformative maps, so a pass is necessary, not sufficient):
- **maps depend on the weights**: yes when both hold: after randomising the head (stage 1) the mean
  Spearman rank correlation of the signed maps with the original ones is below
  ``sanity.max_weight_similarity`` (the map reacts to the head: a map made with another head, or none,
  does not), and after ``sanity.verdict_stage`` stages (the head and the last block) so is the mean
  Spearman of ``|map|`` (the map's magnitude pattern comes from the trained weights, not from the input's
  structure alone: Adebayo et al. show that an edge detector keeps its ``|map|`` ranking whatever the
  weights; after the head alone ``|sum_k a_k A_k|`` still follows where the activations are large, so the
  absolute value is judged only once a block of the trunk is randomised too);
- **maps depend on the class**: yes when the mean Spearman rank correlation of the signed maps of the two
  classes is below ``sanity.max_class_similarity``.

Spearman is undefined for a constant map (no ranking): such an image is left out of that mean and counted
(``undefined``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import torch
from torch import Tensor, nn

from pipeline.faithfulness.inputs import load_inputs
from pipeline.faithfulness.randomisation import Stage, detached_copy, randomisation_stages, randomise
from pipeline.faithfulness.sample import hash_sample
from pipeline.faithfulness.similarity import spearman, ssim
from pipeline.maps.engine import CamEngine, upsample_and_normalise

logger = logging.getLogger("pipeline.faithfulness")
SALT = "sanity"  # the sanity sample's hash salt (pipeline.faithfulness.sample)


def similarities(reference_raw: Tensor, other_raw: Tensor, reference: Tensor, other: Tensor) -> dict[str, Tensor]:
    """Per image: ``spearman`` of the signed maps, ``spearman_abs`` of their absolute values (both
    ``[N, H, W]`` upsampled, before the ReLU), ``ssim`` of the normalised maps (``[N, H, W]`` in ``[0, 1]``)."""
    return {
        "spearman": spearman(reference_raw, other_raw),
        "spearman_abs": spearman(reference_raw.abs(), other_raw.abs()),
        "ssim": ssim(reference, other),
    }


def summarise(values: dict[str, Tensor]) -> dict:
    """The mean of each similarity over the images where it is defined, and the count where it is not."""
    out = {}
    for name, per_image in values.items():
        defined = ~torch.isnan(per_image)
        out[name] = float(per_image[defined].mean()) if defined.any() else float("nan")
    out["undefined"] = int(torch.isnan(values["spearman_abs"]).sum())
    return out


def other_classes(predicted: Tensor, draws: Tensor, num_classes: int) -> Tensor:
    """``[N]`` a class other than ``predicted`` (``[N]`` long) for each image, uniform over the other
    ``num_classes - 1`` classes: ``(predicted + 1 + floor(u (C - 1))) mod C`` with ``u = draws`` (``[N]``
    uniform in ``[0, 1)``, drawn once per image from the seeded generator, so chunking does not matter)."""
    shift = 1 + (draws.to(predicted.device) * (num_classes - 1)).long().clamp(max=num_classes - 2)
    return (predicted + shift) % num_classes


def make_maps(engine: CamEngine, images: Tensor, choose, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Maps for ``images`` (``[N, 3, H, W]``), ``chunk`` images per forward; ``choose(logits, rows)`` gives
    the classes ``[n, K]`` of the rows ``rows`` (a slice) from their logits. Returns ``(raw [N, K, H, W],
    normalised [N, K, H, W], targets [N, K])`` (see :func:`~pipeline.maps.engine.upsample_and_normalise`)."""
    raw, normalised, targets = [], [], []
    size = (images.shape[-2], images.shape[-1])
    for begin in range(0, images.shape[0], chunk):
        rows = slice(begin, begin + chunk)
        output, chosen = engine.forward_then(images[rows], lambda logits, rows=rows: choose(logits, rows))
        maps = upsample_and_normalise(torch.nan_to_num(output.signed_maps), size)
        raw.append(maps.raw)
        normalised.append(maps.normalised)
        targets.append(chosen)
    return torch.cat(raw), torch.cat(normalised), torch.cat(targets)


def sanity_check(
    model: nn.Module,
    target_layer: str,
    engine_like: CamEngine,
    images: Tensor,
    stage_limit: int,
    verdict_stage: int,
    max_weight_similarity: float,
    max_class_similarity: float,
    seed: int,
    chunk: int,
    stages: list[Stage] | None = None,
) -> dict:
    """The sanity check of the maps ``engine_like`` makes (its method, class score, precision and layout)
    at ``target_layer`` of ``model``, on ``images`` (``[N, 3, H, W]`` normalised, on the model's device).

    ``model`` is not changed: the randomisation works on a copy. ``stages`` overrides
    :func:`~pipeline.faithfulness.randomisation.randomisation_stages` (the tests give Quantus's modules).
    Returns the ``sanity_check`` entry of ``summary.json`` (see :func:`verdicts`).
    """
    copy = detached_copy(model).eval()
    layer = copy.get_submodule(target_layer)
    if stages is None:
        stages = randomisation_stages(copy, images[:1], stage_limit)
    head = None
    if engine_like.head_weight is not None:  # CAM: the copy's own linear head, which the stages re-initialise
        from pipeline.model.layers import find_linear_head

        head = find_linear_head(copy, engine_like.head_weight.shape[1])
    draws = torch.rand(images.shape[0], generator=torch.Generator().manual_seed(seed))

    def predicted_and_other(logits: Tensor, rows: slice) -> Tensor:
        predicted = logits.argmax(dim=1)
        return torch.stack([predicted, other_classes(predicted, draws[rows], logits.shape[1])], dim=1)

    with CamEngine(
        copy, layer, engine_like.method, engine_like.class_score, head, engine_like.autocast_dtype, engine_like.layout
    ) as engine:
        raw, normalised, targets = make_maps(engine, images, predicted_and_other, chunk)
        class_sensitivity = summarise(similarities(raw[:, 0], raw[:, 1], normalised[:, 0], normalised[:, 1]))
        per_stage = []
        for number, stage in enumerate(stages, start=1):
            randomise(copy, stage.modules, seed)  # cascading: the stages before stay randomised
            stage_raw, stage_normalised, _ = make_maps(engine, images, lambda _, rows: targets[rows, :1], chunk)
            per_stage.append(
                {
                    "stage": number,
                    **asdict(stage),
                    **summarise(similarities(raw[:, 0], stage_raw[:, 0], normalised[:, 0], stage_normalised[:, 0])),
                }
            )
    return verdicts(
        per_stage, class_sensitivity, verdict_stage, max_weight_similarity, max_class_similarity, images.shape[0]
    )


def verdicts(
    per_stage: list[dict],
    class_sensitivity: dict,
    verdict_stage: int,
    max_weight_similarity: float,
    max_class_similarity: float,
    images: int,
) -> dict:
    """The two verdicts from the per-stage and class-sensitivity similarities (see the module's docstring).

    Maps depend on the weights when both parts hold: after the first stage (the head) the mean Spearman of
    the signed maps is below ``max_weight_similarity``, and after ``verdict_stage`` stages (fewer when the
    model has fewer blocks) so is the mean Spearman of ``|map|``; ``value`` is the larger of the two. A part
    without a value (NaN: nothing to compare) fails."""
    head = per_stage[0] if per_stage else None
    judged = per_stage[min(verdict_stage, len(per_stage)) - 1] if per_stage else None
    head_value = head["spearman"] if head else float("nan")
    trunk_value = judged["spearman_abs"] if judged else float("nan")
    weight_value = max(head_value, trunk_value) if head else float("nan")
    on_weights = bool(head_value < max_weight_similarity and trunk_value < max_weight_similarity)
    class_value = class_sensitivity["spearman"]
    on_class = bool(class_value < max_class_similarity)
    after = [s["name"] for s in per_stage[: judged["stage"]]] if judged else []
    return {
        "images": images,
        "stages": per_stage,
        "class_sensitivity": class_sensitivity,
        "maps_depend_on_weights": {
            "passed": on_weights,
            "value": weight_value,
            "threshold": max_weight_similarity,
            "head": {"stage": head["name"] if head else None, "spearman": head_value},
            "trunk": {"after_stages": after, "spearman_abs": trunk_value},
            "after_stages": after,
            "rule": f"the mean Spearman rank correlation with the original maps is below {max_weight_similarity:g} "
            f"for the signed map after randomising the head ({head['name'] if head else 'none'}) and for |map| "
            f"after randomising {', '.join(after) or 'nothing'}",
        },
        "maps_depend_on_class": {
            "passed": on_class,
            "value": class_value,
            "threshold": max_class_similarity,
            "rule": f"the mean Spearman rank correlation between the signed maps of the predicted class and of a random "
            f"other class is below {max_class_similarity:g}",
        },
        "passed": on_weights and on_class,
    }


def run_sanity_check(setup, max_boxes: int | None) -> dict | None:
    """The sanity check of a run (``setup``: a :class:`~pipeline.setup.AuditSetup`; its ``settings.sanity``)
    on ``sanity.sample`` images chosen by the hash of their id among the run's usable records, decoded
    again with the run's preprocessing. ``None`` when ``sanity.sample`` is 0; the entry's ``seconds`` is
    its cost (loading included)."""
    options = setup.settings.sanity
    if options.sample <= 0:
        return None
    started = time.perf_counter()
    usable = [r for r in setup.records if not r.problem]
    chosen = hash_sample((r.sample_id for r in usable), options.sample, SALT)
    records = [r for r in usable if r.sample_id in chosen]
    chunk = batch_size_of(setup)
    images, ids = load_inputs(setup, records, max_boxes, chunk)
    if not ids:
        return {"images": 0, "passed": None, "seconds": round(time.perf_counter() - started, 2), "ids": []}
    result = sanity_check(
        setup.model.module,
        setup.target_layer,
        setup.engine,
        images,
        options.stages,
        options.verdict_stage,
        options.max_weight_similarity,
        options.max_class_similarity,
        options.seed,
        chunk,
    )
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["seed"] = options.seed
    result["ids"] = ids
    logger.info(
        "sanity check: %s in %.1fs (weights %s, class %s)",
        "passed" if result["passed"] else "FAILED",
        result["seconds"],
        result["maps_depend_on_weights"]["value"],
        result["maps_depend_on_class"]["value"],
    )
    return result


def batch_size_of(setup) -> int:
    """Images per forward: ``runtime.batch_size`` (32 when it is ``auto``)."""
    size = setup.settings.runtime.batch_size
    return int(size) if str(size) != "auto" else 32
