"""The drop gates (``--max-drop``, ``--max-class-drop``) and the verdict.

A drop gate trips when the metric fell by more than its threshold **and** the fall is significant (two-sided,
level ``alpha``); per class the same with Holm's adjusted p over the classes of at least ``min_class_images``
images, so that a class of three images never raises an alarm. A gate on a metric that cannot be computed for
both runs is refused (:class:`~pipeline.errors.ConfigError`), never "passed".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.compare.significance import compared_metrics
from pipeline.errors import ConfigError
from pipeline.scores.aggregates import gate_metrics


def parse_max_drops(entries: list[str]) -> dict[str, float]:
    """``["accuracy=0.01", ...]`` -> ``{"accuracy": 0.01}``; ValueError naming a bad entry or metric."""
    out: dict[str, float] = {}
    names = list(gate_metrics())
    for entry in entries or []:
        name, sep, value = entry.partition("=")
        if not sep or name not in names:
            raise ValueError(f"--max-drop {entry!r}: use METRIC=VALUE with METRIC one of {', '.join(names)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--max-drop {entry!r}: {value!r} is not a number") from None
        if not out[name] >= 0:
            raise ValueError(f"--max-drop {entry!r}: the allowed drop must be >= 0")
    return out


def check_gated_metrics(
    before: pd.DataFrame,
    after: pd.DataFrame,
    tau: str,
    tests: dict,
    max_drops: dict[str, float],
    max_class_drops: dict[str, float],
    baseline_dir: Path,
    current_dir: Path,
) -> None:
    """Every gated metric must be computable on both runs: a column that one run lacks (another version, a
    score switched off) or that no common image defines in both would make its gate print "drop +nan ...
    passed". Raises :class:`~pipeline.errors.ConfigError` naming the option and the run instead."""
    columns = {name: template.format(tau=tau) for name, (template, _) in compared_metrics().items()}
    for option, gated in (("--max-drop", max_drops), ("--max-class-drop", max_class_drops)):
        for metric in gated:
            column = columns[metric]
            lacking = [str(d) for d, frame in ((baseline_dir, before), (current_dir, after)) if column not in frame]
            if lacking:
                raise ConfigError(
                    option,
                    f"{metric}: {' and '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no column "
                    f"{column!r}: this gate cannot be evaluated; drop it, or compare runs that both have it",
                )
            if option == "--max-drop" and tests.get(metric, {}).get("n", 0) == 0:
                raise ConfigError(
                    option,
                    f"{metric}: no common image has {column!r} defined in both runs: this gate cannot be evaluated",
                )


def drop_of(metric: str, delta: float) -> float:
    """How much worse ``metric`` got: ``-delta`` when higher is better (the registry's ``better``), ``delta``
    when lower is."""
    return (delta if gate_metrics()[metric].aggregate.better == "lower" else -delta) + 0.0  # no "-0.0000"


def overall_gate(metric: str, allowed: float, test: dict | None) -> dict:
    """One ``--max-drop`` gate: tripped when the drop (:func:`drop_of`) is beyond ``allowed`` and the test
    significant."""
    if test is None:
        return {
            "metric": metric,
            "scope": "overall",
            "max_drop": allowed,
            "tripped": False,
            "reason": "not in both runs",
        }
    drop = drop_of(metric, test["delta"])
    return {
        "metric": metric,
        "scope": "overall",
        "max_drop": allowed,
        "drop": drop,
        "significant": test["significant"],
        **({"p": test["p"]} if "p" in test else {"low": test["low"], "high": test["high"]}),
        "tripped": bool(drop > allowed and test["significant"] and drop > 0),
    }


def class_gates(metric: str, allowed: float, eligible: pd.DataFrame, alpha: float) -> list[dict]:
    """One ``--max-class-drop`` gate: an entry per class whose drop is beyond ``allowed`` with Holm's adjusted p
    below ``alpha`` (column ``{metric}_p_holm``), then one summary entry (scope ``per class``)."""
    gates = []
    for _, row in eligible.iterrows():
        drop, p, p_holm = drop_of(metric, row[f"{metric}_delta"]), row[f"{metric}_p"], row[f"{metric}_p_holm"]
        if drop > allowed and p_holm < alpha:
            gates.append(
                {
                    "metric": metric,
                    "scope": f"class {row['label_name']}",
                    "max_drop": allowed,
                    "drop": float(drop),
                    "p": float(p),
                    "p_holm": float(p_holm),
                    "alpha": alpha,
                    "count": int(row["count"]),
                    "tripped": True,
                }
            )
    summary = {
        "metric": metric,
        "scope": "per class",
        "max_drop": allowed,
        "alpha": alpha,
        "correction": "holm",
        "classes_tested": len(eligible),
        "classes_tripped": len(gates),
        "tripped": len(gates) > 0,
    }
    return gates + [summary]


def evaluate_gates(
    tests: dict,
    per_class: pd.DataFrame,
    max_drops: dict[str, float],
    max_class_drops: dict[str, float],
    alpha: float,
    min_class_images: int,
) -> list[dict]:
    """One entry per gate: tripped when the drop is beyond the threshold and significant (two-sided, ``alpha``;
    per class: Holm's adjusted p below ``alpha`` over the classes with ``min_class_images`` images (column
    ``{metric}_p_holm``, :func:`~pipeline.compare.significance.add_holm`), one entry per class that tripped and
    one summary entry per metric)."""
    gates = [overall_gate(metric, allowed, tests.get(metric)) for metric, allowed in max_drops.items()]
    eligible = per_class[per_class["count"] >= min_class_images] if len(per_class) else per_class
    for metric, allowed in max_class_drops.items():
        gates += class_gates(metric, allowed, eligible, alpha)
    return gates


def describe_gate(gate: dict) -> str:
    """One tripped gate as a few words with its numbers (for the verdict line)."""
    if gate["scope"] == "coverage":
        side = ">" if gate["metric"].startswith("max_") else "<"
        return f"{gate['metric']} {gate['value']:.4f} {side} {gate['threshold']}"
    where = "" if gate["scope"] == "overall" else f" {gate['scope']}"
    p = f", Holm p {gate['p_holm']:.3g}" if "p_holm" in gate else (f", p {gate['p']:.3g}" if "p" in gate else "")
    return f"{gate['metric']}{where} drop {gate.get('drop', float('nan')):.4f} > {gate['max_drop']}{p}"


def verdict(gates: list[dict]) -> tuple[str, list[dict]]:
    """``("fail", tripped)`` when any gate tripped (the per-class summary entries left out of the list: each
    class that tripped has its own entry), else ``("pass", [])``."""
    tripped = [g for g in gates if g["tripped"] and g["scope"] != "per class"]
    return ("fail" if tripped else "pass"), tripped


def verdict_line(result: dict) -> str:
    """``verdict: pass`` or ``verdict: FAIL (<gate and numbers>; ...)``, naming the two runs."""
    names = f"{Path(result['baseline']).name} -> {Path(result['current']).name}"
    if result["verdict"] == "pass":
        return f"verdict: pass ({names}: every gate passed)"
    return f"verdict: FAIL ({names}: " + "; ".join(describe_gate(g) for g in result["tripped"]) + ")"
