"""Ctrl-C (KeyboardInterrupt) in shared mode, with a second writer in another process.

What tests/test_interrupts.py checks on every backend (no acknowledged row lost or
written twice, no hang) is checked here against what only shared mode has: the write
lease, catching up on the other writer's rows, renumbering rows whose commit was cut
short after the other writer took their seqs, and ``with``-block exits under the lease.
After every interrupt:

- the other process can write at once (the lease is not left held by nobody: it waits
  for the lease, and a lease nobody gives back would keep it waiting for ever);
- every acknowledged value is stored exactly once;
- this process's cache holds what a fresh reopen loads (apart from the interrupted
  assignment itself, see :func:`check_cache`).

The interrupts come from a trace hook (at each line of the drivers and of the Store's
catch-up code in turn) and from SIGALRM while a write waits for the lease.
"""

from __future__ import annotations

import fcntl
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from appendmuch import Store
from sharedlib import PeerProcess, Place, history_lines
from test_interrupts import DRIVERS, HOLD, Ledger, at_with_exit, stored_rows

KINDS = ["sqlite", "postgresql"]
#: the Store's shared-mode catch-up code, interrupted at each line too
CATCH_UP = {Store._take_rows.__code__, Store._resequence.__code__, Store._load.__code__}
#: interrupts while waiting for the lease, per backend
LEASE_WAITS = 20


@pytest.fixture(params=KINDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    made = Place(request.param, tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def peer(place: Place, tmp_path: Path) -> Iterator[PeerProcess]:
    """A second shared writer in its own process (every write committed at once)."""
    started = PeerProcess(
        place.location("appendmuch-shared-peer-0"),
        tmp_path / "peer.stderr",
        "appendmuch-shared-peer-0",
        shared=True,
        write_through=True,
    )
    try:
        yield started
    finally:
        started.kill()


@pytest.fixture
def opened(place: Place, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    made: list[Store] = []

    def open_store(**kwargs: Any) -> Store:
        kwargs.setdefault("recovery_dir", tmp_path)
        store = place.store(shared=True, **kwargs)
        made.append(store)
        return store

    yield open_store
    for store in made:
        store.close()


def interrupt_at(k: int) -> Callable[[FrameType, str, Any], Any]:
    """KeyboardInterrupt at the k-th line run in the drivers or the Store's catch-up."""
    seen = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and not at_with_exit(frame):
            seen[0] += 1
            if seen[0] == k:
                raise KeyboardInterrupt(f"injected at line {k}")
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        return local if code.co_filename.startswith(DRIVERS) or code in CATCH_UP else None

    return calls


class Book(Ledger):
    """The ledger, plus the values of ``with`` blocks (field ``m``) that exited
    normally, and every value whose assignment was interrupted."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[int] = []
        self.interrupted: set[int] = set()

    def check_blocks(self, place: Place, store: Store) -> None:
        stored = [
            store.codec.decode(row[3])["k"]
            for row in stored_rows(place.backend)
            if row[2] == "m" and row[3] is not None
        ]
        assert len(stored) == len(set(stored)), "a with block was saved twice"
        missing = sorted(set(self.blocks) - set(stored))
        assert not missing, f"acknowledged with blocks lost: {missing[:10]}"


def cycle(store: Store, book: Book, base: int) -> None:
    """A batch and a half of plain writes, a ``with`` block, an overwrite, a flush."""
    s = store.storage("i")
    for j in range(4):
        book.interrupted.add(base + j)
        s.v = base + j
        book.interrupted.discard(base + j)
        book.plain.append(base + j)
    book.interrupted.add(base + 10)
    block(s, base + 10)
    book.interrupted.discard(base + 10)
    book.blocks.append(base + 10)
    book.tried.append(base)
    book.interrupted.add(base)
    s.r_x = base
    book.interrupted.discard(base)
    book.latest = base
    store.flush()


def check_cache(store: Store, fresh: Store) -> None:
    """The cache holds what a fresh reopen loads, both caught up.

    No difference is allowed: an assignment interrupted between the Store changing
    its cache and the driver queueing the row leaves an entry that is never written
    (under a seq that another process then takes), so the next write reloads the
    cache."""
    store.sync()
    fresh.sync()
    mine, theirs = history_lines(store), history_lines(fresh)
    if mine != theirs:
        only_mine = sorted(set(mine) - set(theirs))[:3]
        only_theirs = sorted(set(theirs) - set(mine))[:3]
        raise AssertionError(
            f"the cache differs from a fresh reopen: only in the cache {only_mine}, only "
            f"in the reopen {only_theirs}"
        )


class TestEachLineWithAPeer:
    def test_writes_blocks_and_catch_up(
        self, place: Place, peer: PeerProcess, opened: Callable[..., Store]
    ) -> None:
        """The peer commits before each cycle (so taking the lease catches up on its
        rows) and right after the interrupt (so rows cut short in a commit are
        renumbered after its); an interrupt at each line in turn."""
        store = opened(batch_size=3, batch_interval=HOLD)
        book = Book()
        k = 0
        renumbered = 0
        while True:
            k += 1
            peer("set", ns=["p"], field="x", value=k)
            sys.settrace(interrupt_at(k))
            try:
                cycle(store, book, 100 * k)
                reached = False
            except KeyboardInterrupt:
                reached = True
            finally:
                sys.settrace(None)
            queued = store.driver.pending
            # the lease is not left held: the other process writes at once
            peer("set", ns=["p"], field="y", value=k)
            store.flush()
            renumbered += bool(queued)
            book.check(place.backend, store)
            book.check_blocks(place, store)
            fresh = opened()
            check_cache(store, fresh)
            fresh.close()
            if not reached:
                break
        print(
            f"{place.kind}-shared: {k - 1} interrupts with a peer survived "
            f"({renumbered} left rows queued when the peer wrote)"
        )
        assert k > 1


class LeaseHolder:
    """Holds the write lease from outside the Store (another open file description of
    the lease file; another PostgreSQL session), as another process would."""

    def __init__(self, place: Place, store: Store) -> None:
        self.driver = store.driver
        self.place = place
        self._file: Any = None
        self._conn: Any = None

    def take(self) -> None:
        driver: Any = self.driver
        if self.place.kind == "sqlite":
            self._file = open(driver.lock_path[: -len(".lock")] + ".lease", "a+b")  # noqa: SIM115
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        else:
            import psycopg

            self._conn = psycopg.connect(self.place.backend.conninfo, autocommit=True)  # type: ignore[union-attr]
            self._conn.execute("SELECT pg_advisory_lock(%s)", (driver._lease_key,))

    def give_back(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class TestWaitingForTheLease:
    def test_interrupted_while_waiting(
        self, place: Place, peer: PeerProcess, opened: Callable[..., Store]
    ) -> None:
        """Ctrl-C while a write, a ``with``-block exit or a flush waits for the lease
        another writer holds: it raises, nothing is held afterwards (the peer writes),
        and the same operation then succeeds."""
        store = opened(batch_size=3, batch_interval=HOLD)
        store.flush()
        book = Book()
        holder = LeaseHolder(place, store)
        s = store.storage("i")

        def alarm(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt("SIGALRM while waiting for the lease")

        previous = signal.signal(signal.SIGALRM, alarm)
        interrupted = 0
        try:
            for i in range(LEASE_WAITS):
                value = 1000 + i
                operations: list[Callable[[], None]] = [
                    lambda: setattr(s, "v", value),
                    lambda: block(s, value),
                    lambda: setattr(s, "r_x", value),
                ]
                operation = operations[i % len(operations)]
                holder.take()
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                try:
                    operation()
                except KeyboardInterrupt:
                    interrupted += 1
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    holder.give_back()
                peer("set", ns=["p"], field="x", value=i)
                operation()  # the same write again: it succeeds now
                if i % 3 == 0:
                    book.plain.append(value)
                elif i % 3 == 1:
                    book.blocks.append(value)
                else:
                    book.tried.append(value)
                    book.latest = value
                store.flush()
                book.check(place.backend, store)
                book.check_blocks(place, store)
                fresh = opened()
                check_cache(store, fresh)
                fresh.close()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        print(f"{place.kind}-shared: {interrupted} interrupts while waiting for the lease")
        assert interrupted == LEASE_WAITS


def block(s: Any, value: int) -> None:
    """A ``with`` block changing a mutable value (saved under the lease at its exit)."""
    with s:
        current = s.get("m")
        if isinstance(current, dict):
            current["k"] = value
        else:
            s.m = {"k": value}
