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
import functools
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

from appendmuch import Sqlite3, Store
from appendmuch.fieldlog import FieldLog
from sharedfixtures import Peers, shared_place  # noqa: F401  (the fixture place)
from sharedlib import PeerProcess, Place, history_lines
from test_interrupts import DRIVERS, Ledger, interrupt_at, not_interruptible, stored_rows

#: the Store's shared-mode catch-up code, interrupted at each line too
CATCH_UP = {
    Store._take_rows.__code__,
    Store._take_runs.__code__,
    Store._extend_stored.__code__,
    Store._stored_field.__code__,
    Store._decode_taken.__code__,
    FieldLog.extend.__code__,
    Store._resequence.__code__,
    Store._load.__code__,
}
#: the writer's batch interval: its background thread, idle between leases, looks a
#: quarter of it apart for a lease to give back (left unsure by an interrupt)
INTERVAL = 1.0
#: interrupts while waiting for the lease, per backend
LEASE_WAITS = 20


@pytest.fixture
def peer(place: Place, tmp_path: Path) -> Iterator[PeerProcess]:
    """A second shared writer in its own process (every write committed at once)."""
    made = Peers(place, tmp_path, "appendmuch-shared-peer", shared=True, write_through=True)
    try:
        yield made.start()
    finally:
        made.kill()


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
        twice = sorted({line for line in mine if mine.count(line) > 1})[:3]
        raise AssertionError(
            f"the cache differs from a fresh reopen: only in the cache {only_mine}, only "
            f"in the reopen {only_theirs}, twice in the cache {twice}"
        )


class TestEachLineWithAPeer:
    def test_writes_blocks_and_catch_up(
        self, place: Place, peer: PeerProcess, opened: Callable[..., Store]
    ) -> None:
        """The peer commits before each cycle (so taking the lease catches up on its
        rows) and right after the interrupt (so rows cut short in a commit are
        renumbered after its); an interrupt at each line in turn."""
        store = opened(batch_size=3, batch_interval=INTERVAL)
        book = Book()
        k = 0
        renumbered = 0
        while True:
            k += 1
            peer("set", ns=["p"], field="x", value=k)
            sys.settrace(interrupt_at(k, also=CATCH_UP))
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
        store = opened(batch_size=3, batch_interval=INTERVAL)
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
                operations: list[Callable[[int], None]] = [
                    lambda v: setattr(s, "v", v),
                    lambda v: block(s, v),
                    lambda v: setattr(s, "r_x", v),
                ]
                operation = functools.partial(operations[i % len(operations)], value)
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


def raise_on_call(code: CodeType) -> Callable[[FrameType, str, Any], Any]:
    """A trace function raising KeyboardInterrupt as a call of ``code`` begins."""

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is code:
            raise KeyboardInterrupt(f"injected entering {code.co_name}")
        return None

    return calls


#: (function name, file) of the code that takes in rows after a failed commit
RENUMBERING = {
    ("_take_in", "sharing.py"),
    ("_renumber", "sharing.py"),
    ("_resequence", "store.py"),
}


def interrupt_in_renumbering(k: int) -> Callable[[FrameType, str, Any], Any]:
    """KeyboardInterrupt at the k-th line of the renumbering code (and of what it calls
    in the package) to run; a line in a loop counts at its first run only, so that
    reloading a longer log does not make the test longer."""
    seen: set[tuple[CodeType, int]] = set()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and not not_interruptible(frame):
            where = (frame.f_code, frame.f_lineno)
            if where not in seen:
                seen.add(where)
                if len(seen) == k:
                    raise KeyboardInterrupt(f"injected at line {k} of renumbering")
        return local

    def inside(frame: FrameType | None) -> bool:
        while frame is not None:
            code = frame.f_code
            if (code.co_name, Path(code.co_filename).name) in RENUMBERING:
                return True
            frame = frame.f_back
        return False

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        if PACKAGE in frame.f_code.co_filename and inside(frame):
            return local
        return None

    return calls


PACKAGE = str(Path(DRIVERS).parent)


def commit_code(store: Store) -> CodeType:
    """The code a shared-mode commit calls to send a batch (interrupted at its start,
    the commit fails: its rows stay queued, the lease is given back)."""
    if isinstance(store.driver, Sqlite3):
        return Sqlite3._write.__code__
    from appendmuch.drivers.pgpipeline import Pipeline

    return Pipeline.send.__code__


class TestRenumbering:
    def test_cut_short_while_renumbering(
        self, place: Place, peer: PeerProcess, opened: Callable[..., Store]
    ) -> None:
        """A commit fails (rows stay queued, the lease is given back), the peer takes
        their seqs, and the next flush renumbers them after the peer's rows: an
        interrupt at each line of that renumbering in turn loses no row, and the cache
        then matches a fresh reopen."""
        store = opened(batch_size=100, batch_interval=INTERVAL)
        book = Book()
        s = store.storage("i")
        k = 0
        while True:
            k += 1
            with store.driver._lock:  # type: ignore[attr-defined]  # (the flusher waits)
                for j in range(3):
                    s.v = 100 * k + j
                    book.plain.append(100 * k + j)
                sys.settrace(raise_on_call(commit_code(store)))
                try:
                    store.flush()
                except KeyboardInterrupt:
                    pass
                else:
                    raise AssertionError("the commit was not cut short")
                finally:
                    sys.settrace(None)
                assert store.driver.pending == 3
                for j in range(3):
                    peer("set", ns=["p"], field="x", value=100 * k + j)
                sys.settrace(interrupt_in_renumbering(k))
                try:
                    store.flush()
                    reached = False
                except KeyboardInterrupt:
                    reached = True
                finally:
                    sys.settrace(None)
            store.flush()
            book.check(place.backend, store)
            fresh = opened()
            check_cache(store, fresh)
            fresh.close()
            if not reached:
                break
        print(f"{place.kind}-shared: {k - 1} interrupts while renumbering survived")
        assert k > 1


class TestCutShortBeforeQueueing:
    def test_entry_without_its_row(
        self, place: Place, peer: PeerProcess, opened: Callable[..., Store]
    ) -> None:
        """An assignment interrupted after the Store changed its cache, before the
        driver queued the row: the peer then takes that seq for a row of its own.  The
        next write leaves the cache as a fresh reopen loads it (no entry that was never
        written, no two entries under one seq)."""
        store = opened(batch_size=100, batch_interval=INTERVAL)
        s = store.storage("i")
        s.v = 1
        store.flush()
        queue_code = type(store.driver._pending).add.__code__  # type: ignore[attr-defined]
        sys.settrace(raise_on_call(queue_code))
        try:
            s.v = 2
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the assignment was not cut short")
        finally:
            sys.settrace(None)
        peer("set", ns=["p"], field="x", value=1)
        s.v = 3
        store.flush()
        fresh = opened()
        check_cache(store, fresh)
        assert [value.data for value in store.storage("i").__history__()["v"]] == [1, 3]
