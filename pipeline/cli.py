"""Command line: ``python -m pipeline [hydra overrides]`` or ``cam-audit [overrides]``; ``cam-audit compare ...``
(or ``cam-audit-compare``) compares two finished audits (:mod:`pipeline.compare`); ``cam-audit merge RUN``
writes the report of a sharded run (:mod:`pipeline.merge`).

Exit statuses (:class:`pipeline.errors.ExitCode`, the README's table): 0 done; 2 a configuration error (ours
or Hydra's own, e.g. an unknown key or option), one line naming the option, before any work (``runtime.debug=true``
shows the traceback); 3 the run stopped on too many failed samples; 4 on a full disk (both resumable); 5 an
unexpected error (traceback); 130 interrupted (SIGINT), 143 terminated (SIGTERM), both resumable; compare adds
1 for a tripped gate.

A start that is refused or fails before the run is accepted (a bad option, a folder that already holds a
run) leaves no trace: Hydra's ``.hydra/`` record and the job log are written only once the run is accepted
(``hydra.output_subdir`` is null in ``conf/config.yaml``; :func:`save_hydra_record` writes it instead), and
a run folder this start created is removed again when it is still empty.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import hydra
import hydra.errors
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from pipeline import logs
from pipeline.atomic import write_text_atomic
from pipeline.errors import ConfigError, ExitCode, Terminated, TooManyFailures, is_disk_full
from pipeline.settings import register_schemas

register_schemas()  # before hydra.main (or a resume's hydra.compose) composes conf/, whose files name them

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
DEFAULT_RUN_DIR = "outputs"  # the fixed prefix of hydra.run.dir in conf/config.yaml
HYDRA_RECORD = ".hydra"  # where Hydra would write config.yaml, hydra.yaml and overrides.yaml
logger = logging.getLogger("pipeline.cli")
_existing_ancestor: Path | None = None  # the nearest folder of hydra.run.dir that existed before this start
_terminated = False  # SIGTERM arrived (on_sigterm)


def one_line(text: str) -> str:
    """A message of several lines (Hydra's, OmegaConf's) as one line."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def fail(message: str, code: int) -> None:
    """Log ``message`` (one line on stderr; in the job log when the run was accepted) and exit with ``code``."""
    logs.event(logger, "error", message, logging.ERROR, exit_code=code)
    logging.shutdown()
    sys.exit(code)


def save_hydra_record(cfg: DictConfig, run_dir: Path) -> None:
    """Write ``.hydra/{config,hydra,overrides}.yaml`` as Hydra would, once the run is accepted.

    A resumed run keeps the record of the run it continues (the resume fingerprint guarantees the same
    numbers-changing configuration).
    """
    folder = run_dir / HYDRA_RECORD
    if (folder / "config.yaml").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.get()
    for name, content in (
        ("config.yaml", cfg),
        ("hydra.yaml", OmegaConf.create({"hydra": hydra_cfg})),
        ("overrides.yaml", hydra_cfg.overrides.task),
    ):
        write_text_atomic(folder / name, OmegaConf.to_yaml(content))


def remove_created_folders(run_dir: Path, existing_ancestor: Path | None) -> None:
    """Remove ``run_dir`` and its parents up to ``existing_ancestor`` while they are empty: the folders
    this start created (Hydra makes the run folder before the configuration is checked)."""
    if existing_ancestor is None:
        return
    folder = run_dir.absolute()
    while folder != existing_ancestor and existing_ancestor in folder.parents:
        try:
            folder.rmdir()  # only an empty folder goes
        except OSError:
            return
        folder = folder.parent


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from pipeline.run import run_audit

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    typed = list(hydra_cfg.overrides.task)
    recorded = resume_overrides(run_dir, typed) if cfg.resume else None
    if recorded:  # resume=true: the run continues with the options it was started with (and the ones typed now)
        cfg = hydra.compose(config_name="config", overrides=recorded + typed)
    log_format = str(cfg.runtime.get("log_format", "text"))
    if log_format not in logs.LOG_FORMATS:
        logs.configure("text", None)
        fail(
            f"cam-audit: configuration error: runtime.log_format: unknown format {log_format!r}; use text or json",
            ExitCode.CONFIG,
        )
    shared = unshared_shard_folder(hydra_cfg, cfg)
    if shared:
        logs.configure(log_format, None)
        fail(f"cam-audit: configuration error: {shared}", ExitCode.CONFIG)
    logs.configure(log_format, run_dir / job_log_name(hydra_cfg.job.name, cfg))
    created = _existing_ancestor if hydra_cfg.mode == RunMode.RUN else None
    accepted = False

    def on_accepted() -> None:
        nonlocal accepted
        accepted = True
        save_hydra_record(cfg, run_dir)
        logs.open_run_log()

    logs.event(
        logger,
        "start",
        f"cam-audit start: run folder {run_dir}"
        + (f"; resumed with the run's recorded options {' '.join(recorded)}" if recorded else ""),
        run_dir=str(run_dir),
        overrides=typed,
        recorded_overrides=recorded or [],
        resume=bool(cfg.resume),
    )
    try:
        run_audit(cfg, run_dir, on_accepted=on_accepted)
    except BaseException as error:
        if not accepted:
            remove_created_folders(run_dir, created)
        if cfg.runtime.debug and isinstance(error, Exception):
            raise
        stop = stop_line(error, run_dir, cfg)
        if stop is not None:
            fail(*stop)
        if isinstance(error, Exception):
            report_bug(error)
        raise  # SystemExit


def stop_line(error: BaseException, run_dir: Path, cfg: DictConfig) -> tuple[str, int] | None:
    """The one line and the exit status of an error that ends a run, by its type; None for a bug (an
    unexpected exception: traceback, exit 5) or a SystemExit."""
    if isinstance(error, MissingMandatoryValue):
        # a `???` left in the config (e.g. data.images of data=imagenet_val): name the key, not a traceback
        key = error.full_key or "?"
        return (
            f"cam-audit: configuration error: {key}: is required (the config has ??? here); pass {key}=<value>",
            ExitCode.CONFIG,
        )
    if isinstance(error, (ConfigError, InterpolationResolutionError)):
        return f"cam-audit: configuration error: {one_line(str(error))}", ExitCode.CONFIG
    if isinstance(error, TooManyFailures):
        return f"cam-audit: stopped: {error}", ExitCode.TOO_MANY_FAILURES
    if isinstance(error, OSError) and is_disk_full(error):
        # every part on disk is complete (written then renamed); the rows not yet flushed are audited again
        return (
            f"cam-audit: stopped: the disk of {run_dir} is full ({error}); the parts written so far are complete: "
            f"free space, then run again with {resume_command(run_dir, cfg)}",
            ExitCode.DISK_FULL,
        )
    if isinstance(error, Terminated) or _terminated:  # (or an error of the stop itself: a killed loader worker)
        return f"cam-audit: terminated (SIGTERM); continue with {resume_command(run_dir, cfg)}", ExitCode.TERMINATED
    if isinstance(error, KeyboardInterrupt):
        return f"cam-audit: interrupted; continue with {resume_command(run_dir, cfg)}", ExitCode.INTERRUPTED
    return None


def report_bug(error: Exception) -> None:
    """An unexpected error: its traceback on stderr and in the job log, exit 5."""
    logger.error(
        "cam-audit: unexpected error (a bug; please report it with this traceback): %s: %s",
        type(error).__name__,
        error,
        exc_info=error,
        extra={"event": "crash", "fields": {"exit_code": ExitCode.INTERNAL}},
    )
    logging.shutdown()
    sys.exit(ExitCode.INTERNAL)


def job_log_name(job_name: str, cfg: DictConfig) -> str:
    """The job log's file name: ``cam-audit.log``; a shard's ``cam-audit-shard-<NNN>.log`` (the shards of a
    run write into one folder at once, from several hosts: one file each)."""
    shards = int(cfg.runtime.get("shards", 1) or 1)
    return f"{job_name}-shard-{int(cfg.runtime.get('shard', 0)):03d}.log" if shards > 1 else f"{job_name}.log"


def unshared_shard_folder(hydra_cfg, cfg: DictConfig) -> str | None:
    """In a multirun the shards of one run must write into one folder, but Hydra gives every job its own
    (``hydra.sweep.subdir``, by default the job's number): the refusal's text when this job's folder is named
    after its number or its shard, None when it is not (or the run is not sharded, or not a multirun)."""
    if hydra_cfg.mode != RunMode.MULTIRUN or int(cfg.runtime.get("shards", 1) or 1) < 2:
        return None
    subdir = str(hydra_cfg.sweep.subdir)
    if subdir != str(hydra_cfg.job.num) and "runtime.shard=" not in subdir:
        return None
    return (
        f"hydra.sweep.subdir: the shards of a run must share one folder, but this job's is {subdir!r} (one per "
        "job); add hydra.sweep.subdir=. (the run folder is then hydra.sweep.dir), or leave runtime.shard out of "
        "its name ('hydra.job.config.override_dirname.exclude_keys=[runtime.shard]')"
    )


def resume_overrides(run_dir: Path, typed: list[str]) -> list[str]:
    """With ``resume=true``: the overrides the run in ``run_dir`` was started with (``.hydra/overrides.yaml``)
    but those whose key or group is typed again now (the typed one counts), to compose before the typed ones,
    so that ``hydra.run.dir=<folder> resume=true`` alone continues the run as it was started. An option typed
    now that differs from the recorded one is then refused by the resume check (:mod:`pipeline.run_folder`).
    Empty when the folder has no record (a run started in-process, or one refused before it was accepted)."""
    path = run_dir / HYDRA_RECORD / "overrides.yaml"
    if not path.is_file():
        return []
    recorded = [str(text) for text in OmegaConf.load(path)]
    parser = OverridesParser.create()
    typed_keys = {override.key_or_group for override in parser.parse_overrides(typed)}
    return [
        text
        for text, override in zip(recorded, parser.parse_overrides(recorded))
        if override.key_or_group not in typed_keys
    ]


# Characters that Hydra's override grammar reads in a value: a folder named by hydra.job.override_dirname
# (``cam=layercam,data.limit=200``) must be quoted to be read as one path.
HYDRA_SPECIAL = re.compile(r"[=,()\[\]\s'\"]")


def hydra_quoted(value: str) -> str:
    """``value`` as a quoted Hydra string when it holds characters the grammar reads; as given otherwise
    (also when it is quoted already)."""
    if not HYDRA_SPECIAL.search(value) or (len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]):
        return value
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "\\'") + "'"


def quote_run_dir(argv: list[str]) -> list[str]:
    """``hydra.run.dir=<folder>`` with the folder quoted for Hydra when needed (:func:`hydra_quoted`): resuming
    a sweep job's folder ``.../cam=layercam,data.limit=200`` failed with "mismatched input '='"."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        out.append(f"{key}={hydra_quoted(value)}" if sep and key == "hydra.run.dir" else arg)
    return out


def resume_command(run_dir: Path, cfg: DictConfig | None = None) -> str:
    """The options that continue the run in ``run_dir``, as one pastes them into a shell; a shard's name its
    shard (the folder's recorded options are another shard's)."""
    command = f"{shlex.quote(f'hydra.run.dir={run_dir}')} resume=true"
    if cfg is not None and int(cfg.runtime.get("shards", 1) or 1) > 1:
        command += f" runtime.shards={int(cfg.runtime.shards)} runtime.shard={int(cfg.runtime.get('shard', 0))}"
    return command


def on_sigterm(signum, frame) -> None:
    """SIGTERM as Ctrl-C: raise :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread, so that the
    run stops the way an interrupt does (queued rows written, parts kept, the error event and the resume
    hint logged) and exits 143. A second SIGTERM meanwhile is ignored: it must not cut the clean-up short.
    (Forked loader workers inherit this handler: there the interrupt ends the worker quietly.)"""
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def check_run_dir_argument(argv: list[str]) -> Path:
    """Fail fast when ``hydra.run.dir`` cannot be created; returns its nearest existing folder.

    Hydra creates the run folder before our code runs, and reports a failure there as its own traceback;
    so the folder named on the command line (or the default's fixed prefix) is checked first. The check is
    on the nearest existing ancestor: it must be a writable folder. Interpolations (``${now:...}``) are cut
    off: only the fixed prefix can be checked.
    """
    value = DEFAULT_RUN_DIR
    for arg in argv:
        key, sep, given = arg.lstrip("+~").partition("=")
        if sep and key == "hydra.run.dir":
            value = given.strip("'\"")
    fixed = value.split("${", 1)[0] or "."
    ancestor = Path(fixed).expanduser().absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError("hydra.run.dir", f"{value!r} cannot be created: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError("hydra.run.dir", f"{value!r} cannot be created: {str(ancestor)!r} is not writable")
    return ancestor


# Hydra's message for a config group option that does not exist: "Could not find 'cam/gradcam++'".
MISSING_GROUP_OPTION = re.compile(r"Could not find '(?P<group>[\w.]+)/(?P<option>[^']+)'")


def composition_error_message(error: Exception) -> str:
    """Hydra's or OmegaConf's error while composing, as one line; the option's name first when OmegaConf
    names it (``full_key``): an unknown key (``scores.tolerence: unknown option ...``) or a value the
    group's schema refuses (``scores.tolerance: Value 'abc' ... could not be converted to Float ...``)."""
    message = one_line(
        str(error).split("Config search path")[0]
    )  # Hydra appends its search path: not the user's concern
    missing = MISSING_GROUP_OPTION.search(message)
    if missing:  # cam=gradcam++: name the group as the option, and what it offers
        group, given = missing["group"], missing["option"]
        offered = (
            message.split("Available options in", 1)[-1].split(":", 1)[-1].strip() if "Available" in message else ""
        )
        if group == "hydra/launcher" and given.startswith("submitit"):  # conf/hydra/launcher/shards_*.yaml need it
            offered = "install the slurm extra: pip install 'cam-audit[slurm]' (hydra-submitit-launcher)"
            return f"{group}: no option {given!r} ({offered})"
        return f"{group}: no option {given!r}" + (f" (available: {', '.join(offered.split())})" if offered else "")
    cause = error.__cause__
    if not isinstance(cause, OmegaConfBaseException):
        return message
    key = getattr(cause, "full_key", None)
    if not key:
        return f"{message} ({one_line(str(cause))})"
    reason = str(cause).strip().splitlines()[0]  # OmegaConf's next lines repeat the key and name the schema class
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        return f"{key}: unknown option ({reason})"
    return f"{key}: {reason} ({message})"


def requested_log_format(argv: list[str]) -> str:
    """``runtime.log_format`` from the command line (for messages printed before Hydra has composed)."""
    for arg in argv:
        key, sep, given = arg.lstrip("+~").partition("=")
        if sep and key == "runtime.log_format" and given in logs.LOG_FORMATS:
            return given
    return "text"


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
    """Console-script entry point (``cam-audit``); ``cam-audit compare ...`` runs :func:`compare_main`,
    ``cam-audit export ...`` :func:`pipeline.export.command.export_main`, ``cam-audit merge ...``
    :func:`merge_main`."""
    global _existing_ancestor
    argv = sys.argv[1:]
    if argv[:1] == ["compare"]:
        sys.exit(compare_main(argv[1:]))
    if argv[:1] == ["export"]:
        from pipeline.export.command import export_main

        sys.exit(export_main(argv[1:]))
    if argv[:1] == ["merge"]:
        sys.exit(merge_main(argv[1:]))
    if "--help" in argv or "-h" in argv:  # Hydra's help lists the options only: the commands first
        print(USAGE)
        sys.stdout.flush()
    argv = quote_run_dir(argv)
    sys.argv[1:] = argv  # what hydra.main reads
    signal.signal(signal.SIGTERM, on_sigterm)
    logs.configure(requested_log_format(argv), None)
    try:
        _existing_ancestor = check_run_dir_argument(argv)
    except ConfigError as error:
        fail(f"cam-audit: configuration error: {error}", ExitCode.CONFIG)
    # Hydra's own errors (an unknown key, a missing option file, a bad override) raise instead of printing
    # several lines and exiting 1, so that they follow the exit-code table: one line, exit 2.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _main()
    except (hydra.errors.HydraException, OmegaConfBaseException) as error:
        logs.configure(requested_log_format(argv), None)
        fail(f"cam-audit: configuration error: {composition_error_message(error)}", ExitCode.CONFIG)
    except Terminated:
        fail("cam-audit: terminated (SIGTERM)", ExitCode.TERMINATED)
    except KeyboardInterrupt:
        fail("cam-audit: interrupted", ExitCode.INTERRUPTED)
    except Exception as error:
        failed = failed_launcher_job(error)
        if failed is None:
            raise
        logs.configure(requested_log_format(argv), None)
        fail(*failed)


# A job of a multirun started by hydra-submitit-launcher (hydra/launcher=shards_slurm or shards_local) reports
# its end on its own stderr; the launching process gets submitit's exception with that stream's tail. Its last
# cam-audit line says how the job ended: the launching command exits with the status that line stands for.
JOB_ENDINGS = (
    ("cam-audit: configuration error", ExitCode.CONFIG),
    ("cam-audit: stopped: the disk", ExitCode.DISK_FULL),
    ("cam-audit: stopped:", ExitCode.TOO_MANY_FAILURES),
    ("cam-audit: terminated", ExitCode.TERMINATED),
    ("cam-audit: interrupted", ExitCode.INTERRUPTED),
)


def failed_launcher_job(error: Exception) -> tuple[str, int] | None:
    """``(one line, exit status)`` for submitit's error about a job of the multirun that failed (the job's own
    last ``cam-audit:`` line, its status by :data:`JOB_ENDINGS`, 5 when it crashed); None for any other error."""
    if not type(error).__module__.startswith("submitit"):
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("cam-audit:")]
    job = lines[0] if lines else type(error).__name__
    said = ours[-1] if ours else (lines[-1] if lines else "")
    code = next((status for prefix, status in JOB_ENDINGS if said.startswith(prefix)), ExitCode.INTERNAL)
    return f"cam-audit: a job of the multirun failed ({one_line(job)}): {said}", code


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
    """One JSON log line as the audit's ``runtime.log_format=json`` writes them (``time``, ``level``, ``logger``,
    ``event``, ``message``, then ``fields``; non-finite numbers as null)."""
    import datetime
    import json

    payload = {
        "time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": level,
        "logger": "pipeline.compare",
        "event": event,
        "message": message,
        **fields,
    }
    return json.dumps(logs.json_safe(payload), allow_nan=False)


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
    log_format = requested_log_format(args.overrides)
    logs.configure(log_format, args.run / "cam-audit-merge.log")  # opened once the merge is accepted
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        merge_run(args.run, args.overrides)
    except ConfigError as error:
        fail(f"cam-audit merge: cannot merge: {one_line(str(error))}", ExitCode.CONFIG)
    except TooManyFailures as error:
        fail(f"cam-audit merge: stopped: {error}", ExitCode.TOO_MANY_FAILURES)
    except Terminated:
        fail(f"cam-audit merge: terminated (SIGTERM); merge again: cam-audit merge {args.run}", ExitCode.TERMINATED)
    except KeyboardInterrupt:
        fail(f"cam-audit merge: interrupted; merge again: cam-audit merge {args.run}", ExitCode.INTERRUPTED)
    except Exception as error:
        if isinstance(error, OSError) and is_disk_full(error):
            fail(
                f"cam-audit merge: stopped: the disk of {args.run} is full ({error}); free space, merge again",
                ExitCode.DISK_FULL,
            )
        logger.error(
            "cam-audit merge: unexpected error (a bug; please report it with this traceback): %s: %s",
            type(error).__name__,
            error,
            exc_info=error,
            extra={"event": "crash", "fields": {"exit_code": ExitCode.INTERNAL}},
        )
        logging.shutdown()
        return ExitCode.INTERNAL
    logging.shutdown()
    return ExitCode.OK


def compare_main_exit() -> None:
    """Console-script entry point of ``cam-audit-compare``."""
    sys.exit(compare_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
