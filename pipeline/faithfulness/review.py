"""What the review page shows of faithfulness and the sanity check (``review.html``: a section, and a warning
before everything else when the sanity check failed). :func:`review_context` gives the template's values, all
as text already formatted (``n/a`` for a missing number)."""

from __future__ import annotations

import math

from pipeline.faithfulness.summary import sanity_failures


def _text(value, percent: bool = False, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.{digits}f}"


def review_context(summary: dict) -> dict:
    """``sanity_failures`` (phrases; empty when it passed or did not run), ``faithfulness_rows`` (one row per
    map: images, average drop, increase in confidence), ``causal`` (deletion / insertion or None) and
    ``sanity`` (verdicts, per-stage rows, class sensitivity, cost; or None)."""
    faith = summary.get("faithfulness") or {}
    rows = []
    for name, about in (("pred", "predicted class"), ("true", "true class")):
        entry = (faith.get("confidence") or {}).get(name)
        if entry:
            rows.append(
                {
                    "map": about,
                    "images": str(entry["images"]),
                    "drop": _text(entry["average_drop"]),
                    "increase": _text(entry["increase_in_confidence"], True),
                }
            )
    causal = faith.get("deletion_insertion")
    causal_context = None
    if causal:
        causal_context = {
            "images": str(causal["images"]),
            "steps": str(causal["steps"]),
            "deletion": _text(causal["deletion_auc"]),
            "insertion": _text(causal["insertion_auc"]),
            "above": _text(causal["insertion_above_deletion"], True),
        }
    check = summary.get("sanity_check")
    sanity = None
    if check and check.get("images"):
        weights, classes = check["maps_depend_on_weights"], check["maps_depend_on_class"]
        sanity = {
            "images": str(check["images"]),
            "seconds": f"{check['seconds']:.1f}",
            "weights": "yes" if weights["passed"] else "NO",
            "weights_rule": weights["rule"],
            "classes": "yes" if classes["passed"] else "NO",
            "classes_rule": classes["rule"],
            "stages": [
                {
                    "stage": str(s["stage"]),
                    "name": s["name"],
                    "modules": str(len(s["modules"])),
                    "kept": ", ".join(s["kept"]),
                    "spearman": _text(s["spearman"]),
                    "spearman_abs": _text(s["spearman_abs"]),
                    "ssim": _text(s["ssim"]),
                }
                for s in check["stages"]
            ],
            "class_row": {
                "spearman": _text(check["class_sensitivity"]["spearman"]),
                "spearman_abs": _text(check["class_sensitivity"]["spearman_abs"]),
                "ssim": _text(check["class_sensitivity"]["ssim"]),
            },
        }
    return {
        "sanity_failures": sanity_failures(check),
        "faithfulness_rows": rows,
        "causal": causal_context,
        "sanity": sanity,
    }
