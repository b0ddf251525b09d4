"""An exclusive ``flock`` that can be waited for with a timeout (SQLite's write lease).

``flock`` either fails at once (``LOCK_NB``) or blocks without a limit.  A contended
wait therefore runs in a short-lived thread on a file object of its own (its own open
file description, so its lock is independent of every other descriptor of the file):
the caller waits for that thread with a timeout, and a wait given up (timed out or
interrupted) closes the file as soon as the lock is granted, which releases it.  The
kernel wakes the thread the moment the holder lets go, so a hand-over costs no polling.
"""

from __future__ import annotations

import fcntl
import threading
from typing import IO

__all__ = ["Waits", "lock_exclusive"]


class Waits:
    """The lock waits under way on behalf of one owner, which can cancel them all."""

    def __init__(self) -> None:
        self._waiters: set[_Waiter] = set()
        self._guard = threading.Lock()

    def cancel(self) -> None:
        """Make every wait under way raise :class:`InterruptedError` now."""
        with self._guard:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.cancel()


def lock_exclusive(current: IO[bytes], timeout: float, waits: Waits | None = None) -> IO[bytes]:
    """An open file of ``current``'s path that holds an exclusive ``flock`` on it.

    ``current`` itself when the lock is free; otherwise a new file object, once the
    holder lets go (the caller adopts it and closes ``current``).  Raises
    :class:`TimeoutError` after ``timeout`` seconds, :class:`InterruptedError` when
    ``waits`` is cancelled; on any failure nothing is held.
    """
    try:
        fcntl.flock(current.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return current
    except BlockingIOError:
        pass
    waiter = _Waiter(current.name)
    try:
        if waits is None:
            return waiter.wait(timeout)
        with waits._guard:
            waits._waiters.add(waiter)
        try:
            return waiter.wait(timeout)
        finally:
            with waits._guard:
                waits._waiters.discard(waiter)
    except BaseException:
        # (cut short, by Ctrl-C say, before or after waiting: a lock granted to the
        # waiting thread now or later is released, never held by nobody)
        waiter.abandon()
        raise


class _Waiter:
    """One blocking ``flock`` in a thread of its own, which can be given up."""

    def __init__(self, path: str | bytes | int) -> None:
        self.file: IO[bytes] = open(path, "a+b")  # noqa: SIM115 - handed to the caller
        self.guard = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False
        self.cancelled = False
        #: set when the lock is granted (or the wait failed), or on cancel()
        self.wake = threading.Event()
        self.error: OSError | None = None
        threading.Thread(target=self._run, name="appendmuch-lease-wait", daemon=True).start()

    def _run(self) -> None:
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
        except OSError as exc:
            self.error = exc
        with self.guard:
            if self.abandoned or self.error is not None:
                self.file.close()  # (releases the lock, if it was granted)
            self.done.set()
        self.wake.set()

    def abandon(self) -> None:
        """Its caller is gone: release the lock if it was granted, or once it is."""
        with self.guard:
            if self.done.is_set():
                self.file.close()
            else:
                self.abandoned = True

    def cancel(self) -> None:
        self.cancelled = True
        self.wake.set()

    def wait(self, timeout: float) -> IO[bytes]:
        granted = False
        try:
            self.wake.wait(timeout)
            with self.guard:
                if self.cancelled:
                    raise InterruptedError("the wait was cancelled")
                if not self.done.is_set():
                    self.abandoned = True
                    raise TimeoutError(f"not granted within {timeout} s")
                if self.error is not None:
                    raise self.error
                granted = True
                return self.file
        finally:
            if not granted:  # timed out, failed or interrupted: hold nothing
                with self.guard:
                    if self.done.is_set():
                        self.file.close()
                    else:
                        self.abandoned = True
