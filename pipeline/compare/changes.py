"""What changed image by image and class by class on the images both runs scored (descriptive: no test)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def sample_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per image in both runs (inner join on ``id``): prediction, correctness and true-class map changes."""
    columns = [
        "id",
        "label",
        "label_name",
        "pred",
        "pred_name",
        "correct",
        "true_energy_in_box",
        "true_energy_lift",
        "true_peak_row",
        "true_peak_col",
    ]
    joined = before[columns].merge(after[columns], on="id", suffixes=("_baseline", "_current"), validate="one_to_one")
    change = np.where(
        ~joined["correct_baseline"] & joined["correct_current"],
        "fixed",
        np.where(joined["correct_baseline"] & ~joined["correct_current"], "broke", "same"),
    )
    out = pd.DataFrame(
        {
            "id": joined["id"],
            "label": joined["label_baseline"],
            "label_name": joined["label_name_baseline"],
            "pred_baseline": joined["pred_name_baseline"],
            "pred_current": joined["pred_name_current"],
            "change": change,
            "true_energy_in_box_baseline": joined["true_energy_in_box_baseline"],
            "true_energy_in_box_current": joined["true_energy_in_box_current"],
            "true_energy_in_box_delta": joined["true_energy_in_box_current"] - joined["true_energy_in_box_baseline"],
            "true_energy_lift_delta": joined["true_energy_lift_current"] - joined["true_energy_lift_baseline"],
            "true_peak_shift_px": np.hypot(
                joined["true_peak_row_current"] - joined["true_peak_row_baseline"],
                joined["true_peak_col_current"] - joined["true_peak_col_baseline"],
            ),
        }
    )
    return out.sort_values("id").reset_index(drop=True)


SIDES = ("baseline", "current")
COLUMN_KINDS = ("baseline", "current", "delta")


def _numeric(values: pd.Series) -> np.ndarray:
    """A column as float64 with NaN for null (booleans as 0 / 1)."""
    return pd.to_numeric(values.astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def class_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Per true class over the common images (both frames sorted by id, the same ids): accuracy and mean
    true-class lift before and after, each over the images where the value is defined in both runs (an image
    without a prediction in one run is left out of both), so that the delta is the paired difference that the
    per-class tests (:func:`pipeline.compare.significance.class_tests`) test and the same number as theirs."""
    frame = pd.DataFrame(
        {"label": before["label"].to_numpy(), "label_name": before["label_name"].to_numpy(), "id": before["id"]}
    )
    for column, name in (("correct", "accuracy"), ("true_energy_lift", "true_energy_lift")):
        x, y = _numeric(before[column]), _numeric(after[column])
        both = ~np.isnan(x) & ~np.isnan(y)
        frame[f"{name}_baseline"], frame[f"{name}_current"] = np.where(both, x, np.nan), np.where(both, y, np.nan)
    table = frame.groupby(["label", "label_name"]).agg(
        count=("id", "size"),
        **{f"{n}_{side}": (f"{n}_{side}", "mean") for n in ("accuracy", "true_energy_lift") for side in SIDES},
    )
    table = table.reset_index()
    for name in ("accuracy", "true_energy_lift"):
        table[f"{name}_delta"] = table[f"{name}_current"] - table[f"{name}_baseline"]
    order = ["label", "label_name", "count"] + [
        f"{n}_{c}" for n in ("accuracy", "true_energy_lift") for c in COLUMN_KINDS
    ]
    return table[order].sort_values(["accuracy_delta", "true_energy_lift_delta", "label"]).reset_index(drop=True)
