"""The durability contract of the SQL drivers: no acknowledged write is ever lost.

1. When ``store.flush()`` returns, every earlier write is committed: an independent
   connection (raw ``sqlite3`` / ``psycopg``, or a read-only driver) sees it.
2. In the default batched mode a row is committed within the batch timeout even when the
   application stops writing: nothing waits in memory for the next write.  Checked by
   polling an independent connection, never by timing; the latency seen is only reported
   (``record_property("commit_latency_s")`` and stdout).
3. With ``write_through=True`` every assignment, ``del``, ``with``-block exit and
   replace-semantics overwrite returns only after its row is committed.
4. A normal interpreter exit without ``close()`` loses nothing, also after an uncaught
   exception or ``sys.exit(3)`` (child processes: tests/crash/exiter.py).

Every test runs on SQLite and PostgreSQL (the in-memory driver has no database).  Rows
are compared in full: seq, namespace, field, value bytes, created_at and context.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Store, Value, tuple2dbns
from appendmuch.errors import WriteError
from backends import Backend, PostgresBackend, SqliteBackend
from helpers import wait_for
from snapshots import cache_snapshot

Row = tuple[int, str, str, bytes | None, float, str]

CRASH_DIR = Path(__file__).parent / "crash"
#: overall limit when waiting for the background flusher (generous: never a threshold)
PATIENCE = 10.0
POLL = 0.002
#: a batch interval so long that only flush/close/exit can write the queue
HOLD = 3600.0


def is_replace(dbns: str, field: str) -> bool:
    """Replace semantics for fields named ``r_*``."""
    return field.startswith("r_")


class Peer:
    """An independent connection to a backend's table: raw sqlite3 or psycopg."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._conn: Any
        if isinstance(backend, SqliteBackend):
            self._conn = sqlite3.connect(backend.path, isolation_level=None)
            self.table = "appendmuch_values"
        else:
            import psycopg

            assert isinstance(backend, PostgresBackend)
            self._conn = psycopg.connect(backend.conninfo, autocommit=True)
            self.table = f"{backend.prefix}_values"

    def rows(self) -> list[Row]:
        """Every committed row, by seq."""
        cursor = self._conn.execute(
            "SELECT seq, namespace, field, value, created_at, context "
            f'FROM "{self.table}" ORDER BY seq'
        )
        return [
            (seq, ns, field, None if value is None else bytes(value), created_at, context)
            for seq, ns, field, value, created_at, context in cursor.fetchall()
        ]

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def peer(place: Backend) -> Iterator[Callable[[], Peer]]:
    """Opens (once the table exists) an independent connection to ``place``'s table."""
    opened: list[Peer] = []

    def open_peer() -> Peer:
        if not opened:
            opened.append(Peer(place))
        return opened[0]

    yield open_peer
    for made in opened:
        made.close()


class Recorder:
    """Every entry a Store appends (``on_change``), as the row the database should hold."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.entries: list[Row] = []

    def on_change(self, namespace: tuple[str, ...], field: str, value: Value) -> None:
        assert self.store is not None and value.time is not None
        raw = None if value.unavailable else self.store.codec.encode(value.data)
        self.entries.append(
            (value.seq, tuple2dbns(namespace), field, raw, value.time, value.context)
        )

    def expected(self) -> list[Row]:
        """The rows the table must hold: all entries, but only the latest of a
        replace-semantics field."""
        latest: dict[tuple[str, str], int] = {}
        for seq, dbns, field, *_ in self.entries:
            if is_replace(dbns, field):
                latest[dbns, field] = seq
        return [
            row
            for row in self.entries
            if not is_replace(row[1], row[2]) or latest[row[1], row[2]] == row[0]
        ]


OpenStore = Callable[..., tuple[Store, Recorder]]


@pytest.fixture
def stores(place: Backend, tmp_path: Path) -> Iterator[OpenStore]:
    """``stores(recorder=None, **driver_kwargs)``: a Store on ``place`` whose appended
    entries go to ``recorder`` (a new one unless given: pass the previous one to go on
    after a reopen).  Stores a test leaves open are closed at teardown (while the
    server is still up); recovery files, if any, go to tmp_path."""
    opened: list[Store] = []

    def open_store(
        recorder: Recorder | None = None, **driver_kwargs: Any
    ) -> tuple[Store, Recorder]:
        recorder = recorder if recorder is not None else Recorder()
        driver_kwargs.setdefault("recovery_dir", tmp_path)
        store = Store(
            place.driver(**driver_kwargs),
            on_change=recorder.on_change,
            replace_predicate=is_replace,
        )
        recorder.store = store
        opened.append(store)
        return store, recorder

    yield open_store
    for store in opened:
        # Hygiene only (tests close their stores where it matters): a test that failed
        # because rows could not be written would fail here again.
        with contextlib.suppress(WriteError):
            store.close()


def mixed_writes(store: Store, k: int) -> None:
    """Plain writes of several types, a delete, with-block mutations (nested), replace
    fields written, mutated and deleted."""
    s = store.storage("game", f"p{k % 2}")
    s.score = k
    s.name_ = f"player {k} é"
    s.ratio = k / 7
    s.flag = k % 2 == 0
    s.nothing = None
    if k % 3 == 1:
        del s.score
    with s:
        doc = s.get("doc")
        if doc is None:
            s.doc = {"items": [k]}
        else:
            doc["items"].append(k)
        with store.storage("game", f"p{k % 2}") as again:
            again.doc["items"].append(-k)
    s.r_hp = 100 - k
    with s:
        state = s.get("r_state")
        if state is None:
            s.r_state = {"moves": []}
        else:
            state["moves"].append(k)
    if k % 4 == 3:
        del s.r_hp
    store.storage("game", "p0", "deep").x = [k, {"k": k}]


# --------------------------------------------------------------------------- contract 1


class TestFlushCommits:
    """``store.flush()`` returning means every earlier write is committed."""

    def test_flush_commits_every_earlier_write(
        self, place: Backend, stores: OpenStore, peer: Callable[[], Peer]
    ) -> None:
        """Writes held back by a long batch interval are all committed by flush():
        plain values, tombstones, with-block mutations, replace overwrites of queued
        and of committed rows."""
        store, recorder = stores(batch_interval=HOLD)
        for k in range(5):
            mixed_writes(store, k)
        assert store.driver.pending > 0
        store.flush()
        assert store.driver.pending == 0
        assert peer().rows() == recorder.expected()
        for k in range(5, 9):  # replace fields now overwrite committed rows
            mixed_writes(store, k)
        store.flush()
        assert peer().rows() == recorder.expected()
        assert place.raw_rows() == recorder.expected()  # a read-only driver agrees
        store.close()

    def test_flush_after_full_batches_commits_the_remainder(
        self, stores: OpenStore, peer: Callable[[], Peer]
    ) -> None:
        """With small batches some rows go in as the batches fill; flush() commits the
        part of a batch that is not full."""
        store, recorder = stores(batch_size=7, batch_interval=HOLD)
        s = store.storage("counter")
        for k in range(40):
            s.k = k
            if k % 9 == 0:
                s.r_k = k
        store.flush()
        assert peer().rows() == recorder.expected()
        store.close()

    def test_flush_commits_a_full_batch_of_large_values(
        self, stores: OpenStore, peer: Callable[[], Peer]
    ) -> None:
        """A default-sized batch (100 rows) of 300 kB values, about 30 MB: flush()
        returns with all of it committed (a driver timeout of 2 s makes a driver that
        stalls on big batches fail quickly)."""
        store, recorder = stores(batch_interval=HOLD, timeout=2.0)
        s = store.storage("blobs")
        for k in range(100):
            s.blob = f"{k:03d}" + "x" * 300_000
        store.flush()
        assert peer().rows() == recorder.expected()

    def test_flush_racing_the_background_flusher(
        self, stores: OpenStore, peer: Callable[[], Peer]
    ) -> None:
        """With the default 0.1 s interval the flusher thread writes batches while the
        application writes and flushes: after every flush() all rows so far are
        committed, none twice."""
        store, recorder = stores()
        for k in range(120):
            mixed_writes(store, k)
            if k % 7 == 0:
                store.flush()
                rows = peer().rows()
                assert rows == recorder.expected()
                assert len({row[0] for row in rows}) == len(rows)
        store.close()
        assert peer().rows() == recorder.expected()

    def test_storage_flush_in_a_with_block_then_store_flush(
        self, stores: OpenStore, peer: Callable[[], Peer]
    ) -> None:
        """Inside a with block, ``s.flush()`` appends the mutation and ``store.flush()``
        commits it while the block is still open."""
        store, recorder = stores(batch_interval=HOLD)
        s = store.storage("doc")
        with s:
            s.d = {"a": []}
            s.d["a"].append(1)
            s.flush()
            store.flush()
            rows = peer().rows()
            assert rows == recorder.expected()
            encode = store.codec.encode
            assert [row[3] for row in rows] == [encode({"a": []}), encode({"a": [1]})]
        store.close()

    def test_flushed_rows_are_what_a_reopened_store_loads(
        self, place: Backend, stores: OpenStore, peer: Callable[[], Peer]
    ) -> None:
        """A read-only Store opened after flush() (the writer still open) loads exactly
        the writer's log, and after the writer is gone a reopened Store does too."""
        store, recorder = stores(batch_interval=HOLD)
        for k in range(3):
            mixed_writes(store, k)
        store.flush()
        written = cache_snapshot(store)
        reader = Store(place.driver(read_only=True), replace_predicate=is_replace)
        assert cache_snapshot(reader) == written
        reader.close()
        store.close()
        again, _ = stores()
        assert cache_snapshot(again) == written
        assert peer().rows() == recorder.expected()


# --------------------------------------------------------------------------- contract 2


class Timer:
    """What a batch-timeout test uses: Stores, the independent connection, and the
    report of the commit latency it observed."""

    def __init__(
        self,
        stores: OpenStore,
        peer: Callable[[], Peer],
        record_property: Callable[[str, object], None],
    ) -> None:
        self.stores = stores
        self.peer = peer
        self.record_property = record_property

    def committed(self, recorder: Recorder, what: str) -> float:
        """Seconds until the table holds what ``recorder`` expects, with no further
        write or flush (fails after PATIENCE)."""
        return wait_for(
            lambda: self.peer().rows() == recorder.expected(),
            f"{what} to be committed without further writes",
            PATIENCE,
            POLL,
        )

    def report(self, latency: float) -> None:
        """Record the observed commit latency (reported, never asserted)."""
        self.record_property("commit_latency_s", round(latency, 4))
        print(f"commit latency without further writes: {latency * 1000:.1f} ms")


@pytest.fixture
def timer(
    stores: OpenStore, peer: Callable[[], Peer], record_property: Callable[[str, object], None]
) -> Timer:
    return Timer(stores, peer, record_property)


class TestBatchTimeout:
    """In the default batched mode a queued row is committed without further writes or
    flushes (the background flusher); the latency is reported, not asserted."""

    def test_a_lone_row_is_committed(self, timer: Timer) -> None:
        """One write, then silence: the row appears on an independent connection."""
        store, recorder = timer.stores()
        store.storage("quiet").x = 1
        latency = timer.committed(recorder, "one row")
        timer.report(latency)
        # the flusher counts the row done just after its commit, which another
        # connection may see first
        wait_for(lambda: store.driver.pending == 0, "the committed row to leave the queue")
        store.close()

    def test_a_burst_smaller_than_a_batch_is_committed(self, timer: Timer) -> None:
        """A few dozen writes of every kind (fewer than a batch), then silence."""
        store, recorder = timer.stores()
        for k in range(4):
            mixed_writes(store, k)
        assert len(recorder.entries) < 100
        latency = timer.committed(recorder, "a burst")
        timer.report(latency)
        store.close()

    def test_the_rest_of_a_partly_full_batch_is_committed(self, timer: Timer) -> None:
        """25 writes with batches of 10: two batches go in as they fill, the last five
        rows are left to the timer."""
        store, recorder = timer.stores(batch_size=10)
        s = store.storage("counter")
        for k in range(25):
            s.k = k
        latency = timer.committed(recorder, "the last rows")
        timer.report(latency)
        store.close()

    def test_the_timer_keeps_working_row_after_row(self, timer: Timer) -> None:
        """Quiet write after quiet write (with an explicit flush and a reopen between):
        each is committed on its own, so the flusher does not stop after a batch."""
        store, recorder = timer.stores()
        worst = 0.0
        for k in range(6):
            store.storage("quiet").x = k
            worst = max(worst, timer.committed(recorder, "row"))
            if k == 2:
                store.storage("quiet").y = k
                store.flush()
            if k == 3:
                store.close()
                store, _ = timer.stores(recorder)
        timer.report(worst)
        store.close()

    def test_replace_overwrite_of_a_committed_row_is_committed(self, timer: Timer) -> None:
        """A replace-semantics overwrite queued against a committed row (an update,
        not an insert) is committed by the timer too; so are tombstones."""
        store, recorder = timer.stores()
        s = store.storage("live")
        s.r_beat = 0
        store.flush()
        worst = 0.0
        for k in range(1, 4):
            s.r_beat = k
            worst = max(worst, timer.committed(recorder, "beat"))
        del s.r_beat
        worst = max(worst, timer.committed(recorder, "delete"))
        assert [row[:4] for row in timer.peer().rows()] == [
            (recorder.entries[-1][0], "live", "r_beat", None)
        ]
        timer.report(worst)
        store.close()

    def test_with_block_exit_and_delete_are_committed(self, timer: Timer) -> None:
        """The row written by a with block's exit, and a tombstone, need no further write."""
        store, recorder = timer.stores()
        s = store.storage("doc")
        s.d = {"a": []}
        s.gone = 1
        store.flush()
        with s:
            s.d["a"].append(1)
        first = timer.committed(recorder, "with-block exit")
        del s.gone
        second = timer.committed(recorder, "tombstone")
        timer.report(max(first, second))
        store.close()

    def test_a_write_after_close_is_committed_or_refused(self, timer: Timer) -> None:
        """After ``store.close()`` a write must either raise or be committed like any
        other (the driver reconnects when used again): never sit in memory unwritten."""
        store, recorder = timer.stores()
        s = store.storage("late")
        s.x = 1
        store.close()
        try:
            s.y = 2
        except Exception:  # refused: nothing accepted, nothing to lose
            assert timer.peer().rows() == recorder.expected()
            return
        timer.committed(recorder, "a write after close()")


# --------------------------------------------------------------------------- contract 3


@pytest.fixture
def through(stores: OpenStore) -> tuple[Store, Recorder]:
    """A write-through Store (with a batch interval that would hold rows for an hour)."""
    return stores(write_through=True, batch_interval=HOLD)


class TestWriteThrough:
    """``write_through=True``: every assignment returns only after its row is committed."""

    @staticmethod
    def committed(store: Store, recorder: Recorder, peer: Peer) -> None:
        assert store.driver.pending == 0
        assert peer.rows() == recorder.expected()

    def test_plain_writes(self, through: tuple[Store, Recorder], peer: Callable[[], Peer]) -> None:
        """Each assignment, of every value type, is visible as soon as it returns."""
        store, recorder = through
        s = store.storage("wt", "p1")
        for value in [1, "two é", 3.5, None, True, [1, 2], {"k": [3]}, b"\x00\xff", 2**62]:
            s.v = value
            self.committed(store, recorder, peer())
        store.storage("wt", "p1", "deep").x = 1
        self.committed(store, recorder, peer())

    def test_deletes(self, through: tuple[Store, Recorder], peer: Callable[[], Peer]) -> None:
        """A ``del`` returns with its tombstone committed."""
        store, recorder = through
        s = store.storage("wt")
        s.a = 1
        s.b = [1]
        del s.a
        self.committed(store, recorder, peer())
        del s.b
        self.committed(store, recorder, peer())
        assert [row[3] for row in peer().rows()][-2:] == [None, None]

    def test_with_block_exits(
        self, through: tuple[Store, Recorder], peer: Callable[[], Peer]
    ) -> None:
        """Mutations are committed when a block exits (inner and outer exits of nested
        blocks, several fields at once), and at ``s.flush()`` inside a block."""
        store, recorder = through
        s = store.storage("wt")
        s.d = {"a": []}
        s.l = []
        with s:
            s.d["a"].append(1)
            s.l.append("x")
            with store.storage("wt") as inner:
                inner.d["a"].append(2)
            self.committed(store, recorder, peer())  # the inner exit wrote
            s.d["a"].append(3)
            s.flush()
            self.committed(store, recorder, peer())
            s.l.append("y")
        self.committed(store, recorder, peer())
        assert len(recorder.entries) == 6

    def test_replace_semantics_fields(
        self, through: tuple[Store, Recorder], peer: Callable[[], Peer]
    ) -> None:
        """Each overwrite of a replace field replaces the committed row before the
        assignment returns: one row per field, the latest seq, the old one gone."""
        store, recorder = through
        s = store.storage("wt", "live")
        for k in range(4):
            s.r_beat = k
            self.committed(store, recorder, peer())
            assert [row[0] for row in peer().rows()] == [recorder.entries[-1][0]]
        with s:
            s.r_state = {"moves": []}
            s.r_state["moves"].append(1)
        self.committed(store, recorder, peer())
        with s:
            s.r_state["moves"].append(2)
        self.committed(store, recorder, peer())
        del s.r_beat
        self.committed(store, recorder, peer())
        assert len(peer().rows()) == 2

    def test_explicit_batch_size_does_not_delay(
        self, stores: OpenStore, peer: Callable[[], Peer]
    ) -> None:
        """``batch_size=`` given together with write_through still commits per row."""
        store, recorder = stores(write_through=True, batch_size=50, batch_interval=HOLD)
        s = store.storage("wt")
        for k in range(5):
            s.k = k
            self.committed(store, recorder, peer())
        store.close()

    def test_after_reopen(self, stores: OpenStore, peer: Callable[[], Peer]) -> None:
        """A reopened write-through Store continues the seqs and still commits each row."""
        store, recorder = stores(write_through=True, batch_interval=HOLD)
        mixed_writes(store, 0)
        store.close()
        store, _ = stores(recorder, write_through=True, batch_interval=HOLD)
        for k in range(1, 3):
            mixed_writes(store, k)
            self.committed(store, recorder, peer())
        store.close()


# --------------------------------------------------------------------------- contract 4


def location(backend: Backend) -> dict[str, str]:
    """How a child process finds the backend's table (see tests/crash/childlib.py)."""
    if isinstance(backend, SqliteBackend):
        return {"kind": "sqlite", "path": str(backend.path)}
    assert isinstance(backend, PostgresBackend)
    return {"kind": "postgresql", "conninfo": backend.conninfo, "prefix": backend.prefix}


def run_exiter(
    backend: Backend, workdir: Path, end: str, **driver: Any
) -> tuple[int, list[Row], str]:
    """Run tests/crash/exiter.py in ``workdir``; return its exit status, the rows it
    wrote, and its output."""
    cfg = {"location": location(backend), "count": 30, "end": end, "driver": driver}
    done = subprocess.run(
        [sys.executable, str(CRASH_DIR / "exiter.py"), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
    )
    rows: list[Row] = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            e = json.loads(line)
            raw = None if e["hex"] is None else bytes.fromhex(e["hex"])
            rows.append((e["seq"], e["ns"], e["field"], raw, e["t"], e["ctx"]))
    return done.returncode, rows, done.stdout + done.stderr


def surviving(entries: list[Row]) -> list[Row]:
    recorder = Recorder()
    recorder.entries = entries
    return recorder.expected()


class TestInterpreterExit:
    """A child process writes (rows held back by a one-hour batch interval, so only the
    exit can save them) and ends without close(): nothing is lost."""

    @pytest.mark.parametrize(
        ("end", "status"),
        [("normal", 0), ("raise", 1), ("exit3", 3), ("local", 0), ("cycle", 0)],
    )
    def test_exit_loses_nothing(
        self, place: Backend, tmp_path: Path, peer: Callable[[], Peer], end: str, status: int
    ) -> None:
        """Normal end, uncaught exception, sys.exit(3), a Store already garbage, a Store
        kept alive only by a reference cycle: every row is in the database."""
        code, entries, output = run_exiter(place, tmp_path, end, batch_interval=HOLD)
        assert code == status, output
        assert len(entries) > 100
        assert peer().rows() == surviving(entries)

    @pytest.mark.parametrize("driver", [{}, {"write_through": True}], ids=["default", "through"])
    def test_exit_with_default_settings_and_write_through(
        self,
        place: Backend,
        tmp_path: Path,
        peer: Callable[[], Peer],
        driver: dict[str, Any],
    ) -> None:
        """Same with the default batching, and in write-through mode."""
        code, entries, output = run_exiter(place, tmp_path, "normal", **driver)
        assert code == 0, output
        assert peer().rows() == surviving(entries)

    def test_exit_after_writes_following_close(
        self, place: Backend, tmp_path: Path, peer: Callable[[], Peer]
    ) -> None:
        """Writes made after ``store.close()`` are either refused or, if accepted,
        still in the database after a normal exit."""
        code, entries, output = run_exiter(place, tmp_path, "after_close", batch_interval=HOLD)
        assert code == 0, output
        stored = {row[0] for row in peer().rows()}
        missing = [row for row in surviving(entries) if row[0] not in stored]
        assert peer().rows() == surviving(entries), f"{len(missing)} accepted rows lost"
