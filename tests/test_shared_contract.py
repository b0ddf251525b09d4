"""Shared mode (issue 10): the contract with the log written by two real processes.

The parent test opens a Store in shared mode and drives a second process
(tests/peers/peer.py) writing the same log, on a real SQLite file and on a table of the
session's PostgreSQL server.  Checked: one history, byte for byte, in both processes,
in the database and in a fresh reopen (contract 1); read-your-writes (2); others'
writes arriving without any call (3, waited for with a bound that fails rather than
hangs, never timed); ``on_change`` in seq order, own and others' (4); ``with``-exit
conflicts and ``retry_on_conflict`` (5); replace semantics, ``within``, read-only opens
(6).  ``test_store_matches_model_with_a_peer`` is the hypothesis model test of
tests/test_model.py with part of its operations made by the peer.

The single-process contract suite runs in shared mode too: ``sqlite-shared`` and
``postgresql-shared`` in tests/backends.py ``ALL_FACTORIES`` (the ``backend`` fixture).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule, run_state_machine_as_test

import appendmuch
from appendmuch import Store, within
from appendmuch.errors import AppendmuchError
from backends import SqlBackend
from sharedlib import (
    PATIENCE,
    PeerProcess,
    Peers,
    Seen,
    all_values,
    history_lines,
    is_replace,
    row_lines,
)
from test_model import NAMESPACES, TOMBSTONE, StoreMachine, item_lists, ns_index, small_ints

KINDS = ["sqlite", "postgresql"]


@pytest.fixture
def peers(place: SqlBackend, tmp_path: Path) -> Iterator[Callable[..., PeerProcess]]:
    """Start peers on ``place`` (shared, write-through unless told); all stopped after."""
    made = Peers(place, tmp_path, "appendmuch-shared-peer", shared=True, write_through=True)
    yield made.start
    made.kill()


@pytest.fixture
def writer_and_peer(
    place: SqlBackend, peers: Callable[..., PeerProcess]
) -> Iterator[tuple[Store, PeerProcess]]:
    """A shared write-through Store in this process and one peer beside it; the Store
    is closed after the test (before the peers are stopped)."""
    store = place.open(shared=True, write_through=True)
    peer = peers()
    try:
        yield store, peer
    finally:
        store.close()


def same_everywhere(place: SqlBackend, store: Store, *peers: PeerProcess) -> list[str]:
    """After sync() everywhere: this process, every peer, the database and a fresh
    reopen hold the same history, byte for byte.  Returns it."""
    store.sync()
    mine = history_lines(store)
    for peer in peers:
        peer("sync")
        assert peer("history") == mine
    assert row_lines(place.rows()) == mine
    fresh = place.open(read_only=True)
    try:
        assert history_lines(fresh) == mine
    finally:
        fresh.close()
    seqs = [int(text.split("\t", 1)[0]) for text in mine]
    assert seqs == sorted(set(seqs)), "seqs not unique and increasing"
    return mine


def test_public_names() -> None:
    """ConflictError and retry_on_conflict are public, and ConflictError is ours."""
    assert issubclass(appendmuch.ConflictError, AppendmuchError)
    assert appendmuch.errors.ConflictError is appendmuch.ConflictError
    assert callable(appendmuch.retry_on_conflict)


def test_two_writers_one_history(place: SqlBackend, peers: Callable[..., PeerProcess]) -> None:
    """Interleaved plain writes, deletes, ``with`` appends and replace fields from two
    processes: one order, identical histories everywhere, read-your-writes."""
    seen = Seen()
    store = place.open(seen, shared=True)
    peer = peers()
    try:
        mine, theirs = store.storage("g", "p1"), ["g", "p2"]
        for i in range(12):
            mine.n = i
            assert mine.n == i  # read your own write
            peer("set", ns=theirs, field="n", value=i * 10)
            peer("set", ns=["g", "p1"], field="shared", value=f"peer {i}")
            mine.shared = f"parent {i}"
            assert mine.shared == f"parent {i}"
            with mine:
                items = mine.get("items")
                if isinstance(items, list):
                    items.append(i)
                else:
                    mine.items = [i]
            store.flush()
            peer("sync")
            peer("append", ns=["g", "p1"], field="items", item=-i)
            peer("set", ns=["g", "p1"], field="r_last", value=i)
            store.sync()
            mine.r_last = -i
            if i % 4 == 3:
                del mine.n
                store.flush()
                peer("sync")
                peer("del", ns=theirs, field="n")
        history = same_everywhere(place, store, peer)
        assert mine.shared == "parent 11"
        with mine:
            assert mine.items == [x for i in range(12) for x in (i, -i)]
        # a replaced field holds exactly one row whichever process wrote it
        assert len([row for row in place.rows() if row[2] == "r_last"]) == 1
        assert mine.r_last == -11
        # on_change saw every entry that entered this cache, own and the peer's, by seq
        reported = seen.seqs()
        assert reported == sorted(set(reported)), "on_change not in seq order"
        stored = {int(text.split("\t", 1)[0]) for text in history}
        assert stored <= set(reported), "on_change missed entries"
    finally:
        store.close()


def test_others_writes_arrive_by_themselves(
    place: SqlBackend, peers: Callable[..., PeerProcess]
) -> None:
    """A write committed by one process reaches the other's cache (and on_change)
    without any call; the wait is bounded and fails, it is never timed."""
    seen = Seen()
    store = place.open(seen, shared=True, write_through=True)
    peer = peers()
    try:
        s = store.storage("v")
        waits: list[float] = []
        for i in range(5):
            peer("set", ns=["v"], field="x", value=i)
            returned = time.monotonic()  # the peer's write is committed by now
            target = peer("sync")  # the peer's own high-water mark: its write's seq
            assert seen.wait_for(target, PATIENCE), f"write {target} never arrived"
            waits.append(time.monotonic() - returned)
            assert s.x == i
            s.y = i
            (seq,) = [v.seq for v in s.__history__()["y"][-1:]]
            reply = peer("wait", seq=seq, timeout=PATIENCE)
            assert reply["arrived"], f"the parent's write {seq} never reached the peer"
            history = peer("history")
            assert any(text.startswith(f"{seq}\t") for text in history)
            waits.append(reply["waited"])
        # measured, not asserted (benchmarks/multiprocess.py measures it properly)
        print(f"{place.kind}: arrival waits {', '.join(f'{w * 1000:.1f}' for w in waits)} ms")
        same_everywhere(place, store, peer)
    finally:
        store.close()


def test_conflicting_block_raises_and_writes_nothing(
    place: SqlBackend, writer_and_peer: tuple[Store, PeerProcess]
) -> None:
    """A ``with`` block that read a mutable field which another process then changed:
    its exit raises ConflictError, writes nothing and drops its working copies."""
    store, peer = writer_and_peer
    s = store.storage("c")
    s.items = [0]
    peer("sync")
    before = row_lines(place.rows())
    with pytest.raises(appendmuch.ConflictError), s:
        s.items.append(1)
        peer("append", ns=["c"], field="items", item=2)  # committed elsewhere
    assert row_lines(place.rows())[: len(before)] == before
    assert len(place.rows()) == len(before) + 1  # only the peer's write
    store.sync()
    with s:
        assert s.items == [0, 2]  # the newer value; the stale copy is gone
    same_everywhere(place, store, peer)


def test_reading_block_never_conflicts(
    place: SqlBackend, writer_and_peer: tuple[Store, PeerProcess]
) -> None:
    """A block that only read a field another process then changed writes nothing and
    raises nothing (there is nothing to overwrite)."""
    store, peer = writer_and_peer
    s = store.storage("c")
    s.items = [0]
    peer("sync")
    with s:
        assert s.items == [0]
        peer("append", ns=["c"], field="items", item=1)
    store.sync()
    with s:
        assert s.items == [0, 1]
    same_everywhere(place, store, peer)


def test_block_conflicts_with_a_delete_elsewhere(
    place: SqlBackend, writer_and_peer: tuple[Store, PeerProcess]
) -> None:
    """Another process deleted the field the block changed: ConflictError, and the
    field stays deleted (the stale copy is not written back)."""
    store, peer = writer_and_peer
    s = store.storage("c")
    s.items = [0]
    peer("sync")
    with pytest.raises(appendmuch.ConflictError), s:
        s.items.append(1)
        peer("del", ns=["c"], field="items")
    store.sync()
    assert s.get("items") is None
    assert "items" not in s.__fields__()
    same_everywhere(place, store, peer)


def test_non_conflicting_blocks_both_land(
    place: SqlBackend, writer_and_peer: tuple[Store, PeerProcess]
) -> None:
    """Blocks on different fields never conflict, and plain assignments are
    last-writer-wins in seq order."""
    store, peer = writer_and_peer
    s = store.storage("c")
    s.a, s.b = [0], [0]
    peer("sync")
    with s:
        s.a.append(1)
        peer("append", ns=["c"], field="b", item=2)
        peer("set", ns=["c"], field="plain", value="peer")
        s.plain = "parent"  # later in seq order: wins
    store.sync()
    with s:
        assert (s.a, s.b) == ([0, 1], [0, 2])
    assert s.plain == "parent"
    same_everywhere(place, store, peer)


@pytest.mark.parametrize("form", ["bare", "called"])
def test_retry_on_conflict_reruns_the_block(
    place: SqlBackend, writer_and_peer: tuple[Store, PeerProcess], form: str
) -> None:
    """``@retry_on_conflict`` (bare or with attempts) re-runs a conflicting block; the
    result holds both processes' changes."""
    store, peer = writer_and_peer
    s = store.storage("r")
    s.counter = {"n": 0}
    peer("sync")
    calls = 0

    def bump() -> int:
        nonlocal calls
        calls += 1
        with s:
            s.counter["n"] += 1
            if calls == 1:
                peer("incr", ns=["r"], field="counter")  # a newer write, elsewhere
        return calls

    retry = appendmuch.retry_on_conflict
    wrapped = retry(bump) if form == "bare" else retry(attempts=3)(bump)
    assert wrapped() == 2
    store.sync()
    with s:
        assert s.counter == {"n": 2}
    same_everywhere(place, store, peer)


def test_retry_on_conflict_gives_up_after_attempts(
    place: SqlBackend, writer_and_peer: tuple[Store, PeerProcess]
) -> None:
    """A block that conflicts every time: ConflictError after exactly ``attempts``."""
    store, peer = writer_and_peer
    s = store.storage("r")
    s.counter = {"n": 0}
    peer("sync")
    calls = 0

    @appendmuch.retry_on_conflict(attempts=3)
    def always() -> None:
        nonlocal calls
        calls += 1
        with s:
            s.counter["n"] += 100
            peer("incr", ns=["r"], field="counter")

    with pytest.raises(appendmuch.ConflictError):
        always()
    assert calls == 3
    store.sync()
    with s:
        assert s.counter == {"n": 3}


def test_within_across_processes(
    place: SqlBackend, writer_and_peer: tuple[Store, PeerProcess]
) -> None:
    """Temporal queries see one interleaved log: the description's worked example with
    ``round`` written by one process and ``score`` by the other."""
    store, peer = writer_and_peer
    s = store.storage("game", "p")
    for r, score in ((1, 10), (2, 25), (1, 30)):
        peer("set", ns=["game", "p"], field="round", value=r)
        store.sync()
        s.score = score
    assert within(s, round=1).score == 30
    assert within(s, round=2).score == 25
    assert [v for v, _ in within.along(s, "round")] == [1, 2, 1]
    peer("sync")
    same_everywhere(place, store, peer)


def test_read_only_open_beside_shared_writers(
    place: SqlBackend, peers: Callable[..., PeerProcess]
) -> None:
    """A read-only Store in shared mode opens while shared writers are attached, and
    sees their writes after ``sync()``."""
    peer = peers()
    peer("set", ns=["ro"], field="x", value=1)
    reader = place.open(read_only=True, shared=True)
    try:
        assert reader.storage("ro").x == 1
        peer("set", ns=["ro"], field="x", value=2)
        reader.sync()
        assert reader.storage("ro").x == 2
    finally:
        reader.close()


def test_sync_in_single_writer_mode_returns_at_once(place: SqlBackend) -> None:
    """``sync()`` exists in the default mode too and changes nothing."""
    store = place.open()
    try:
        store.storage("a").x = 1
        before = history_lines(store)
        store.sync()
        assert history_lines(store) == before
    finally:
        store.close()


def test_restart_catches_up_and_continues(
    place: SqlBackend, peers: Callable[..., PeerProcess]
) -> None:
    """A writer that closes and reopens while another keeps writing loads everything
    and its next writes continue the one order."""
    peer = peers()
    store = place.open(shared=True)
    store.storage("a").x = 1
    store.close()
    for i in range(5):
        peer("set", ns=["b"], field="y", value=i)
    store = place.open(shared=True)
    try:
        assert store.storage("b").y == 4
        store.storage("a").x = 2
        store.flush()
        same_everywhere(place, store, peer)
    finally:
        store.close()


# --------------------------------------------------------------------------- the model


class PeerStoreMachine(StoreMachine):
    """The model test's machine, with a second process making some of the writes.

    Before a peer operation the parent flushes (so commit order is the model's order)
    and the peer catches up (``sync``); afterwards the parent either calls ``sync()``
    or waits, bounded, for the write to arrive by itself.  Then every invariant of
    :class:`StoreMachine` compares the parent's cache with the model, and at the end
    the parent, the peer, the database and a fresh reopen must hold one history.
    """

    peer_write_through: ClassVar[bool] = True

    def __init__(self) -> None:
        self.seen = Seen()
        super().__init__()
        self.store.close()
        # (the peer's replace configuration: shared writers of a table must agree on it)
        self.store = self.backend.store(on_change=self.seen.on_change, replace_predicate=is_replace)
        self._attach()
        self.peer = PeerProcess(
            self.backend.location("appendmuch-model-peer"),
            Path(self.tmpdir) / "peer.stderr",
            shared=True,
            write_through=self.peer_write_through,
        )

    def teardown(self) -> None:
        try:
            self.store.flush()
            self.store.sync()
            mine = history_lines(self.store)
            self.peer("sync")
            assert self.peer("history") == mine, "the peer holds another history"
            fresh = Store(self.backend.driver(read_only=True))
            try:
                assert history_lines(fresh) == mine, "a fresh reopen loads another history"
            finally:
                fresh.close()
            self.peer.close()
        finally:
            self.peer.kill()
            super().teardown()

    @rule()
    def reopen(self) -> None:
        """Close this process's Store and open a new one (the peer keeps its own)."""
        self.store.close()
        self.store = self.backend.store(on_change=self.seen.on_change, replace_predicate=is_replace)
        self.seen.start_at(max((v.seq for v in all_values(self.store)), default=0))
        self.model.reopened()
        self._attach()

    def set_entry(self, ns: int, value: Any) -> None:  # type: ignore[override]
        """Not a rule here: the peer's codec has no registration for entry values."""

    def _peer(self, op: str, ns: int, **args: Any) -> None:
        self.store.flush()
        self.peer("sync")
        self.peer(op, ns=list(NAMESPACES[ns]), **args)
        if not self.peer_write_through:
            self.peer("flush")
        target = self.peer("sync")
        if target % 2:
            self.store.sync()
        else:
            assert self.seen.wait_for(target, PATIENCE), f"seq {target} never arrived"

    @rule(ns=ns_index, field=st.sampled_from(("round", "stage", "score")), value=small_ints)
    def peer_set(self, ns: int, field: str, value: int) -> None:
        self._peer("set", ns, field=field, value=value)
        self.model.append(ns, field, value)

    @rule(ns=ns_index, value=item_lists)
    def peer_set_items(self, ns: int, value: list[int]) -> None:
        self._peer("set", ns, field="items", value=value)
        self.model.append(ns, "items", value)

    @rule(ns=ns_index, field=st.sampled_from(("round", "stage", "score", "items")))
    def peer_delete(self, ns: int, field: str) -> None:
        if self.model.available(ns, field):
            self._peer("del", ns, field=field)
            self.model.append(ns, field, TOMBSTONE)

    @rule(ns=ns_index, k=small_ints)
    def peer_append(self, ns: int, k: int) -> None:
        current = self.model.current(ns, "items")
        self._peer("append", ns, field="items", item=k)
        self.model.append(ns, "items", [*current, k] if isinstance(current, list) else [k])

    @rule(ns=ns_index, k=small_ints)
    def conflicting_block(self, ns: int, k: int) -> None:
        """The parent's block reads items, the peer appends, the parent's exit raises
        ConflictError and writes nothing."""
        current = self.model.current(ns, "items")
        if not isinstance(current, list):
            return
        s = self.s(ns)
        self.store.flush()
        with pytest.raises(appendmuch.ConflictError), s:
            s.items.append(k)
            self.peer("sync")
            self.peer("append", ns=list(NAMESPACES[ns]), field="items", item=k + 10)
            if not self.peer_write_through:
                self.peer("flush")
        self.model.append(ns, "items", [*current, k + 10])
        self.store.sync()

    def history_matches(self) -> None:
        """Replaced by :meth:`one_history` (the peer's contexts name its own module)."""

    @invariant()
    def one_history(self) -> None:
        """The parent's histories equal the model's entries in seq order."""
        merged: list[tuple[int, int, str, bool, Any]] = []
        for ns, field, values, model in self.histories():
            assert [(v.unavailable, v.data) for v in values] == model[field], field
            merged.extend((v.seq, ns, field, v.unavailable, v.data) for v in values)
        merged.sort(key=lambda m: m[0])
        assert len({m[0] for m in merged}) == len(merged), "a seq is used twice"
        expected = [
            (e.ns, e.field, e.data is TOMBSTONE, None if e.data is TOMBSTONE else e.data)
            for e in self.model.entries
        ]
        assert [m[1:] for m in merged] == expected


@pytest.mark.slow  # hypothesis-driven, with a peer process: ~20 s over its four variants
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("peer_mode", ["write_through", "batched"])
def test_store_matches_model_with_a_peer(kind: str, peer_mode: str) -> None:
    """Random operations, some made by a second process: after every step the
    parent's cache answers like the model log; at the end every copy is identical."""
    machine = type(
        f"PeerStoreMachine_{kind}_{peer_mode}",
        (PeerStoreMachine,),
        {"backend_name": f"{kind}-shared", "peer_write_through": peer_mode == "write_through"},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=8,
            stateful_step_count=25,
            deadline=None,
            # each step talks to another process: shrinking would take many minutes
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.fixture(params=[True, False], ids=["shared", "single-writer"])
def either_mode(place: SqlBackend, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A Store on ``place`` in shared mode, then in single-writer mode; closed after.

    Its flusher wakes every 10 ms rather than every 0.1 s: each trial of the tests below
    waits for it, and what they test is the moment it takes and commits the queue."""
    store = place.open(shared=request.param, batch_interval=0.01)
    try:
        yield store
    finally:
        store.close()


def until_taken(queued: Callable[[], int]) -> None:
    """Spin (no sleep) until the background flusher took the queue (``queued()`` is 0)."""
    deadline = time.monotonic() + PATIENCE
    while queued():
        assert time.monotonic() < deadline, "the background flusher never ran"


def test_flush_waits_for_the_background_flushers_commit(
    place: SqlBackend, either_mode: Store
) -> None:
    """``flush()`` returning means committed, also when the background flusher has just
    taken the queue and is still committing it: the rows are in the database, seen
    from an independent connection, the moment flush() returns."""
    store = either_mode
    s = store.storage("f")
    for trial in range(20):
        s.x = trial
        # the flusher takes the queue by itself (its length: no lock, no iteration)
        until_taken(lambda: len(store.driver._pending))  # type: ignore[attr-defined]
        store.flush()
        stored = [row for row in place.rows() if row[2] == "x"]
        assert len(stored) == trial + 1, f"trial {trial}: flush() returned before commit"


def test_pending_is_safe_while_the_flusher_commits(place: SqlBackend, either_mode: Store) -> None:
    """``driver.pending`` read by the application while the background flusher is
    committing answers a count (it raised "deque mutated during iteration" on
    PostgreSQL, and flush() read it too)."""
    store = either_mode
    s = store.storage("f")
    for trial in range(100):
        s.x = trial
        until_taken(lambda: store.driver.pending)
    assert len([row for row in place.rows() if row[2] == "x"]) == 100
