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

__all__ = ["lock_exclusive"]


def lock_exclusive(current: IO[bytes], timeout: float) -> IO[bytes]:
    """An open file of ``current``'s path that holds an exclusive ``flock`` on it.

    ``current`` itself when the lock is free; otherwise a new file object, once the
    holder lets go (the caller adopts it and closes ``current``).  Raises
    :class:`TimeoutError` after ``timeout`` seconds; on any failure nothing is held.
    """
    try:
        fcntl.flock(current.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return current
    except BlockingIOError:
        pass
    return _Waiter(current.name).wait(timeout)


class _Waiter:
    """One blocking ``flock`` in a thread of its own, which can be given up."""

    def __init__(self, path: str | bytes | int) -> None:
        self.file: IO[bytes] = open(path, "a+b")  # noqa: SIM115 - handed to the caller
        self.guard = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False
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

    def wait(self, timeout: float) -> IO[bytes]:
        granted = False
        try:
            self.done.wait(timeout)
            with self.guard:
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
