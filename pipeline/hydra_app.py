"""The audit command as a Hydra application: how its command line is read, how Hydra composes and runs the
job, and how every error that ends a command becomes one line and an exit status.

- The command line is read once, with Hydra's own parsers (:func:`read_command_line`): the run folder and
  ``runtime.log_format`` are needed before Hydra runs (Hydra creates the run folder before our code runs,
  and its errors are reported in the log format asked for).
- :func:`audit_command` hands it to ``hydra.main``; the job (:func:`run_job`) gets what it needs from before
  Hydra ran as an :class:`AuditStart`, passed to it, not through a module global.
- The stop tables (:data:`RUN_STOPS`, :data:`COMPOSE_STOPS`, :data:`MERGE_STOPS`) map an error's type to its
  line and :class:`~pipeline.errors.ExitCode` (the table of docs/usage.md); an error no row takes is a bug
  (traceback, exit 5), a SystemExit goes on.

A start that is refused or fails before the run is accepted (a bad option, a folder that already holds a
run) leaves no trace: Hydra's ``.hydra/`` record and the job log are written only once the run is accepted
(``hydra.output_subdir`` is null in ``conf/config.yaml``; :func:`save_hydra_record` writes the same three
files instead), and a run folder this start created is removed again when it is still empty.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

import hydra
from hydra._internal.utils import get_args_parser
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, OverrideParseException
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
from pipeline.errors import ConfigError, ExitCode, Terminated, TooManyFailures, is_disk_full, one_line
from pipeline.settings import register_schemas

# Before hydra.main (or a resume's hydra.compose) composes conf/, whose files name the schemas; here, not in
# cli.py, because a submitit job process imports this module and not the command line's.
register_schemas()

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
DEFAULT_RUN_DIR = "outputs"  # the fixed prefix of hydra.run.dir in conf/config.yaml
RUN_DIR_KEY = "hydra.run.dir"
LOG_FORMAT_KEY = "runtime.log_format"
HYDRA_RECORD = ".hydra"  # where Hydra would write config.yaml, hydra.yaml and overrides.yaml
# The JSON log lines name their logger: "pipeline.cli" is what schedulers parsing them have always seen.
logger = logging.getLogger("pipeline.cli")


# ---------------------------------------------------------------------------------------------------------------
# The stop tables: an error that ends a command -> its one line and its exit status


@dataclass(frozen=True)
class StopContext:
    """What a stop's line may name: the command (in a crash's line), the run folder, how to continue (the
    resume options, or the merge command), and whether SIGTERM arrived before the error."""

    command: str = "cam-audit"
    run_dir: Path | None = None
    again: str = ""
    sigterm_arrived: bool = False


def always(error: BaseException, context: StopContext) -> bool:
    return True


def disk_full(error: BaseException, context: StopContext) -> bool:
    return is_disk_full(error)


def terminated(error: BaseException, context: StopContext) -> bool:
    # after SIGTERM, an error of the stop itself (a killed loader worker) is the termination too
    return isinstance(error, Terminated) or context.sigterm_arrived


def omegaconf_key(error: BaseException) -> str:
    return getattr(error, "full_key", None) or "?"


@dataclass(frozen=True)
class Stop:
    """One row of a stop table: an error of type ``kind`` (for which ``when`` holds) ends the command with
    ``code`` and the line ``line``, a template of ``{error}`` (the error as ``text`` writes it), ``{run_dir}``
    and ``{again}`` (:class:`StopContext`)."""

    kind: type[BaseException] | tuple[type[BaseException], ...]
    code: ExitCode
    line: str
    text: Callable[[BaseException], str] = str
    when: Callable[[BaseException, StopContext], bool] = always


def stop_for(error: BaseException, table: Sequence[Stop], context: StopContext) -> tuple[str, ExitCode] | None:
    """The line and status of the first row of ``table`` that takes ``error``; None when none does."""
    for stop in table:
        if isinstance(error, stop.kind) and stop.when(error, context):
            line = stop.line.format(error=stop.text(error), run_dir=context.run_dir, again=context.again)
            return line, stop.code
    return None


# A run's end, inside the Hydra job (the run folder is known).
RUN_STOPS = (
    # a `???` left in the config (e.g. data.images of data=imagenet_val): name the key, not a traceback
    Stop(
        MissingMandatoryValue,
        ExitCode.CONFIG,
        "cam-audit: configuration error: {error}: is required (the config has ??? here); pass {error}=<value>",
        text=omegaconf_key,
    ),
    Stop(
        (ConfigError, InterpolationResolutionError),
        ExitCode.CONFIG,
        "cam-audit: configuration error: {error}",
        one_line,
    ),
    Stop(TooManyFailures, ExitCode.TOO_MANY_FAILURES, "cam-audit: stopped: {error}"),
    # every part on disk is complete (written then renamed); the rows not yet flushed are audited again
    Stop(
        OSError,
        ExitCode.DISK_FULL,
        "cam-audit: stopped: the disk of {run_dir} is full ({error}); the parts written so far are complete: "
        "free space, then run again with {again}",
        when=disk_full,
    ),
    Stop(BaseException, ExitCode.TERMINATED, "cam-audit: terminated (SIGTERM); continue with {again}", when=terminated),
    Stop(KeyboardInterrupt, ExitCode.INTERRUPTED, "cam-audit: interrupted; continue with {again}"),
)


def composition_error_message(error: BaseException) -> str:
    """Hydra's or OmegaConf's error while composing, as one line; the option's name first when OmegaConf
    names it (``full_key``): an unknown key (``scores.tolerence: unknown option ...``) or a value the
    group's schema refuses (``scores.tolerance: Value 'abc' ... could not be converted to Float ...``)."""
    message = one_line(str(error).split("Config search path")[0])  # Hydra's search path: not the user's concern
    missing = MISSING_GROUP_OPTION.search(message)
    if missing:
        return missing_group_option_message(missing, message)
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


# Hydra's message for a config group option that does not exist: "Could not find 'cam/gradcam++'".
MISSING_GROUP_OPTION = re.compile(r"Could not find '(?P<group>[\w.]+)/(?P<option>[^']+)'")


def missing_group_option_message(missing: re.Match[str], message: str) -> str:
    """``cam=gradcam++``: the group named as the option, and what it offers."""
    group, given = missing["group"], missing["option"]
    offered = message.split("Available options in", 1)[-1].split(":", 1)[-1].strip() if "Available" in message else ""
    if group == "hydra/launcher" and given.startswith("submitit"):  # conf/hydra/launcher/shards_*.yaml need it
        offered = "install the slurm extra: pip install 'cam-audit[slurm]' (hydra-submitit-launcher)"
        return f"{group}: no option {given!r} ({offered})"
    return f"{group}: no option {given!r}" + (f" (available: {', '.join(offered.split())})" if offered else "")


# What escapes Hydra: its own errors (an unknown key, a missing option file, a bad override) and a stop
# while it composes. (A job of a launcher that failed: :func:`failed_launcher_job`.)
COMPOSE_STOPS = (
    Stop(
        (HydraException, OmegaConfBaseException),
        ExitCode.CONFIG,
        "cam-audit: configuration error: {error}",
        text=composition_error_message,
    ),
    Stop(Terminated, ExitCode.TERMINATED, "cam-audit: terminated (SIGTERM)"),
    Stop(KeyboardInterrupt, ExitCode.INTERRUPTED, "cam-audit: interrupted"),
)

# ``cam-audit merge RUN``: ``{again}`` is the merge command.
MERGE_STOPS = (
    Stop(ConfigError, ExitCode.CONFIG, "cam-audit merge: cannot merge: {error}", one_line),
    Stop(TooManyFailures, ExitCode.TOO_MANY_FAILURES, "cam-audit merge: stopped: {error}"),
    Stop(Terminated, ExitCode.TERMINATED, "cam-audit merge: terminated (SIGTERM); merge again: {again}"),
    Stop(KeyboardInterrupt, ExitCode.INTERRUPTED, "cam-audit merge: interrupted; merge again: {again}"),
    Stop(
        OSError,
        ExitCode.DISK_FULL,
        "cam-audit merge: stopped: the disk of {run_dir} is full ({error}); free space, merge again",
        when=disk_full,
    ),
)


def fail(message: str, code: int) -> NoReturn:
    """Log ``message`` (one line on stderr; in the job log when the run was accepted) and exit with ``code``."""
    logs.event(logger, "error", message, logging.ERROR, exit_code=code)
    logging.shutdown()
    sys.exit(code)


def report_bug(error: BaseException, command: str) -> NoReturn:
    """An unexpected error: its traceback on stderr and in the job log, exit 5."""
    logger.error(
        "%s: unexpected error (a bug; please report it with this traceback): %s: %s",
        command,
        type(error).__name__,
        error,
        exc_info=error,
        extra={"event": "crash", "fields": {"exit_code": ExitCode.INTERNAL}},
    )
    logging.shutdown()
    sys.exit(ExitCode.INTERNAL)


def end_with(error: BaseException, table: Sequence[Stop], context: StopContext) -> NoReturn:
    """End the command for ``error``: its row's line and status; a bug's traceback and 5; a SystemExit goes on."""
    stop = stop_for(error, table, context)
    if stop is not None:
        fail(*stop)
    if isinstance(error, Exception):
        report_bug(error, context.command)
    raise error


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


def failed_launcher_job(error: BaseException) -> tuple[str, ExitCode] | None:
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


class SigtermGuard:
    """SIGTERM as Ctrl-C: once installed, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the
    main thread, so that the run stops the way an interrupt does (queued rows written, parts kept, the error
    event and the resume hint logged) and exits 143. A second SIGTERM meanwhile is ignored: it must not cut the
    clean-up short. ``arrived`` tells the stop table that one came. (Forked loader workers inherit the handler:
    there the interrupt ends the worker quietly.)"""

    def __init__(self) -> None:
        self.arrived = False

    def install(self) -> SigtermGuard:
        signal.signal(signal.SIGTERM, self.on_sigterm)
        return self

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.arrived = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()


# ---------------------------------------------------------------------------------------------------------------
# The command line, read once with Hydra's parsers

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
    a sweep job's folder ``.../cam=layercam,data.limit=200`` failed with "mismatched input '='".

    The one place that splits an argument by hand: such a text is no override Hydra's parser reads (that is
    the point), and in its grammar the key ends at the first ``=``; the folder after it is taken literally."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        out.append(f"{key}={hydra_quoted(value)}" if sep and key == RUN_DIR_KEY else arg)
    return out


def parsed_overrides(texts: Sequence[str]) -> list[Override]:
    """``texts`` read by Hydra's override parser, one at a time; one that does not parse is left out (Hydra
    reports it while composing: a configuration error, in the log format the others ask for)."""
    parser = OverridesParser.create()
    parsed: list[Override] = []
    for text in texts:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException:
            continue
    return parsed


def override_value(overrides: Sequence[Override], key: str) -> object | None:
    """The value the last override of ``key`` sets (``key=``, ``+key=``, ``++key=``; not a sweep); None when
    none does."""
    values = [
        override.value()
        for override in overrides
        if override.key_or_group == key and not override.is_delete() and not override.is_sweep_override()
    ]
    return values[-1] if values else None


def log_format_of(overrides: Sequence[Override]) -> str:
    """``runtime.log_format`` as the command line asks (for the lines written before Hydra has composed)."""
    value = override_value(overrides, LOG_FORMAT_KEY)
    return value if isinstance(value, str) and value in logs.LOG_FORMATS else "text"


@dataclass(frozen=True)
class CommandLine:
    """The audit's command line as Hydra reads it: ``argv`` is what ``hydra.main`` is handed (the run folder
    quoted for Hydra's grammar), ``overrides`` the ones Hydra's parser reads, ``help`` Hydra's ``--help``."""

    argv: list[str]
    overrides: list[Override]
    help: bool

    @property
    def log_format(self) -> str:
        return log_format_of(self.overrides)

    @property
    def run_dir(self) -> str:
        """``hydra.run.dir`` as typed (interpolations left as they are), or the default's fixed prefix."""
        value = override_value(self.overrides, RUN_DIR_KEY)
        return DEFAULT_RUN_DIR if value is None else str(value)


def read_command_line(argv: list[str]) -> CommandLine:
    """``argv`` read as ``hydra.main`` will read it: its flags by Hydra's argument parser (``--help``, ``-m``,
    ``--cfg job``; a wrong flag exits 2 with Hydra's usage, as Hydra would), its overrides by Hydra's parser."""
    quoted = quote_run_dir(argv)
    args = get_args_parser().parse_args(quoted)
    return CommandLine(quoted, parsed_overrides(args.overrides), bool(args.help))


def check_run_dir(value: str) -> Path:
    """Fail fast when the run folder ``value`` cannot be created; returns its nearest existing folder.

    Hydra creates the run folder before our code runs, and reports a failure there as its own traceback;
    so the folder named on the command line (or the default's fixed prefix) is checked first. The check is
    on the nearest existing ancestor: it must be a writable folder. Interpolations (``${now:...}``) are cut
    off: only the fixed prefix can be checked.
    """
    fixed = value.split("${", 1)[0] or "."
    ancestor = Path(fixed).expanduser().absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(RUN_DIR_KEY, f"{value!r} cannot be created: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(RUN_DIR_KEY, f"{value!r} cannot be created: {str(ancestor)!r} is not writable")
    return ancestor


# ---------------------------------------------------------------------------------------------------------------
# The audit: hydra.main, then the job


@dataclass(frozen=True)
class AuditStart:
    """What the Hydra job needs from before Hydra ran: the nearest folder of the run folder that existed (the
    folders this start creates below it are removed again when the start is refused) and the SIGTERM guard."""

    existing_ancestor: Path
    sigterm: SigtermGuard


def audit_command(command: CommandLine) -> None:
    """``cam-audit [OVERRIDE ...]``: the checks Hydra's own start would fail on, then ``hydra.main``; returns
    when the run (or Hydra's help) finished, exits with the status of the stop tables otherwise."""
    sigterm = SigtermGuard().install()
    logs.configure(command.log_format, None)
    try:
        existing = check_run_dir(command.run_dir)
    except ConfigError as error:
        fail(f"cam-audit: configuration error: {error}", ExitCode.CONFIG)
    # Hydra's own errors (an unknown key, a missing option file, a bad override) raise instead of printing
    # several lines and exiting 1, so that they follow the exit-code table: one line, exit 2.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        run_hydra(command.argv, AuditStart(existing, sigterm))
    except BaseException as error:
        end_outside_job(error, command.log_format)


def run_hydra(argv: list[str], start: AuditStart) -> None:
    """``hydra.main`` on ``argv``, its job :func:`run_job` with ``start``."""

    @hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
    def audit_job(cfg: DictConfig) -> None:
        run_job(cfg, start)

    sys.argv[1:] = argv  # hydra.main reads the command line from sys.argv
    audit_job()


def end_outside_job(error: BaseException, log_format: str) -> NoReturn:
    """An error that escaped Hydra (a composition error, a stop while composing, a launcher's failed job):
    its line and status; anything else (a SystemExit, an error under ``runtime.debug=true``) goes on."""
    stop = stop_for(error, COMPOSE_STOPS, StopContext()) or failed_launcher_job(error)
    if stop is None:
        raise error
    if not isinstance(error, KeyboardInterrupt):  # the console only: the run was never accepted
        logs.configure(log_format, None)
    fail(*stop)


@dataclass(frozen=True)
class AuditJob:
    """One job as Hydra made it: its configuration (with ``resume=true``, composed from the run's recorded
    options and the ones typed now), its run folder, the overrides typed and recorded, and the folder that
    existed before this start (None: keep every folder, as a multirun's jobs do)."""

    cfg: DictConfig
    run_dir: Path
    typed: list[str]
    recorded: list[str]
    existing_ancestor: Path | None


def job_from_hydra(cfg: DictConfig, start: AuditStart) -> AuditJob:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    typed = list(hydra_cfg.overrides.task)
    recorded = resume_overrides(run_dir, typed) if cfg.resume else []
    if recorded:  # resume=true: the run continues with the options it was started with (and the ones typed now)
        cfg = hydra.compose(config_name="config", overrides=recorded + typed)
    existing = start.existing_ancestor if hydra_cfg.mode == RunMode.RUN else None
    return AuditJob(cfg, run_dir, typed, recorded, existing)


def run_job(cfg: DictConfig, start: AuditStart) -> None:
    """Hydra's job: the log set up, then :func:`pipeline.run.run_audit`; every error ends by :data:`RUN_STOPS`
    (a start refused before the run was accepted removes the folders it created)."""
    from pipeline.run import run_audit

    job = job_from_hydra(cfg, start)
    accepted = False

    def on_accepted() -> None:
        nonlocal accepted
        accepted = True
        save_hydra_record(job.cfg, job.run_dir)
        logs.open_run_log()

    try:
        configure_job_log(job)
        log_start(job)
        run_audit(job.cfg, job.run_dir, on_accepted=on_accepted)
    except BaseException as error:
        if not accepted:
            remove_created_folders(job.run_dir, job.existing_ancestor)
        if job.cfg.runtime.debug and isinstance(error, Exception):
            raise
        again = resume_command(job.run_dir, job.cfg)
        end_with(error, RUN_STOPS, StopContext("cam-audit", job.run_dir, again, start.sigterm.arrived))


def configure_job_log(job: AuditJob) -> None:
    """The console and the job log in ``runtime.log_format``; a ConfigError for a format we do not write and
    for shards that would not share one folder (both before any work)."""
    log_format = str(job.cfg.runtime.get("log_format", "text"))
    if log_format not in logs.LOG_FORMATS:
        logs.configure("text", None)
        raise ConfigError(LOG_FORMAT_KEY, f"unknown format {log_format!r}; use text or json")
    hydra_cfg = HydraConfig.get()
    logs.configure(log_format, job.run_dir / job_log_name(hydra_cfg.job.name, job.cfg))
    shared = unshared_shard_folder(hydra_cfg, job.cfg)
    if shared:
        raise ConfigError("hydra.sweep.subdir", shared)


def log_start(job: AuditJob) -> None:
    resumed = f"; resumed with the run's recorded options {' '.join(job.recorded)}" if job.recorded else ""
    logs.event(
        logger,
        "start",
        f"cam-audit start: run folder {job.run_dir}{resumed}",
        run_dir=str(job.run_dir),
        overrides=job.typed,
        recorded_overrides=job.recorded,
        resume=bool(job.cfg.resume),
    )


def job_log_name(job_name: str, cfg: DictConfig) -> str:
    """The job log's file name: ``cam-audit.log``; a shard's ``cam-audit-shard-<NNN>.log`` (the shards of a
    run write into one folder at once, from several hosts: one file each)."""
    shards = int(cfg.runtime.get("shards", 1) or 1)
    return f"{job_name}-shard-{int(cfg.runtime.get('shard', 0)):03d}.log" if shards > 1 else f"{job_name}.log"


def unshared_shard_folder(hydra_cfg: HydraConf, cfg: DictConfig) -> str | None:
    """In a multirun the shards of one run must write into one folder, but Hydra gives every job its own
    (``hydra.sweep.subdir``, by default the job's number): the refusal's text when this job's folder is named
    after its number or its shard, None when it is not (or the run is not sharded, or not a multirun)."""
    if hydra_cfg.mode != RunMode.MULTIRUN or int(cfg.runtime.get("shards", 1) or 1) < 2:
        return None
    subdir = str(hydra_cfg.sweep.subdir)
    if subdir != str(hydra_cfg.job.num) and "runtime.shard=" not in subdir:
        return None
    return (
        f"the shards of a run must share one folder, but this job's is {subdir!r} (one per job); add "
        "hydra.sweep.subdir=. (the run folder is then hydra.sweep.dir), or leave runtime.shard out of its name "
        "('hydra.job.config.override_dirname.exclude_keys=[runtime.shard]')"
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
        for text, override in zip(recorded, parser.parse_overrides(recorded), strict=True)
        if override.key_or_group not in typed_keys
    ]


def resume_command(run_dir: Path, cfg: DictConfig | None = None) -> str:
    """The options that continue the run in ``run_dir``, as one pastes them into a shell; a shard's name its
    shard (the folder's recorded options are another shard's)."""
    command = f"{shlex.quote(f'{RUN_DIR_KEY}={run_dir}')} resume=true"
    if cfg is not None and int(cfg.runtime.get("shards", 1) or 1) > 1:
        command += f" runtime.shards={int(cfg.runtime.shards)} runtime.shard={int(cfg.runtime.get('shard', 0))}"
    return command


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
