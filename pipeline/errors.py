"""Errors that stop a run with a one-line message (the command line maps each to an exit status)."""

import errno


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


class TooManyFailures(Exception):
    """More samples failed than ``runtime.max_error_fraction`` allows: the data is probably wrong."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a "no space left" / "quota exceeded" write failure (pyarrow's OSError may
    carry only the message, not the errno)."""
    if not isinstance(error, OSError):
        return False
    return error.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error) or "quota exceeded" in str(error).lower()
