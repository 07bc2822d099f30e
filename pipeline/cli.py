"""Command line: ``python -m pipeline [hydra overrides]`` or ``cam-audit [overrides]``, the audit, a Hydra
application (:mod:`pipeline.hydra_app`); ``cam-audit compare ...`` (or ``cam-audit-compare``) compares two finished
audits (:mod:`pipeline.compare`); ``cam-audit merge RUN`` writes the report of a sharded run
(:mod:`pipeline.merge`).

Exit statuses (:class:`pipeline.errors.ExitCode`, the README's table): 0 done; 2 a configuration error (ours
or Hydra's own, e.g. an unknown key or option), one line naming the option, before any work (``runtime.debug=true``
shows the traceback); 3 the run stopped on too many failed samples; 4 on a full disk (both resumable); 5 an
unexpected error (traceback); 130 interrupted (SIGINT), 143 terminated (SIGTERM), both resumable; compare adds
1 for a tripped gate. The audit's and the merge's come from the stop tables of :mod:`pipeline.hydra_app`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline import logs
from pipeline.errors import ConfigError, ExitCode, is_disk_full, one_line
from pipeline.hydra_app import (
    MERGE_STOPS,
    SigtermGuard,
    StopContext,
    audit_command,
    end_with,
    log_format_of,
    parsed_overrides,
    read_command_line,
)

# Printed above Hydra's own help (``cam-audit --help``): the commands, not only the audit's options.
USAGE = """\
cam-audit: where does an image classifier look when it decides, and is that where the object is?

Commands:
  cam-audit [OVERRIDE ...]                   audit a classifier's CAM maps against the boxes (python -m pipeline
                                             is the same); OVERRIDEs are the options listed below (key=value)
  cam-audit compare BASELINE CURRENT [...]   compare two finished audits: what changed, paired tests, gates and a
                                             pass / fail verdict (cam-audit compare --help; also cam-audit-compare)
  cam-audit export fiftyone RUN [...]        a finished audit (cam.save_maps=true) as a FiftyOne dataset for review
                                             (cam-audit export fiftyone --help; the fiftyone extra)
  cam-audit merge RUN [OVERRIDE ...]         the report of a sharded run (runtime.shards) once every shard is
                                             complete (cam-audit merge --help; docs/scaling.md "Beyond one node")
  scripts/nightly.sh [pin NIGHT]             the nightly job: audit, then compare with the pinned reference and
                                             with last night (README "Nightly job")

Exit statuses: 0 done (compare: every gate passed), 1 a compare gate tripped, 2 configuration or usage error,
3 too many failed samples, 4 disk full, 5 unexpected error, 130 interrupted, 143 terminated (README "Exit statuses").
"""


def main() -> None:
    """Console-script entry point (``cam-audit``): ``cam-audit compare ...`` runs :func:`compare_main`,
    ``cam-audit export ...`` :func:`pipeline.export.command.export_main`, ``cam-audit merge ...``
    :func:`merge_main`; anything else is the audit (:func:`pipeline.hydra_app.audit_command`)."""
    argv = sys.argv[1:]
    if argv[:1] == ["compare"]:
        sys.exit(compare_main(argv[1:]))
    if argv[:1] == ["export"]:
        from pipeline.export.command import export_main

        sys.exit(export_main(argv[1:]))
    if argv[:1] == ["merge"]:
        sys.exit(merge_main(argv[1:]))
    command = read_command_line(argv)
    if command.help:  # Hydra's help lists the options only: the commands first
        print(USAGE)
        sys.stdout.flush()
    audit_command(command)


def compare_parser() -> argparse.ArgumentParser:
    from pipeline.scores.aggregates import gate_metrics  # the registry's gateable metrics name --max-drop's METRIC

    parser = argparse.ArgumentParser(
        prog="cam-audit compare",
        description="Compare two finished audits of the same images: "
        "what changed, whether it is more than chance, and gates for a nightly job.",
    )
    parser.add_argument("baseline", type=Path, help="run folder of the earlier audit (e.g. last night's)")
    parser.add_argument("current", type=Path, help="run folder of the audit to judge")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the comparison (default: CURRENT.compare/BASELINE_NAME/ beside the current run)",
    )
    parser.add_argument(
        "--max-drop",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="exit 1 when METRIC fell by more than VALUE and the fall is significant (repeatable); METRIC: "
        f"{', '.join(gate_metrics())}; VALUE as a fraction (accuracy=0.01 is one point)",
    )
    parser.add_argument(
        "--max-class-drop",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="the same per true class, significance with Holm's correction over the classes tested (classes "
        "with fewer than --min-class-images images are reported but never gated)",
    )
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="significance level, two-sided (default 0.05: 95%% intervals)"
    )
    parser.add_argument("--resamples", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--min-class-images", type=int, default=10, help="smallest class a per-class gate looks at (default 10)"
    )
    parser.add_argument(
        "--min-coverage",
        type=float,
        default=None,
        metavar="FRACTION",
        help="exit 1 when the current run audited less than FRACTION of its dataset (the rest skipped: "
        "unreadable, unannotated...); off by default, 0.95 in scripts/nightly.sh",
    )
    parser.add_argument(
        "--min-reference-coverage",
        type=float,
        default=None,
        metavar="FRACTION",
        help="exit 1 when the current run audited less than FRACTION of the images the baseline audited (a "
        "night that saw a third of the data); off by default, 0.98 in scripts/nightly.sh",
    )
    parser.add_argument(
        "--max-skipped-rise",
        type=float,
        default=None,
        metavar="FRACTION",
        help="exit 1 when the share of the dataset skipped rose by more than FRACTION from the baseline; off by "
        "default, 0.01 in scripts/nightly.sh",
    )
    parser.add_argument("--top", type=int, default=5, help="how many broken images and classes to print")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: lines for a person (default); json: compare.json as one JSON line on stdout (with time, "
        "level, logger, event, message and out, like the audit's JSON log events) and any error as a JSON line on "
        "stderr, for a scheduler",
    )
    return parser


def json_line(level: str, event: str, message: str, **fields) -> str:
    """One JSON log line of ``cam-audit compare``, as the audit's ``runtime.log_format=json`` writes them
    (:class:`pipeline.logs.JsonLinesFormatter`: ``time``, ``level``, ``logger``, ``event``, ``message``, then
    ``fields``; non-finite numbers as null)."""
    record = logging.makeLogRecord(
        {"name": "pipeline.compare", "levelname": level, "msg": message, "event": event, "fields": fields}
    )
    return logs.JsonLinesFormatter().format(record)


def compare_main(argv: list[str] | None = None) -> int:
    """``cam-audit compare`` / ``cam-audit-compare``: exit 0 when every gate passed (verdict ``pass``), 1 when one
    tripped (``fail``) (:class:`ExitCode`), 2 when a folder is not a finished audit, the runs share no image,
    audited different data under the same ids (other true labels, other class lists), a gate cannot be evaluated,
    the output cannot be written or an option is wrong; 4 when the disk is full. ``--format json``: stdout is one
    JSON line (compare.json with the log-event keys), an error one JSON line on stderr."""
    from pipeline.compare import (
        compare_json,
        compare_with_statistics,
        default_out,
        parse_max_drops,
        render_comparison,
        render_statistics,
        verdict_line,
        write_comparison,
    )

    args = compare_parser().parse_args(argv)
    as_json = args.format == "json"

    def refuse(message: str, code: int) -> int:
        print(json_line("ERROR", "error", message, exit_code=int(code)) if as_json else message, file=sys.stderr)
        return code

    try:
        max_drops, max_class_drops = parse_max_drops(args.max_drop), parse_max_drops(args.max_class_drop)
        if not 0 < args.alpha < 1 or args.resamples < 100:
            raise ValueError("--alpha must lie in (0, 1) and --resamples be at least 100")
        for option in ("min_coverage", "min_reference_coverage", "max_skipped_rise"):
            value = getattr(args, option)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"--{option.replace('_', '-')} must lie in [0, 1] (a fraction), got {value}")
    except ValueError as error:
        return refuse(f"cam-audit compare: usage error: {error}", ExitCode.CONFIG)
    try:
        result = compare_with_statistics(
            args.baseline,
            args.current,
            max_drops,
            max_class_drops,
            args.alpha,
            args.resamples,
            args.seed,
            args.min_class_images,
            args.min_coverage,
            args.min_reference_coverage,
            args.max_skipped_rise,
        )
    except ConfigError as error:  # not the same data, a gate that cannot be evaluated: the option or file first
        return refuse(f"cam-audit compare: cannot compare: {one_line(str(error))}", ExitCode.CONFIG)
    except Exception as error:  # noqa: BLE001 -- any unreadable run is exit 2, never the gate's exit 1
        return refuse(
            f"cam-audit compare: cannot compare: {type(error).__name__}: {one_line(str(error))}", ExitCode.CONFIG
        )
    if result["overall"]["images_compared"] == 0:
        return refuse("cam-audit compare: the two runs have no image in common: nothing to compare", ExitCode.CONFIG)
    out = args.out or default_out(args.baseline, args.current)
    try:
        write_comparison(result, out)
    except OSError as error:  # never the gate's exit 1 (nor a traceback): 4 for a full disk, as the audit
        full = is_disk_full(error)
        return refuse(
            f"cam-audit compare: --out: the comparison cannot be written to {out} "
            f"({error.strerror or error}){'; free space and run it again' if full else ''}",
            ExitCode.DISK_FULL if full else ExitCode.CONFIG,
        )
    code = ExitCode.REGRESSION if result["verdict"] == "fail" else ExitCode.OK
    if as_json:
        level = "ERROR" if code else "INFO"
        print(json_line(level, "compare", verdict_line(result), **compare_json(result), out=str(out), exit_code=code))
        return code
    print(render_comparison(result, args.top))
    print(render_statistics(result))
    print(f"  comparison: {out}")
    print(f"  {verdict_line(result)}")
    if code:
        print(f"cam-audit compare: REGRESSION: {verdict_line(result)}", file=sys.stderr)
    return code


def merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cam-audit merge",
        description="Write the report of a sharded run (runtime.shards) from its shards' parts: samples.parquet, "
        "classes.parquet, errors.parquet, summary.json and the review page, as one process would have, and the "
        "sanity check once. Refused (exit 2, naming them) while a shard runs or is not complete.",
    )
    parser.add_argument("run", type=Path, help="the run folder the shards wrote into")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="key=value for how the merge runs (runtime.device=cpu, runtime.num_workers=0, "
        "runtime.max_error_fraction=0.2, report.review_page=false); one that changes the rows is refused",
    )
    return parser


def merge_main(argv: list[str] | None = None) -> int:
    """``cam-audit merge RUN [OVERRIDE ...]``: exit 0 when the report is written; 2 when the folder is in use
    (a shard still runs), not a sharded run, a shard is not complete or a sample has no row (naming them), or an
    override is refused; 3 too many failed samples over the whole run; 4 a full disk; 5 a bug; 143 / 130
    stopped (run it again)."""
    from pipeline.merge import merge_run

    args = merge_parser().parse_args(argv)
    log_format = log_format_of(parsed_overrides(args.overrides))
    logs.configure(log_format, args.run / "cam-audit-merge.log")  # opened once the merge is accepted
    SigtermGuard().install()
    try:
        merge_run(args.run, args.overrides)
    except BaseException as error:
        end_with(error, MERGE_STOPS, StopContext("cam-audit merge", args.run, f"cam-audit merge {args.run}"))
    logging.shutdown()
    return ExitCode.OK


def compare_main_exit() -> None:
    """Console-script entry point of ``cam-audit-compare``."""
    sys.exit(compare_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
