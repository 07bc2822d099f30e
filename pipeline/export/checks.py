"""What an export needs before any work, checked with nothing heavy imported (the command's one-line refusals)."""

from __future__ import annotations

from pathlib import Path


class ExportError(Exception):
    """The run cannot be exported as asked (not a finished run, no saved maps...): one line for the user."""


def check_run_folder(run_dir: Path) -> None:
    """:class:`ExportError` unless ``run_dir`` is a finished audit with its saved maps."""
    run_dir = Path(run_dir)
    if not (run_dir / "samples.parquet").is_file():
        raise ExportError(f"{run_dir} is not a finished audit (no samples.parquet)")
    if not (run_dir / "maps.parquet").is_file():
        raise ExportError(
            f"{run_dir} has no maps.parquet: the heatmaps need the saved maps; audit with cam.save_maps=true "
            "(a finished run: run it again with cam.save_maps=true)"
        )


def import_fiftyone():
    """``fiftyone``, or :class:`ExportError` saying how to install the extra."""
    try:
        import fiftyone
    except ImportError as error:
        raise ExportError(
            f"FiftyOne is not installed ({error}); install the extra: pip install -e '.[fiftyone]' "
            "(in this project: bash scripts/setup_fiftyone.sh)"
        ) from error
    return fiftyone
