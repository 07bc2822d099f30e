"""Reading an audit's rows back, for the data tests that check what one bad entry becomes."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd


def audit_rows(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(samples, errors)`` of a finished run, each indexed by ``id`` (the column kept)."""
    samples = pd.read_parquet(run_dir / "samples.parquet").set_index("id", drop=False)
    errors = pd.read_parquet(run_dir / "errors.parquet").set_index("id", drop=False)
    return samples, errors


def error_row(errors: pd.DataFrame, sample_id: str) -> pd.Series:
    """The ``errors.parquet`` row of ``sample_id`` (a failed assertion listing the ids when there is none)."""
    assert sample_id in errors.index, (sample_id, errors.index.tolist())
    return errors.loc[sample_id]


class CapturedWarnings(logging.Handler):
    """The warnings a logger emits while attached (``with CapturedWarnings("pipeline.data.sources") as w``)."""

    def __init__(self, logger_name: str):
        super().__init__(logging.WARNING)
        self.logger = logging.getLogger(logger_name)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> CapturedWarnings:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
