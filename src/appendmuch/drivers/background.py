"""The background thread of a SQL driver: the flusher, and work handed to it.

Every SQL driver runs one thread of its own.  Outside shared mode it is the *flusher*
(:func:`flusher_loop`): it writes a batch whose oldest row waited long enough, so no
row waits much past ``batch_interval`` even when the application stops writing.  In
shared mode it runs the engine instead (:func:`appendmuch.drivers.sharing.run`).

Where the driver keeps its writer connection in that thread (PostgreSQL, and every
driver in shared mode), other threads hand it their writes and flushes
(:meth:`BackgroundThread.in_writer`) and wait for the answer: a Ctrl-C in the
application then never lands inside the database library.  Stopping the thread is
bounded (``close()`` raises WriteError rather than hang).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..errors import WriteError
from .base import close_unattended
from .sharing import run
from .wakeup import Answer, Doorbell, Flag, Worker

if TYPE_CHECKING:
    from .batching import Pending
    from .sharing import Engine
    from .sql import SQLDriver

__all__ = ["BackgroundThread", "flusher_loop"]

_T = TypeVar("_T")

#: a thread waiting for the background thread checks this often that it still runs
_ASK_STEP = 0.5


class BackgroundThread:
    """The background-thread methods of :class:`~appendmuch.drivers.sql.SQLDriver`
    (a mixin: ``self`` is the driver)."""

    #: the writer connection is used by the background thread only: writes and
    #: flushes of other threads are handed to it (:meth:`in_writer`), so that a
    #: Ctrl-C in the application never lands inside the database library
    _background_io = False

    def _init_background(self) -> None:
        #: wakes the background thread (work handed over, a lease taken, stop)
        self._bell = Doorbell()
        self._stop = Flag(self._bell)
        #: work other threads handed to the background thread, with their answers
        self._requests: deque[tuple[Callable[[], Any], Answer]] = deque()
        self._flusher: Worker | None = None
        #: whether the atexit hook that writes rows queued through the driver alone is set
        self._exit_hook = False

    def _start_flusher(self) -> None:
        """Start the background thread (the flusher, or shared mode's engine)."""
        ref = weakref.ref(cast("SQLDriver", self))
        if not self._exit_hook:
            # Rows queued through the driver alone (no Store) are written at exit too.
            atexit.register(_close_at_exit, ref)
            self._exit_hook = True
        # A stop flag of its own: a flusher being stopped can never be revived (and
        # one whose start was cut short, and so never noted, stops now).
        self._stop.set()
        self._stop = stop = Flag(self._bell)
        if self.sharing is not None:
            worker = Worker(run, (ref, stop, self._bell), f"appendmuch-shared:{self.table}")
        else:
            tick = self.batch_interval / 4
            worker = Worker(
                flusher_loop,
                (ref, stop, self._bell, self.batch_interval, tick),
                f"appendmuch-flusher:{self.table}",
            )
        worker.start()
        self._flusher = worker

    def _stop_background(self) -> None:
        """Stop the background thread (it ends the work under way first)."""
        self._stop.set()
        worker = self._flusher
        if (
            worker is not None
            and worker.ident != threading.get_ident()
            and not worker.join(self._patience())
        ):
            raise WriteError(
                f"cannot close {self.where()}: the background writer did not stop "
                f"within {self._patience():.0f} s; {self.pending} rows stay queued"
            )
        # Forgotten only once it ended: until then in_writer() hands work to it, and
        # nothing else may touch its connections (an interrupted join leaves it known).
        if self._flusher is worker:
            self._flusher = None

    def in_writer(self, work: Callable[[], _T]) -> _T:
        """Package-internal: run ``work`` in the background thread and return (or
        raise) what it did, where the driver keeps its writer connection there
        (:attr:`_background_io`); otherwise, or when that thread is not running, in
        this thread.

        Waiting is a C-level lock acquire: a Ctrl-C ends the wait at once, and the
        background thread still finishes the work (its outcome then reaches nobody)."""
        worker = self._flusher
        if (
            not self._background_io
            or worker is None
            or not worker.alive()
            or worker.ident == threading.get_ident()
        ):
            return work()
        answer = Answer()
        request = (work, answer)
        self._requests.append(request)
        self._bell.ring()
        while True:
            try:
                value: _T = answer.take(_ASK_STEP)
                return value
            except TimeoutError:
                if worker.alive():
                    continue
                try:
                    self._requests.remove(request)  # (it ended before taking it up)
                except ValueError:
                    late: _T = answer.take(_ASK_STEP)  # taken up just before it ended
                    return late
                return work()

    def serve(self) -> None:
        """Package-internal (the background thread): do the work other threads handed
        over, in order."""
        requests = self._requests
        while requests:
            try:
                work, answer = requests.popleft()
            except IndexError:
                return
            try:
                value = work()
            except BaseException as exc:  # handed to the thread that asked
                answer.give(error=exc)
            else:
                answer.give(value)

    def flush_if_due(self, stop: Flag, interval: float) -> None:
        """Package-internal (the flusher): write the queue when its oldest row waited
        half of ``interval`` or a sent batch awaits its commit, unless a write failed
        less than ``retry_interval`` ago or ``stop`` is set."""
        failed_at = self._failed_at
        oldest = self._pending.oldest_time()
        due = self._inflight() or (oldest is not None and time.time() - oldest >= interval / 2)
        if due and (failed_at is None or time.monotonic() - failed_at >= self.retry_interval):
            with self._lock:
                if not stop.is_set():
                    self._flush_locked()

    if TYPE_CHECKING:  # the driver's own
        table: str
        batch_interval: float
        retry_interval: float
        sharing: Engine | None
        _failed_at: float | None
        _pending: Pending
        _lock: threading.RLock

        @property
        def pending(self) -> int: ...

        def where(self) -> str: ...

        def _patience(self) -> float: ...

        def _inflight(self) -> int: ...

        def _flush_locked(self) -> None: ...


def _close_at_exit(ref: weakref.ref[SQLDriver]) -> None:
    driver = ref()
    if driver is not None and driver.pending:
        close_unattended(driver.close, repr(driver))


def flusher_loop(
    ref: weakref.ref[SQLDriver],
    stop: Flag,
    bell: Doorbell,
    interval: float,
    tick: float,
) -> None:
    """Write batches whose oldest row is older than half the interval, and do the work
    other threads hand over (:meth:`BackgroundThread.in_writer`).

    Wakes four times per interval, so no row waits much past ``interval`` even when
    the application stops writing, and at once when its doorbell rings (work handed
    over, stop); after a failure it waits ``retry_interval``.  Holds only a weak
    reference: a driver nobody uses any more is collected and the thread ends.  It
    never starts another flusher, and stops for good once ``stop`` is set (after doing
    the work handed over before).  (Shared mode runs :func:`sharing.run` instead.)
    """
    pause = tick
    while True:
        bell.wait(pause)
        driver = ref()
        if driver is None:
            return
        driver.serve()
        if stop.is_set():
            return
        retry = driver.retry_interval
        try:
            driver.flush_if_due(stop, interval)
        except BaseException as exc:  # the rows stay queued; the
            # application sees the error at its next flush or full batch
            driver.last_error = exc if isinstance(exc, Exception) else WriteError(repr(exc))
            pause = max(retry, tick)
        else:
            pause = tick
        del driver
