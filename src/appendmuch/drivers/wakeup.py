"""Waking a driver's background thread, and waiting for its answer, in ways a Ctrl-C
cannot leave half done.

A ``KeyboardInterrupt`` lands in the application's (main) thread between any two
bytecodes.  ``threading.Event`` and ``Condition`` are Python code around several lock
operations, so an interrupt inside ``set()`` or ``wait()`` can leave their inner lock
held, or release it twice.  The application's side of everything here is one C-level
step (a write to a pipe, a lock acquire), so it either happened or did not.

>>> bell = Doorbell()
>>> bell.ring(); bell.wait(0.0)
True
>>> bell.wait(0.0)
False
>>> answer = Answer()
>>> answer.give(42)
>>> answer.take(1.0)
42
"""

from __future__ import annotations

import _thread
import contextlib
import os
import select
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Answer", "Doorbell", "Flag", "Worker"]


class Doorbell:
    """A wake-up for a thread that waits in ``select()``: :meth:`ring` from any thread.

    Rings before the wait are not lost (they stay in a pipe), and many rings wake it
    once.  ``fileno()`` can be selected on together with other sockets (a database
    connection's notifications)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        # (closed with the object: a process opening many drivers runs out of nothing)
        self._closer = weakref.finalize(self, _close_fds, self._read, self._write)

    def fileno(self) -> int:
        return self._read

    def ring(self) -> None:
        """Wake the waiting thread (now, or at its next wait).  O(1), one syscall."""
        with contextlib.suppress(BlockingIOError, OSError):  # full: it rings already
            os.write(self._write, b"\0")

    def clear(self) -> bool:
        """Forget the rings so far; whether there were any."""
        rung = False
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read, 4096):
                rung = True
        return rung

    def wait(self, timeout: float, *others: int) -> bool:
        """Wait until rung, one of ``others`` is readable, or ``timeout`` passed;
        whether it was rung (the rings are cleared)."""
        poller = select.poll()  # (no limit on descriptor numbers, unlike select())
        for fd in (self._read, *others):
            poller.register(fd, select.POLLIN)
        with contextlib.suppress(InterruptedError, OSError, ValueError):
            poller.poll(max(timeout, 0.0) * 1000.0)
        return self.clear()

    def close(self) -> None:
        self._closer()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Answer:
    """The outcome of one request to a background thread: a value or an exception,
    given once by that thread and taken by the thread that asked.

    The asking thread waits on a C lock: a Ctrl-C interrupts the wait cleanly, and the
    background thread still finishes the request and gives its answer to nobody."""

    __slots__ = ("_error", "_ready", "_value")

    def __init__(self) -> None:
        self._ready = _thread.allocate_lock()
        self._ready.acquire()
        self._value: Any = None
        self._error: BaseException | None = None

    def give(self, value: Any = None, error: BaseException | None = None) -> None:
        """The background thread's side (once)."""
        self._value, self._error = value, error
        self._ready.release()

    def take(self, timeout: float) -> Any:
        """Wait up to ``timeout`` seconds (-1: no limit); return the value or raise the
        exception given.  Raises :class:`TimeoutError` when no answer came in time."""
        if not self._ready.acquire(timeout=timeout):
            raise TimeoutError(f"no answer within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value


class Flag:
    """A one-way switch (a driver's "stop"): set from any thread by one assignment,
    which also rings the background thread's doorbell so that it notices at once."""

    __slots__ = ("_bell", "_set")

    def __init__(self, bell: Doorbell) -> None:
        self._bell = bell
        self._set = False

    def set(self) -> None:
        self._set = True
        self._bell.ring()

    def is_set(self) -> bool:
        return self._set


class Worker:
    """A daemon thread that other threads can ask whether it still runs, and wait for,
    without ``Thread.is_alive()`` and ``Thread.join()``: an interrupt inside those (in
    CPython 3.11, right after their lock probe) releases the running thread's own
    state lock and marks it stopped while it runs on."""

    __slots__ = ("_done", "finished", "thread")

    def __init__(self, target: Callable[..., Any], args: tuple[Any, ...], name: str) -> None:
        #: set by the thread itself as it ends (the one truth about whether it runs)
        self.finished = False
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.thread = threading.Thread(
            target=self._run, args=(target, args), name=name, daemon=True
        )

    def _run(self, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            target(*args)
        finally:
            self.finished = True
            self._done.release()

    def start(self) -> None:
        self.thread.start()

    @property
    def ident(self) -> int | None:
        return self.thread.ident

    @property
    def name(self) -> str:
        return self.thread.name

    def alive(self) -> bool:
        """Started and not finished."""
        return self.thread.ident is not None and not self.finished

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end; whether it did."""
        if self.finished:
            return True
        if self._done.acquire(timeout=timeout):
            self._done.release()
        return self.finished
