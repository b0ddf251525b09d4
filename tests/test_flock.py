"""appendmuch.drivers.flock: an exclusive flock with a timeout, on real files."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from appendmuch.drivers.flock import lock_exclusive


def _is_free(path: Path) -> bool:
    """Whether a new open file description can take the lock at once (then let go)."""
    with open(path, "a+b") as probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
        return True


def _waiter_threads() -> int:
    return sum(t.name == "appendmuch-lease-wait" for t in threading.enumerate())


def _until(condition: object, what: str) -> None:
    """Wait (bounded) for something another thread does."""
    deadline = time.monotonic() + 10
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.001)


def test_a_free_lock_is_taken_on_the_file_given(tmp_path: Path) -> None:
    path = tmp_path / "x.lease"
    with open(path, "a+b") as current:
        assert lock_exclusive(current, 1.0) is current
        assert not _is_free(path)
        fcntl.flock(current.fileno(), fcntl.LOCK_UN)
    assert _is_free(path)


def test_a_held_lock_times_out_and_is_not_taken_later(tmp_path: Path) -> None:
    path = tmp_path / "x.lease"
    before = _waiter_threads()
    with open(path, "a+b") as holder, open(path, "a+b") as current:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match=r"not granted within 0\.2 s"):
            lock_exclusive(current, 0.2)
        fcntl.flock(holder.fileno(), fcntl.LOCK_UN)
        # the abandoned waiter may be granted the lock now: it must let it go at once,
        # so a new wait gets it (a waiter that kept it would make this time out)
        with open(path, "a+b") as other:
            held = lock_exclusive(other, 10)
            held.close()
        _until(lambda: _waiter_threads() == before, "the abandoned waiter to end")
        assert _is_free(path)


def test_a_lock_let_go_while_waiting_is_handed_over_on_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "x.lease"
    got: list[IO[bytes]] = []
    with open(path, "a+b") as holder, open(path, "a+b") as current:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        before = _waiter_threads()
        taker = threading.Thread(target=lambda: got.append(lock_exclusive(current, 30)))
        taker.start()
        _until(lambda: _waiter_threads() > before, "the wait to start")
        fcntl.flock(holder.fileno(), fcntl.LOCK_UN)
        taker.join(30)
        assert not taker.is_alive()
        (held,) = got
        assert held is not current and not held.closed
        assert not _is_free(path)  # held by the new file ...
        held.close()
        assert _is_free(path)  # ... and closing it lets go
