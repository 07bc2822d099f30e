"""Errors that stop a run with a one-line message (the command line maps each to an exit status)."""

import errno
from enum import IntEnum


class ConfigError(Exception):
    """A configuration problem found before any work starts.

    Printed as one line naming the option to fix; ``option`` is the dotted Hydra key, ``reason`` the rest.
    """

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option
        self.reason = message


class OptionError(ValueError):
    """A bad value found by a function that takes plain values, not the config: ``option`` is the key
    relative to the group it was given (``size`` of ``data.preprocess``), ``reason`` what is wrong. The
    caller, which knows the group, turns it into a :class:`ConfigError` with the full key."""

    def __init__(self, option: str, reason: str):
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and ``kill`` send) arrived: handled like Ctrl-C (the writers' queued rows are
    kept, the run can be resumed), reported with its own exit status (:attr:`ExitCode.TERMINATED`)."""


class TooManyFailures(Exception):
    """More samples failed than ``runtime.max_error_fraction`` allows: the data is probably wrong."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a "no space left" / "quota exceeded" write failure (pyarrow's OSError may
    carry only the message, not the errno)."""
    if not isinstance(error, OSError):
        return False
    return (
        error.errno in (errno.ENOSPC, errno.EDQUOT)
        or "No space left on device" in str(error)
        or "quota exceeded" in str(error).lower()
    )


class ExitCode(IntEnum):
    """Exit statuses of ``cam-audit`` and ``cam-audit compare`` (one table, in the README too).

    Python's own exit status for an uncaught exception is 1; every uncaught exception is mapped to
    ``INTERNAL`` instead, so that 1 keeps one meaning: a compare gate tripped.
    """

    OK = 0  # the audit finished / the comparison passed every gate
    REGRESSION = 1  # compare: a --max-drop gate tripped (a significant drop beyond its threshold)
    CONFIG = 2  # a configuration or usage error (a bad option, Hydra's own override errors, an unreadable run to compare), before any work
    TOO_MANY_FAILURES = (
        3  # the run stopped: more samples failed than runtime.max_error_fraction allows (rows so far kept; resume=true)
    )
    DISK_FULL = 4  # the run stopped: the disk is full; the parts written are complete (free space, resume=true)
    INTERNAL = 5  # an unexpected error (a bug): the traceback is in the job log and on stderr
    INTERRUPTED = 130  # stopped by Ctrl-C / SIGINT (128 + 2, the shell convention); resume=true continues
    TERMINATED = 143  # stopped by SIGTERM (128 + 15: a scheduler's stop, kill); resume=true continues


def one_line(text: object) -> str:
    """A message of several lines (Hydra's, OmegaConf's, an exception's) as one line, for the one line a
    refused command prints."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
