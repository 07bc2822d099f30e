"""The failure budget: how many samples may fail before a run stops (``runtime.max_error_fraction``).

During the run (:class:`FailureBudget`) the share of failed samples and of images whose outputs were not
finite is checked from ``runtime.min_samples_for_error_check`` samples on; at the end
(:func:`check_failure_budget`) it is checked over the whole run whatever the count, resumed invocations
included, and a run that audited no sample at all stops too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import TooManyFailures
from pipeline.reports.parts import list_parts, read_column


@dataclass
class FailureBudget:
    """The running count of samples that failed (decode, annotation, index problems) or gave non-finite
    outputs, against ``max_fraction`` of the samples seen (from ``min_samples`` on)."""

    max_fraction: float
    min_samples: int
    parts_dir: Path
    failed: int = 0
    non_finite: list[int] = field(default_factory=list)  # per written batch; appended on the writer thread

    def exceeded(self, seen: int) -> bool:
        return seen >= self.min_samples and self.failed + sum(self.non_finite) > self.max_fraction * seen

    def stop(self, seen: int) -> TooManyFailures:
        """The error that stops the run (rows written so far are kept)."""
        return TooManyFailures(
            too_many_message(self.failed, sum(self.non_finite), seen, self.max_fraction, self.parts_dir)
        )


def too_many_message(n_failed: int, n_non_finite: int, seen: int, max_fraction: float, parts_dir: Path) -> str:
    """Why the run stopped: failed samples, and images whose model outputs were not finite."""
    non_finite = (
        f" and {n_non_finite} gave non-finite logits or maps (NaN/inf: diverged weights? fp16 overflow?)"
        if n_non_finite
        else ""
    )
    return (
        f"{n_failed} of {seen} samples failed{non_finite}, more than runtime.max_error_fraction={max_fraction}; "
        f"see {parts_dir}/errors-*.parquet. Rows written so far are kept (resume=true continues)."
    )


def check_failure_budget(parts_dir: Path, max_fraction: float) -> None:
    """The failure budget over the whole run, once every part is written (resumed invocations' rows included)
    and whatever the sample count: during the run it is checked only from ``runtime.min_samples_for_error_check``
    samples on, so a small set whose images all failed finished as "Audit of 0 images ... 24 skipped", exit 0.
    Raises :class:`TooManyFailures` (exit 3) when no sample was audited at all, or when more than
    ``max_fraction`` of the samples failed (errors other than ``overlay``, and non-finite outputs)."""
    stages = read_column(list_parts(parts_dir, "errors"), "stage")
    failed = [stage for stage in stages if stage != "overlay"]  # an overlay error's sample is scored
    non_finite = read_column(list_parts(parts_dir, "samples"), "non_finite_output")
    total = len(failed) + len(non_finite)
    if total and not non_finite:
        by_stage = ", ".join(f"{stage} {failed.count(stage)}" for stage in sorted(set(failed)))
        raise TooManyFailures(
            f"none of the {total} samples could be audited (failed at {by_stage}); see {parts_dir}/errors-*.parquet: "
            "the data (or data.classes, data.preprocess) is probably wrong"
        )
    n_non_finite = sum(1 for flag in non_finite if flag)
    bad = len(failed) + n_non_finite
    if bad and bad > max_fraction * total:
        also = f" and {n_non_finite} gave non-finite logits or maps (NaN/inf)" if n_non_finite else ""
        raise TooManyFailures(
            f"{len(failed)} of {total} samples failed{also}, more than runtime.max_error_fraction={max_fraction} "
            f"of the whole run (checked at its end, whatever the count); see {parts_dir}/errors-*.parquet. The rows "
            "are kept: to write the report anyway, run again with resume=true and a larger runtime.max_error_fraction"
        )
