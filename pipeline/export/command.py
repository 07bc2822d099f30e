"""``cam-audit export fiftyone RUN``: a finished audit as a FiftyOne dataset (the ``fiftyone`` extra).

Exit statuses (:class:`pipeline.errors.ExitCode`): 0 exported; 2 a usage error or a run that cannot be
exported (not a finished audit, no ``maps.parquet``: audit with ``cam.save_maps=true``; its dataset
unreadable; FiftyOne not installed; the dataset name taken by another run), one line on stderr; 4 the disk
is full.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.errors import ExitCode, is_disk_full, one_line
from pipeline.export.checks import ExportError, check_run_folder, import_fiftyone

DEFAULT_MAX_SIDE = 256  # pipeline.export.heatmaps.DEFAULT_MAX_SIDE (not imported: it needs torch)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cam-audit export", description="Hand a finished audit to the tools reviewers already use."
    )
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    fiftyone = formats.add_parser(
        "fiftyone",
        help="a FiftyOne dataset: one sample per audited image (needs the fiftyone extra and cam.save_maps=true)",
        description="A FiftyOne dataset with one sample per audited image: ground truth and its boxes, the "
        "prediction, the predicted- and true-class maps as heatmaps, the thresholded-map boxes, every score, "
        "hardness, mistakenness, triage, strategy cluster and shortcut flags. Exporting the same run again "
        "updates its samples (keyed by the sample id).",
    )
    fiftyone.add_argument("run", type=Path, help="run folder of a finished audit made with cam.save_maps=true")
    fiftyone.add_argument("--name", default=None, help="dataset name (default: cam-audit-<parent>-<run folder>)")
    fiftyone.add_argument(
        "--heatmap-dir",
        type=Path,
        default=None,
        help="where the heatmap PNG files go (default: RUN/fiftyone/heatmaps); the dataset points at them",
    )
    fiftyone.add_argument("--batch-size", type=positive_int, default=256, help="samples per batch (default 256)")
    fiftyone.add_argument(
        "--max-side",
        type=positive_int,
        default=DEFAULT_MAX_SIDE,
        help=f"longer side of a heatmap file in pixels (default {DEFAULT_MAX_SIDE})",
    )
    fiftyone.add_argument("--overwrite", action="store_true", help="delete a dataset of that name first")
    fiftyone.add_argument(
        "--no-persistent", action="store_true", help="a dataset FiftyOne deletes when its database shuts down"
    )
    fiftyone.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def export_main(argv: list[str] | None = None) -> int:
    """``cam-audit export ...``; returns the exit status."""
    args = export_parser().parse_args(argv)  # a usage error exits 2 (argparse)
    started = time.perf_counter()
    try:
        check_run_folder(args.run)  # first, and before the heavy imports: refused without FiftyOne too
        import_fiftyone()
        from pipeline.export.samples import load_annotations, open_run
        from pipeline.export.to_fiftyone import export_run

        run = open_run(args.run)
        run.records = load_annotations(run)
        result = export_run(
            run,
            name=args.name,
            heatmap_dir=args.heatmap_dir,
            batch_size=args.batch_size,
            max_side=args.max_side,
            overwrite=args.overwrite,
            persistent=not args.no_persistent,
            progress=not args.no_progress,
        )
    except ExportError as error:
        print(f"cam-audit export: {one_line(str(error))}", file=sys.stderr)
        return ExitCode.CONFIG
    except OSError as error:
        if not is_disk_full(error):
            raise
        print(
            f"cam-audit export: the disk is full ({one_line(str(error))}); free space and export again", file=sys.stderr
        )
        return ExitCode.DISK_FULL
    seconds = time.perf_counter() - started
    print(
        f"cam-audit export: {result['samples']} samples in the FiftyOne dataset {result['dataset']!r} "
        f"({result['added']} added, {result['updated']} updated, {result['removed']} removed) in {seconds:.1f} s; "
        f"heatmaps in {result['heatmaps']}"
    )
    print(
        f"  open it: python -c \"import fiftyone as fo; fo.launch_app(fo.load_dataset('{result['dataset']}')).wait()\""
    )
    return ExitCode.OK
