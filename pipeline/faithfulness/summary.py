"""The report side of faithfulness and the sanity check: ``summary.json`` → ``faithfulness`` and
``sanity_check``, the per-class columns of ``classes.parquet``, the definitions in the report metadata and the
lines of the printed summary (:mod:`pipeline.reports.finalize` calls each once)."""

from __future__ import annotations

import math

import pandas as pd

# classes.parquet: per true class, from the samples' faithfulness columns (pipeline.faithfulness.columns)
CLASS_COLUMNS = {
    "pred_average_drop": (
        "pred_confidence_drop",
        "mean",
        "average drop of the predicted-class maps (mean of max(0, Y - O) / Y; lower = more faithful)",
    ),
    "pred_increase_in_confidence": (
        "pred_confidence_increase",
        "mean",
        "increase in confidence of the predicted-class maps (share of images with O > Y)",
    ),
    "true_average_drop": ("true_confidence_drop", "mean", "average drop of the true-class maps"),
    "true_increase_in_confidence": (
        "true_confidence_increase",
        "mean",
        "increase in confidence of the true-class maps",
    ),
    "pred_deletion_auc": (
        "pred_deletion_auc",
        "mean",
        "mean deletion AUC of the predicted-class maps over the class's images in the faithfulness sample (lower = more faithful)",
    ),
    "pred_insertion_auc": (
        "pred_insertion_auc",
        "mean",
        "mean insertion AUC of the predicted-class maps over the class's images in the faithfulness sample (higher = more faithful)",
    ),
    "faithfulness_sample_images": (
        "pred_deletion_auc",
        "count",
        "the class's images with a deletion / insertion AUC (faithfulness.sample)",
    ),
}
CLASS_DESCRIPTIONS = {name: text for name, (_, _, text) in CLASS_COLUMNS.items()}


def _values(frame: pd.DataFrame, column: str) -> pd.Series:
    """The defined values of a column as floats (nullable booleans as 0 / 1), empty when it is absent."""
    if column not in frame.columns:
        return pd.Series([], dtype=float)
    return frame[column].dropna().astype(float)


def _mean(frame: pd.DataFrame, column: str) -> float:
    values = _values(frame, column)
    return float(values.mean()) if len(values) else float("nan")


def with_class_faithfulness(classes: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``classes`` (one row per true class, ``label``) with the :data:`CLASS_COLUMNS` the samples have."""
    if not len(classes):
        return classes
    rows = {}
    for label, group in frame.groupby("label", sort=True):
        rows[int(label)] = {
            name: (_mean(group, source) if how == "mean" else int(len(_values(group, source))))
            for name, (source, how, _) in CLASS_COLUMNS.items()
            if source in frame.columns
        }
    added = pd.DataFrame.from_dict(rows, orient="index")
    if added.empty:
        return classes
    return classes.merge(added, left_on="label", right_index=True, how="left")


def faithfulness_summary(frame: pd.DataFrame, settings) -> dict | None:
    """``summary.json`` → ``faithfulness``: per run (``confidence`` of the predicted- and true-class maps on
    every image, ``deletion_insertion`` on the sample) and ``per_class`` (per true class); None when both
    parts are off (``settings``: ``faithfulness``)."""
    if not settings.confidence and settings.sample <= 0:
        return None
    out: dict = {"confidence": None, "deletion_insertion": None}
    if settings.confidence:
        out["confidence"] = {
            name: {
                "images": int(len(_values(frame, f"{name}_confidence_drop"))),
                "average_drop": _mean(frame, f"{name}_confidence_drop"),
                "increase_in_confidence": _mean(frame, f"{name}_confidence_increase"),
                "mean_masked_prob": _mean(frame, f"{name}_masked_prob"),
            }
            for name in ("pred", "true")
        }
    if settings.sample > 0:
        both = (
            frame[["pred_deletion_auc", "pred_insertion_auc"]].dropna().astype(float)
            if "pred_deletion_auc" in frame.columns
            else pd.DataFrame(columns=["pred_deletion_auc", "pred_insertion_auc"], dtype=float)
        )
        out["deletion_insertion"] = {
            "images": int(len(both)),
            "sample": int(settings.sample),
            "steps": int(settings.steps),
            "deletion_auc": float(both["pred_deletion_auc"].mean()) if len(both) else float("nan"),
            "insertion_auc": float(both["pred_insertion_auc"].mean()) if len(both) else float("nan"),
            "insertion_above_deletion": float((both["pred_insertion_auc"] > both["pred_deletion_auc"]).mean())
            if len(both)
            else float("nan"),
        }
    classes = with_class_faithfulness(
        frame.groupby(["label", "label_name"], sort=True).size().rename("images").reset_index(), frame
    )
    out["per_class"] = [
        {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}
        for row in classes.to_dict("records")
    ]
    return out


def definition_entries(settings) -> dict:
    """The protocol of both checks for the report metadata (``cam_audit.definitions``) and
    ``summary.json`` → ``definitions`` (``settings``: the run's :class:`~pipeline.settings.Settings`)."""
    faith, sanity = settings.faithfulness, settings.sanity
    return {
        "faithfulness_confidence": (
            "average drop = mean over images of max(0, Y - O) / Y, increase in confidence = share of images with O > Y "
            "(Grad-CAM++ paper, sec. 5.1); Y, O = softmax probability of the map's class on x and on x * E, x the "
            "normalised network input, E the map at the input's resolution min-max normalised to [0, 1] (an empty map "
            "is all 0); the predicted- and true-class maps, one extra forward per distinct map, a right prediction's "
            "true-class values copied from its predicted-class map; no constant in the denominator (null when Y = 0)"
            if faith.confidence
            else "off"
        ),
        "faithfulness_deletion_insertion": (
            f"RISE CausalMetric (Petsiuk et al. 2018) on the predicted-class map: the predicted class's softmax "
            f"probability; pixels in descending order of the map, ties in raster order; step = ceil(H W / {faith.steps}) "
            f"pixels, n = ceil(H W / step) steps, n + 1 scores; deletion sets pixels to 0 in normalised space (the mean "
            f"colour), insertion starts from the input blurred with RISE's gkern({faith.blur_kernel}, {faith.blur_sigma:g}) "
            f"(scipy gaussian_filter of a centred delta, reflect mode; zero-padded convolution) and puts the pixels back; "
            f"AUC = (sum s - s_0 / 2 - s_n / 2) / n; on the {faith.sample} usable images with the smallest "
            f"SHA-256('faithfulness' + NUL + id) (uniform over the dataset, the same on a resume; all when fewer); "
            f"null outside the sample and for an empty map; always on the network input (scores.space does not apply)"
            if faith.sample > 0
            else "off"
        ),
        "sanity_check": (
            f"after the run, on the {sanity.sample} usable images with the smallest SHA-256('sanity' + NUL + id): "
            f"(1) cascading model-parameter randomisation (Adebayo et al. 2018; Quantus MPRT, top_down) on a copy of the "
            f"model, up to {sanity.stages} stages: the model's blocks from the output down (the classifier head first), "
            f"each module re-initialised by its reset_parameters() after torch.manual_seed({sanity.seed} + 1) (modules "
            f"without one keep their weights); after each stage the maps of the original prediction are compared with "
            f"the original maps: Spearman rank correlation of the signed upsampled map and of its absolute value, SSIM "
            f"(7 x 7 uniform window, K1 0.01, K2 0.03, data range 1) of the normalised maps; (2) class sensitivity "
            f"(Sixt et al. 2020; Quantus RandomLogit): the same similarities between the predicted class's map and the "
            f"map of a random other class (seed {sanity.seed}); verdicts: maps depend on the weights when the mean "
            f"Spearman of the signed map after stage 1 (the head) and of |map| after {sanity.verdict_stage} stages are "
            f"both below {sanity.max_weight_similarity:g}, on the class when the mean signed Spearman is below "
            f"{sanity.max_class_similarity:g}; undefined correlations (a constant map) left out and counted; "
            f"pass / fail, not a ranking"
            if sanity.sample > 0
            else "off"
        ),
    }


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _percent(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def sanity_failures(check: dict | None) -> list[str]:
    """What failed in the sanity check, one phrase each (empty when it passed or did not run)."""
    if not check or check.get("passed") is not False:
        return []
    failures = []
    weights, classes = check["maps_depend_on_weights"], check["maps_depend_on_class"]
    if not weights["passed"]:
        failures.append(
            f"the maps do not depend on the model's weights (mean Spearman with the original maps: signed "
            f"{_number(weights['head']['spearman'], 2)} after randomising {weights['head']['stage']}, |map| "
            f"{_number(weights['trunk']['spearman_abs'], 2)} after {', '.join(weights['after_stages']) or 'nothing'}; "
            f"both must be below {weights['threshold']:g})"
        )
    if not classes["passed"]:
        failures.append(
            f"the maps do not depend on the class (mean Spearman between the predicted class's map and another "
            f"class's {_number(classes['value'], 2)}; threshold {classes['threshold']:g})"
        )
    return failures


def summary_lines(summary: dict) -> tuple[list[str], list[str]]:
    """``(first, more)``: a warning to print before everything else when the sanity check failed, and the
    faithfulness and sanity lines of the printed summary."""
    check = summary.get("sanity_check")
    failures = sanity_failures(check)
    first = [f"WARNING: sanity check failed: {'; '.join(failures)}: these maps cannot be trusted"] if failures else []
    more = []
    faith = summary.get("faithfulness") or {}
    confidence = faith.get("confidence")
    if confidence:
        pred = confidence["pred"]
        more.append(
            f"  faithfulness: predicted-class maps: average drop {_number(pred['average_drop'])} (lower is better), "
            f"increase in confidence {_percent(pred['increase_in_confidence'])}"
        )
    causal = faith.get("deletion_insertion")
    if causal:
        relation = "<" if causal["deletion_auc"] < causal["insertion_auc"] else ">="
        more.append(
            f"  deletion AUC {_number(causal['deletion_auc'])} {relation} insertion AUC {_number(causal['insertion_auc'])} "
            f"on {causal['images']} images ({causal['steps']} steps; insertion above deletion for "
            f"{_percent(causal['insertion_above_deletion'])})"
        )
    if check and check.get("images"):
        weights, classes = check["maps_depend_on_weights"], check["maps_depend_on_class"]
        more.append(
            f"  sanity check ({check['images']} images, {check['seconds']:.1f}s): maps depend on the weights: "
            f"{'yes' if weights['passed'] else 'NO'} (Spearman {_number(weights['head']['spearman'], 2)} after "
            f"randomising {weights['head']['stage']}, |map| {_number(weights['trunk']['spearman_abs'], 2)} after "
            f"{', '.join(weights['after_stages'])}; below {weights['threshold']:g}); on the class: "
            f"{'yes' if classes['passed'] else 'NO'} (Spearman {_number(classes['value'], 2)}, below "
            f"{classes['threshold']:g})"
        )
    return first, more
