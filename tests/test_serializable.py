"""A ``with`` block is serializable (SPEC section 11), for the code people write.

Each pattern of ``tests/patterns.py`` increments one counter in ``with`` blocks under
``retry_on_conflict``: in 4 processes on one shared table (2 committing every write at
once, 2 batching), and in 4 threads of one process on every backend and mode.  No
increment may be lost: the counter ends at the number of increments, and the table
holds one entry per increment.  A block's writes are contiguous: no other process's
entry lands between the entries of one block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Storage, retry_on_conflict
from backends import Backend, SqlBackend
from helpers import run_threads
from patterns import PATTERNS, bump, count, prepare
from sharedlib import Peers

WORKERS = 4
#: increments per process or thread
TIMES = 60


@pytest.fixture
def peers(place: SqlBackend, tmp_path: Path) -> Iterator[Peers]:
    with Peers(place, tmp_path, "appendmuch-serializable") as made:
        yield made


def stored_increments(place: SqlBackend, field: str) -> int:
    """Rows of ``field`` in namespace ``hot`` (the starting value's excluded)."""
    return sum(row[1] == "hot" and row[2] == field for row in place.rows())


@pytest.mark.parametrize("pattern", PATTERNS)
def test_processes_lose_no_increment(place: SqlBackend, peers: Peers, pattern: str) -> None:
    """4 processes bump one counter: every increment lands, once.  And after a conflict
    a thread's blocks take the write lease as they begin (for a second), so they cannot
    conflict again: the processes conflict on a few blocks, not on most of them (nine
    in ten without it, each costing a round)."""
    store = place.open(shared=True)
    try:
        prepare(store.storage("hot"))
        store.flush()
        workers = [peers.start(shared=True, write_through=i % 2 == 0) for i in range(WORKERS)]
        for worker in workers:
            worker.begin("bump", ns=["hot"], pattern=pattern, times=TIMES)
        conflicts = [worker.end() for worker in workers]
        store.sync()
        assert count(store.storage("hot"), pattern) == WORKERS * TIMES, conflicts
        field = {"in_place": "d", "scalar": "i", "new_object": "r", "create_or_bump": "c"}[pattern]
        started = 0 if pattern == "create_or_bump" else 1
        assert stored_increments(place, field) == started + WORKERS * TIMES
        assert sum(conflicts) <= WORKERS * TIMES // 4, conflicts
    finally:
        store.close()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_threads_lose_no_increment(backend: Backend, pattern: str) -> None:
    """Single-writer mode: a block's first write waits while another thread's block
    that writes holds its namespace, after checking its own reads; shared mode checks
    them at the block's end.  Either way, no increment is lost."""
    store = backend.store()
    try:
        hot = store.storage("hot")
        prepare(hot)
        conflicts: list[int] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                conflicts.append(bump(store.storage("hot"), pattern, TIMES))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(WORKERS)]
        run_threads(threads, "a thread hung")
        assert not errors, errors
        assert count(hot, pattern) == WORKERS * TIMES, conflicts
    finally:
        store.close()


def test_a_blocks_writes_are_contiguous(place: SqlBackend, peers: Peers) -> None:
    """Two processes commit blocks of three assignments while two others write plain
    rows as fast as they can: in the table, the three rows of every block have
    consecutive seqs."""
    blockers = [peers.start(shared=True) for _ in range(2)]
    spammers = [peers.start(shared=True) for _ in range(2)]
    for i, peer in enumerate(blockers):
        peer.begin("triple", ns=["t", f"b{i}"], times=40, tag=f"b{i}")
    for i, peer in enumerate(spammers):
        peer.begin("spam", ns=["s", f"p{i}"], times=400)
    for peer in [*blockers, *spammers]:
        peer.end()
    for peer in [*blockers, *spammers]:
        peer("flush")
    blocks: dict[Any, list[int]] = {}
    for seq, dbns, _, value, _, _ in place.rows():
        if dbns.startswith("t/"):
            blocks.setdefault((dbns, bytes(value)), []).append(seq)
    assert len(blocks) == 80
    for key, seqs in blocks.items():
        assert seqs == list(range(seqs[0], seqs[0] + 3)), (key, seqs)


def test_nested_blocks_on_several_namespaces_in_any_order_never_deadlock(
    backend: Backend,
) -> None:
    """4 threads each move one unit between two namespaces' counters, half of them
    nesting ``with a: with b:``, half ``with b: with a:``: every thread ends, and the
    sum is kept (every move was whole)."""
    store = backend.store()
    try:
        a, b = store.storage("acct", "a"), store.storage("acct", "b")
        a.n, b.n = 1000, 1000
        errors: list[BaseException] = []

        @retry_on_conflict(attempts=1000)
        def move(first: Storage, second: Storage, amount: int) -> None:
            with first:
                with second:
                    first.n = first.n - amount
                    second.n = second.n + amount

        def work(number: int) -> None:
            try:
                mine = [store.storage("acct", "a"), store.storage("acct", "b")]
                if number % 2:
                    mine.reverse()
                for i in range(TIMES):
                    move(mine[0], mine[1], 1 + (i + number) % 3)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(WORKERS)]
        run_threads(threads, "a thread hung: a deadlock")
        assert not errors, errors
        store.flush()
        assert a.n + b.n == 2000
        moved = sum(
            (1 + (i + n) % 3) * (1 if n % 2 == 0 else -1)
            for n in range(WORKERS)
            for i in range(TIMES)
        )
        assert (a.n, b.n) == (1000 - moved, 1000 + moved)
    finally:
        store.close()
