"""Which definition choices differ between two runs: score deltas then mix the model's change with the
definition's, so the report says them first."""

from __future__ import annotations

# Definition choices that do not change what the numbers mean (where a value came from, not the value).
IGNORED_CHOICES = ("preprocess.sources", "preprocess.model_metadata_from")
# Definition texts reworded without a change of meaning: choice -> {old wording: new wording}. A run written
# before the rewording must not show "DEFINITIONS CHANGED" against every later night (a pinned reference).
REWORDED = {
    "empty_map": {
        "constant after ReLU: peak-based scores NaN": "constant after ReLU: peak-based scores null (no peak), "
        "counted in empty_maps",  # issue 20.6: the tables write null, not NaN
    },
}


def _flatten(choices: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in choices.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def definition_differences(baseline: dict, current: dict) -> list[dict]:
    """``[{choice, baseline, current}]`` for every definition choice that differs (a text only reworded,
    :data:`REWORDED`, does not)."""
    before, after = _flatten(baseline), _flatten(current)
    for choices in (before, after):
        for key, wordings in REWORDED.items():
            if isinstance(choices.get(key), str):
                choices[key] = wordings.get(choices[key], choices[key])
    return [
        {"choice": key, "baseline": before.get(key), "current": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and not key.startswith(IGNORED_CHOICES)
    ]


def grids_differ(differences: list[dict]) -> bool:
    """Whether the two runs scored on different pixel grids (another coordinate space or preprocessing)."""
    return any(d["choice"].startswith(("coordinate_space", "preprocess.")) for d in differences)
