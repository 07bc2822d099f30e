"""Logging for unattended runs: the run's job log, one-line console messages, JSON-lines events.

``configure`` (called by the command line once Hydra has resolved the run folder) sets up:
- the job log ``<run folder>/cam-audit.log`` (every event at INFO and above, with UTC timestamps), through a
  :class:`DeferredFileHandler` that keeps the records in memory until :func:`open_run_log` is called, once
  the run is accepted: a refused start (an existing run, a bad option) writes nothing into any folder;
- the console: with ``runtime.log_format=text`` warnings and errors only, one line each on stderr (the
  summary is printed on stdout by the report); with ``json`` every event as one JSON object per line on
  stderr (``{"time", "level", "logger", "event", "message", ...fields}``), for a scheduler to parse.

Code logs with :func:`event` so that both formats carry the same fields. Without ``configure`` (tests,
library use) nothing is set up here and Python's defaults apply.
"""

from __future__ import annotations

import datetime
import logging
import sys
from pathlib import Path

from pipeline.jsonio import dumps_strict

LOG_FORMATS = ("text", "json")
_INSTALLED: list[logging.Handler] = []  # the handlers ``configure`` added, removed by the next call (multirun jobs)


def utc_now_iso() -> str:
    """Now in UTC, ISO 8601 with seconds and a ``Z`` (e.g. ``2026-12-01T10:20:00Z``)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, event, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", "message"),
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}) or {})  # made JSON-safe with the rest by dumps_strict
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return dumps_strict(payload)


class TextFormatter(logging.Formatter):
    """``2026-12-01T10:20:00Z INFO pipeline.run: message`` (UTC), for the job log."""

    converter = staticmethod(
        lambda seconds: datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).timetuple()
    )

    def __init__(self) -> None:
        super().__init__("%(asctime)sZ %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")


class DeferredFileHandler(logging.Handler):
    """A file handler that holds its records until :meth:`open` (then appends them and every later one).

    Until then no file (and no folder) is created: a run that is refused before it starts leaves the
    folder it was pointed at untouched.
    """

    def __init__(self, path: Path):
        super().__init__(logging.INFO)
        self.path = Path(path)
        self._pending: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None

    def open(self) -> None:
        if self._file is None:
            self._file = logging.FileHandler(self.path, mode="a", encoding="utf-8")
            self._file.setFormatter(self.formatter)
            for record in self._pending:
                self._file.emit(record)
            self._pending = []

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            self._pending.append(record)
        else:
            self._file.emit(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


def configure(log_format: str, log_file: Path | None) -> None:
    """Replace the handlers a previous call installed with the console and (deferred) job-log handlers."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; use text or json")
    root = logging.getLogger()
    for handler in _INSTALLED:
        root.removeHandler(handler)
        handler.close()
    _INSTALLED.clear()
    for handler in list(root.handlers):  # Hydra's own console handler ("[time][HYDRA] ..." on stdout)
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        console.setLevel(logging.INFO)
        console.setFormatter(JsonLinesFormatter())
    else:
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(message)s"))
    _INSTALLED.append(console)
    if log_file is not None:
        file_handler = DeferredFileHandler(log_file)
        file_handler.setFormatter(JsonLinesFormatter() if log_format == "json" else TextFormatter())
        _INSTALLED.append(file_handler)
    for handler in _INSTALLED:
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def open_run_log() -> None:
    """The run is accepted: start writing the job log (with the records held so far)."""
    for handler in _INSTALLED:
        if isinstance(handler, DeferredFileHandler):
            handler.open()


def event(logger: logging.Logger, name: str, message: str, level: int = logging.INFO, **fields) -> None:
    """Log ``message`` as event ``name`` with ``fields`` (JSON keys in the json format, ignored by text)."""
    logger.log(level, message, extra={"event": name, "fields": fields})
