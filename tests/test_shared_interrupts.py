"""Ctrl-C (KeyboardInterrupt) in shared mode, with a second writer in another process.

In shared mode the application's thread only queues rows, changes its cache and waits
for the driver's engine thread; every database call is the engine's, and no signal
ever lands there.  What an interrupt can cut short is the application's side:
encoding, the cache, the outbox, a ``with`` block's bookkeeping, a wait for a commit.
After every interrupt:

- the other process can write at once (no lease is left held: it would wait for it);
- every acknowledged value is stored exactly once;
- this process's cache holds what a fresh reopen loads.

The interrupts come from a trace hook (at each line of the package the application's
thread runs, in turn) and from SIGALRM while a write, a block or a flush waits for the
lease another writer holds.
"""

from __future__ import annotations

import fcntl
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

import appendmuch
from appendmuch import Store
from appendmuch.drivers.sharing import Engine
from appendmuch.shared import SharedSide
from backends import SqlBackend
from helpers import in_gc_callback, interrupted
from sharedlib import PeerProcess, Peers, history_lines
from test_interrupts import Ledger, not_interruptible, stored_rows

PACKAGE = str(Path(appendmuch.__file__).parent)
#: interrupts while waiting for the lease, per backend
LEASE_WAITS = 21


@pytest.fixture
def peer(place: SqlBackend, tmp_path: Path) -> Iterator[PeerProcess]:
    """A second shared writer in its own process (every write committed at once)."""
    made = Peers(place, tmp_path, "appendmuch-shared-peer", shared=True, write_through=True)
    try:
        yield made.start()
    finally:
        made.kill()


@pytest.fixture
def opened(place: SqlBackend, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    made: list[Store] = []

    def open_store(**kwargs: Any) -> Store:
        kwargs.setdefault("recovery_dir", tmp_path)
        store = place.open(shared=True, **kwargs)
        made.append(store)
        return store

    yield open_store
    for store in made:
        store.close()


#: where each interrupt was injected (file:line), for the failure messages
INJECTED: list[str] = []


def interrupt_in_package(k: int) -> Callable[[FrameType, str, Any], Any]:
    """A trace function raising KeyboardInterrupt at the k-th line of the package run
    in this thread (where a real signal could land)."""
    seen = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and not not_interruptible(frame) and not in_gc_callback(frame):
            seen[0] += 1
            if seen[0] == k:
                where = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
                INJECTED.append(where)
                raise KeyboardInterrupt(f"injected at line {k} ({where})")
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(PACKAGE) else None

    return calls


class Book(Ledger):
    """The ledger, plus the values of ``with`` blocks (field ``m``) that exited
    normally, and those whose exit was interrupted (stored at most once)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[int] = []
        self.cut: list[int] = []

    def check_all(self, place: SqlBackend, store: Store, opened: Callable[..., Store]) -> None:
        """After a flush: the ledger and the blocks hold in the table, and a fresh
        Store loads the same cache."""
        store.flush()
        self.check(place, store)
        self.check_blocks(place, store)
        fresh = opened()
        check_cache(store, fresh)
        fresh.close()

    def check_blocks(self, place: SqlBackend, store: Store) -> None:
        stored = [
            store.codec.decode(row[3])["k"]
            for row in stored_rows(place)
            if row[2] == "m" and row[3] is not None
        ]
        assert len(stored) == len(set(stored)), "a with block was saved twice"
        missing = sorted(set(self.blocks) - set(stored))
        assert not missing, f"acknowledged with blocks lost: {missing[:10]}"
        assert set(stored) <= set(self.blocks) | set(self.cut)


def block(s: Any, value: int) -> None:
    """A ``with`` block changing a mutable value (committed at its exit)."""
    with s:
        current = s.get("m")
        if isinstance(current, dict):
            current["k"] = value
        else:
            s.m = {"k": value}


def cycle(store: Store, book: Book, base: int) -> None:
    """Plain writes, a ``with`` block, an overwrite, a flush."""
    s = store.storage("i")
    for j in range(4):
        s.v = base + j
        book.plain.append(base + j)
    book.cut.append(base + 10)
    block(s, base + 10)
    book.blocks.append(book.cut.pop())
    book.tried.append(base)
    s.r_x = base
    book.latest = base
    store.flush()


def check_cache(store: Store, fresh: Store) -> None:
    """The cache holds what a fresh reopen loads, both caught up."""
    store.flush()
    store.sync()
    fresh.sync()
    mine, theirs = history_lines(store), history_lines(fresh)
    if mine != theirs:
        only_mine = sorted(set(mine) - set(theirs))[:3]
        only_theirs = sorted(set(theirs) - set(mine))[:3]
        raise AssertionError(
            f"the cache differs from a fresh reopen: only in the cache {only_mine}, only "
            f"in the reopen {only_theirs} (the last interrupts injected at {INJECTED[-3:]})"
        )


@pytest.mark.slow
class TestEachLineWithAPeer:
    def test_writes_blocks_and_flushes(
        self, place: SqlBackend, peer: PeerProcess, opened: Callable[..., Store]
    ) -> None:
        """The peer commits before each cycle and right after the interrupt; an
        interrupt at each line of the package this thread runs, in turn."""
        store = opened(batch_size=3)
        book = Book()
        k = 0
        while True:
            k += 1
            peer("set", ns=["p"], field="x", value=k)
            reached = interrupted(interrupt_in_package(k), cycle, store, book, 100 * k)
            # no lease left held: the other process writes at once
            peer("set", ns=["p"], field="y", value=k)
            book.check_all(place, store, opened)
            if not reached:
                break
        print(f"{place.kind}-shared: {k - 1} interrupts with a peer survived")
        assert k > 50


class LeaseHolder:
    """Holds the write lease from outside the Store (another open file description of
    the lease file; another PostgreSQL session), as another process would."""

    def __init__(self, place: SqlBackend, store: Store) -> None:
        self.driver = store.driver
        self.place = place
        self._file: Any = None
        self._conn: Any = None

    def take(self) -> None:
        driver: Any = self.driver
        if self.place.kind == "sqlite":
            self._file = open(driver.lease_path, "a+b")  # noqa: SIM115
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        else:
            import psycopg

            self._conn = psycopg.connect(self.place.conninfo, autocommit=True)  # type: ignore[union-attr]
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
        self, place: SqlBackend, peer: PeerProcess, opened: Callable[..., Store]
    ) -> None:
        """Ctrl-C while a write_through assignment, a ``with``-block exit or a flush
        waits for the lease another writer holds: it raises at once, nothing is held
        afterwards (the peer writes), what was queued is committed once (the
        interrupted block at most once), and the next operation succeeds."""
        store = opened(write_through=True)
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
                value = 1000 + 10 * i
                kind = i % 3
                holder.take()
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                try:
                    if kind == 0:
                        s.v = value  # queued, then waits for its commit
                        book.plain.append(value)  # (acknowledged: it was queued)
                    elif kind == 1:
                        book.cut.append(value)
                        block(s, value)
                    else:
                        s.r_x = value
                except KeyboardInterrupt:
                    interrupted += 1
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    holder.give_back()
                peer("set", ns=["p"], field="x", value=i)
                if kind == 1:
                    block(s, value + 1)  # another block: it commits now
                    book.blocks.append(value + 1)
                elif kind == 2:
                    s.r_x = value + 1
                    book.tried.extend((value, value + 1))
                    book.latest = value + 1
                book.check_all(place, store, opened)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        print(f"{place.kind}-shared: {interrupted} interrupts while waiting for the lease")
        assert interrupted == LEASE_WAITS


def raise_on_call(code: CodeType) -> Callable[[FrameType, str, Any], Any]:
    """A trace function raising KeyboardInterrupt as a call of ``code`` begins."""

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is code:
            raise KeyboardInterrupt(f"injected entering {code.co_name}")
        return None

    return calls


class TestCutShortBetweenOutboxAndCache:
    @pytest.mark.parametrize("where", ["before-queueing", "queued-not-cached"])
    def test_the_write_is_finished_or_never_happened(
        self, place: SqlBackend, peer: PeerProcess, opened: Callable[..., Store], where: str
    ) -> None:
        """An assignment interrupted as it queues its row (nothing happened) or right
        after (the row is queued, the cache not changed yet): the next write finishes
        it (the cache gets the entry), and the cache then matches a fresh reopen."""
        store = opened(batch_size=100)
        s = store.storage("i")
        s.v = 1
        store.flush()
        code = (
            Engine.queue.__code__ if where == "before-queueing" else SharedSide.append_own.__code__
        )
        sys.settrace(raise_on_call(code))
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
        expected = [1, 3] if where == "before-queueing" else [1, 2, 3]
        assert [value.data for value in store.storage("i").__history__()["v"]] == expected
