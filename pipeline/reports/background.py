"""Disk and drawing off the critical path: jobs run in order on a background thread, behind a bounded queue.

The audit's main loop hands each finished batch's Parquet rows and overlay pictures to a
:class:`BackgroundWorker` and goes on with the next batch, so the device does not wait for the disk or
for OpenCV. Threads suffice: pyarrow's writer, OpenCV and the torch kernels of the main loop release the
GIL while they work. The queue is bounded (``max_pending`` jobs): when the disk is slower than the
device, ``submit`` blocks, so memory stays flat instead of growing with the backlog.

A job that raises stops its worker: the later jobs are dropped, and the next ``submit`` (or ``close``)
raises :class:`BackgroundWriteError` in the main loop, naming the worker and the original error, so the
run stops instead of going on without writing. What was written before stays valid: Parquet parts are
written atomically (:mod:`pipeline.reports.parts`), so a resumed run redoes exactly the rows that never
reached a complete part.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class BackgroundWriteError(RuntimeError):
    """A background writer failed; the run stops. ``worker`` names it (``parquet``, ``overlays``), ``error``
    is the original error. The parquet thread hands overlays on to the overlay thread, so it can meet the
    overlay thread's failure: that failure is kept as it is (worker and original error), not wrapped twice,
    so a full disk met by either thread is recognised as one."""

    worker: str
    error: BaseException

    def __init__(self, worker: str, error: BaseException):
        if isinstance(error, BackgroundWriteError):
            worker, error = error.worker, error.error
        super().__init__(
            f"the background {worker} writer failed: {type(error).__name__}: {error}. Rows already in "
            f"complete parts are kept; fix the cause and rerun with resume=true to finish the run."
        )
        self.worker = worker
        self.error = error


class BackgroundWorker:
    """One thread that runs submitted jobs in submission order.

    Args:
        name: what it writes, for messages (``parquet``, ``overlays``).
        max_pending: jobs waiting at most; ``submit`` blocks beyond (back-pressure).
    """

    def __init__(self, name: str, max_pending: int = 4):
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.name = name
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=f"cam-audit-{name}", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is _STOP:
                    return
                if self._error is None:  # after a failure, later jobs are dropped (they may depend on it)
                    function, args, kwargs = job
                    function(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001 -- handed to the main loop by check()
                self._error = error
            finally:
                self._jobs.task_done()

    def check(self) -> None:
        """Raise :class:`BackgroundWriteError` when a job has failed."""
        if self._error is not None:
            raise BackgroundWriteError(self.name, self._error) from self._error

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``function(*args, **kwargs)``; blocks while ``max_pending`` jobs wait. Raises when an
        earlier job failed, or when the worker was closed."""
        self.check()
        if not self._thread.is_alive():
            raise RuntimeError(f"the {self.name} writer is closed")
        while True:  # a bounded wait, so that a worker failing while we block is noticed
            try:
                self._jobs.put((function, args, kwargs), timeout=0.5)
                return
            except queue.Full:
                self.check()

    def drain(self) -> None:
        """Wait until every submitted job has run; raise if one failed."""
        self._jobs.join()
        self.check()

    def close(self, check: bool = True) -> None:
        """Run what is queued, stop the thread; raise if a job failed (unless ``check`` is False, for a run
        that is already stopping with another error)."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()
        if check:
            self.check()
