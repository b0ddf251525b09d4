"""Fault injection: no acknowledged write is ever lost.

Real faults, no mocks:

- **disk full** (SQLite): ``PRAGMA max_page_count`` lowered to the current size on the
  driver's own connection, so inserts fail with SQLITE_FULL; raised again to clear it;
- **read-only file** (SQLite): the tests run as root, whom file modes do not stop, so
  the database and its WAL file get the ext4 *immutable* attribute (``chattr +i``), which
  stops every process including root (EPERM on write); ``chattr -i`` clears it;
- **server gone** (PostgreSQL): a private cluster (tests/pgserver.py) is stopped
  mid-run (``halt``) and refuses connections until it is started again (``resume``).

For each: the write or flush that meets the fault raises ``WriteError`` (a
RuntimeError) saying the rows stay queued; those rows, and every write made during the
fault, stay queued in order and are written exactly once by the next successful flush;
the cache keeps every write throughout.  ``close()`` that cannot write saves the queue
to a recovery file (beside the database, or in ``recovery_dir``), names it in the
exception (``exc.recovery_file``), and ``appendmuch.recovery.replay(path, driver)``
writes it later; replaying twice changes nothing.

"Exactly right" is checked two ways: the stored rows equal, in full (seq, namespace,
field, value bytes, created_at, context), the log the Store holds in memory; and, less
created_at, what the same workload stores in a run without faults.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Sqlite3, Store, iter_fields, tuple2dbns
from appendmuch.errors import WriteError
from appendmuch.recovery import replay
from backends import PostgresBackend, SqliteBackend
from helpers import wait_for
from pgserver import TempCluster, private_server

Row = tuple[Any, ...]

#: a batch interval so long that only a full batch, flush or close writes the queue
HOLD = 3600.0
#: how long to wait for the background flusher at most (a limit, never a threshold)
PATIENCE = 15.0
#: SQLite's default maximum page count, restored to clear a "disk full"
NO_LIMIT = 1073741823
BIG = "x" * 20000  # rows this large always need new (overflow) pages


# ---------------------------------------------------------------- helpers


def log_rows(store: Store) -> list[Row]:
    """The log the Store holds in memory, as stored rows, by seq."""
    rows = []
    for namespace, field, log in iter_fields(store.cache):
        for value in log:
            data = None if value.unavailable else store.codec.encode(value.data)
            rows.append((value.seq, tuple2dbns(namespace), field, data, value.time, value.context))
    return sorted(rows)


def without_time(rows: list[Row]) -> list[Row]:
    return [(seq, ns, field, value, ctx) for seq, ns, field, value, _, ctx in rows]


def stored(backend: Any) -> list[Row]:
    """The rows as stored, read by an independent read-only driver."""
    return [tuple(row) for row in backend.raw_rows()]


def phase(store: Store, tag: str, count: int) -> list[int]:
    """``count`` writes of mixed kinds (int, big str, list, delete), one row each.

    A write that raises WriteError (its batch was due and could not be written) is
    noted and the workload goes on, as an application that logs the error would.
    Returns the positions of the writes that raised.
    """
    p1, p2 = store.storage("game", "p1"), store.storage("game", tag)
    raised = []
    for i in range(count):
        try:
            kind = i % 4
            if kind == 0:
                p1.score = i
            elif kind == 1:
                p2.note = f"{tag}{i}:{BIG}"
            elif kind == 2:
                p1.items = [tag, i]
            else:
                del p2.note
        except WriteError as exc:
            assert isinstance(exc, RuntimeError)
            assert "queued" in str(exc)
            raised.append(i)
    return raised


def reference(tmp_path: Path, phases: list[tuple[str, int]]) -> list[Row]:
    """What the phases store when nothing fails (a fresh SQLite file), less created_at."""
    backend = SqliteBackend(tmp_path / "reference")
    (tmp_path / "reference").mkdir()
    store = Store(backend.driver(batch_interval=HOLD))
    for tag, count in phases:
        assert phase(store, tag, count) == []
    store.close()
    return without_time(stored(backend))


def assert_contiguous(rows: list[Row], last: int) -> None:
    assert [row[0] for row in rows] == list(range(1, last + 1))


# ---------------------------------------------------------------- fault: disk full (SQLite)


class DiskFull:
    """SQLITE_FULL on demand: the database may not grow past its current page count."""

    def __init__(self, driver: Sqlite3) -> None:
        self.conn = driver.connection

    def start(self) -> None:
        (pages,) = self.conn.execute("PRAGMA page_count").fetchone()
        (limit,) = self.conn.execute(f"PRAGMA max_page_count={pages}").fetchone()
        assert limit == pages

    def stop(self) -> None:
        self.conn.execute(f"PRAGMA max_page_count={NO_LIMIT}")


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> SqliteBackend:
    return SqliteBackend(tmp_path)


class TestDiskFull:
    def test_flush_fails_rows_stay_queued_and_are_written_once_later(
        self, sqlite_backend: SqliteBackend, tmp_path: Path
    ) -> None:
        """A flush on a full disk raises WriteError; the rows stay queued (a second
        failing flush neither loses nor duplicates them); once space is back, one flush
        writes them all, in order, once."""
        store = Store(sqlite_backend.driver(batch_size=100, batch_interval=HOLD))
        assert phase(store, "a", 8) == []
        store.flush()
        committed = stored(sqlite_backend)
        full = DiskFull(store.driver)  # type: ignore[arg-type]
        full.start()
        assert phase(store, "b", 12) == []
        for _ in range(2):
            with pytest.raises(WriteError, match=r"(?i)full.*queued") as info:
                store.flush()
            assert isinstance(info.value, RuntimeError)
            assert store.driver.pending == 12
            assert stored(sqlite_backend) == committed
        full.stop()
        assert phase(store, "c", 4) == []
        store.flush()
        assert store.driver.pending == 0
        rows = stored(sqlite_backend)
        assert rows == log_rows(store)
        assert_contiguous(rows, 24)
        assert without_time(rows) == reference(tmp_path, [("a", 8), ("b", 12), ("c", 4)])
        store = sqlite_backend.reopen(store)
        assert log_rows(store) == rows
        store.close()

    def test_write_hitting_a_full_batch_raises_there_and_keeps_the_row(
        self, sqlite_backend: SqliteBackend, tmp_path: Path
    ) -> None:
        """With the disk full, the write that fills the batch raises WriteError at that
        assignment (or del); the row is queued, not lost: the cache shows it, and every
        later write, which raises too while the batch cannot be written, is kept."""
        store = Store(sqlite_backend.driver(batch_size=4, batch_interval=HOLD))
        assert phase(store, "a", 4) == []  # one full batch, written
        full = DiskFull(store.driver)  # type: ignore[arg-type]
        full.start()
        raised = phase(store, "b", 8)
        assert raised == [3, 4, 5, 6, 7]  # from the 4th queued row on
        p1, pb = store.storage("game", "p1"), store.storage("game", "b")
        assert p1.score == 4
        assert pb.get("note") is None  # the last write (a del) raised but happened
        with p1:
            assert p1.items == ["b", 6]
        assert store.driver.pending == 8
        assert [row[0] for row in stored(sqlite_backend)] == [1, 2, 3, 4]
        full.stop()
        store.flush()
        rows = stored(sqlite_backend)
        assert rows == log_rows(store)
        assert_contiguous(rows, 12)
        assert without_time(rows) == reference(tmp_path, [("a", 4), ("b", 8)])
        store.close()

    def test_with_block_exit_on_a_full_disk_is_all_or_nothing(
        self, sqlite_backend: SqliteBackend
    ) -> None:
        """A ``with`` block whose exit writes two mutations, the first of which fills the
        batch on a full disk: the exit raises, and either both mutations are in the log
        (queued) or neither is; the database ends up holding exactly the cache's log
        (design.md: exit writes are all-or-nothing)."""
        store = Store(sqlite_backend.driver(batch_size=2, batch_interval=HOLD))
        p = store.storage("game", "p1")
        p.a = []
        p.b = []
        full = DiskFull(store.driver)  # type: ignore[arg-type]
        full.start()
        p.note = BIG  # queued: 1 of 2
        with pytest.raises(WriteError), p:
            p.a.append(1)
            p.b.append(2)
        full.stop()
        store.flush()
        with p:
            assert (p.a, p.b) in [([1], [2]), ([], [])]
        assert stored(sqlite_backend) == log_rows(store)
        store.close()

    @pytest.mark.parametrize("elsewhere", [False, True], ids=["beside-db", "recovery_dir"])
    def test_close_saves_a_recovery_file_that_replay_writes(
        self, sqlite_backend: SqliteBackend, tmp_path: Path, elsewhere: bool
    ) -> None:
        """close() on a full disk saves the queue to a recovery file (beside the database,
        or in recovery_dir), raises WriteError naming it (exc.recovery_file), releases the
        lock; replay() writes the rows later, exactly; replaying again changes nothing."""
        recovery_dir = tmp_path / "rescue" if elsewhere else None
        if recovery_dir is not None:
            recovery_dir.mkdir()
        store = Store(sqlite_backend.driver(batch_interval=HOLD, recovery_dir=recovery_dir))
        assert phase(store, "a", 6) == []
        store.flush()
        committed = stored(sqlite_backend)
        DiskFull(store.driver).start()  # type: ignore[arg-type]
        assert phase(store, "b", 9) == []
        expected = log_rows(store)
        with pytest.raises(WriteError) as info:
            store.close()
        path = info.value.recovery_file
        assert path is not None and path in str(info.value)
        assert Path(path).parent == (recovery_dir or sqlite_backend.path.parent)
        assert Path(path).is_file()
        assert store.driver.pending == 0
        assert not list(tmp_path.glob("*.lock"))
        assert stored(sqlite_backend) == committed

        driver = sqlite_backend.driver()
        assert replay(path, driver) == 9
        driver.close()
        rows = stored(sqlite_backend)
        assert rows == expected
        assert without_time(rows) == reference(tmp_path, [("a", 6), ("b", 9)])
        driver = sqlite_backend.driver()
        assert replay(path, driver) == 0
        driver.close()
        assert stored(sqlite_backend) == expected
        reopened = sqlite_backend.store()
        assert log_rows(reopened) == expected
        assert reopened.driver.last_seq == 15
        reopened.close()

    def test_recovered_rows_are_never_silently_dropped(self, sqlite_backend: SqliteBackend) -> None:
        """After close() saved rows to a recovery file, an application that restarts and
        writes before anyone replays the file must not make replay() drop the saved rows
        silently (their seqs were never stored, so the restarted Store hands them out
        again): either opening refuses while the recovery file is pending, or replay()
        raises naming the conflicting seq and writes nothing, or every saved row ends up
        stored."""
        store = Store(sqlite_backend.driver(batch_interval=HOLD))
        store.storage("game", "p1").score = 1
        store.flush()
        DiskFull(store.driver).start()  # type: ignore[arg-type]
        for i in range(3):
            store.storage("game", "p1").note = f"{i}{BIG}"
        with pytest.raises(WriteError) as info:
            store.close()
        path = info.value.recovery_file
        assert path is not None
        saved = [row for row in log_rows(store) if row[0] > 1]

        try:
            restarted = sqlite_backend.store()
        except RuntimeError as exc:  # refusing to open is one honest answer
            assert path in str(exc)
            return
        restarted.storage("game", "p1").after_restart = True
        restarted.close()
        before = stored(sqlite_backend)
        driver = sqlite_backend.driver()
        try:
            replay(path, driver)
        except (ValueError, RuntimeError) as exc:
            assert "seq 2" in str(exc)
            assert stored(sqlite_backend) == before
            return
        finally:
            driver.close()
        rows = stored(sqlite_backend)
        missing = [row[:4] for row in saved if row[:4] not in [r[:4] for r in rows]]
        assert missing == [], "replay skipped saved rows whose seqs were reused"


# ---------------------------------------------------------------- fault: immutable file


def chattr_problem(directory: Path) -> str | None:
    """None when ``chattr +i`` stops a root process writing here, else why not."""
    if shutil.which("chattr") is None:
        return "chattr is not installed (e2fsprogs)"
    probe = directory / "chattr-probe"
    probe.write_bytes(b"x")
    try:
        result = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True)
        if result.returncode != 0:
            return f"chattr +i is not supported on this filesystem: {result.stderr.strip()}"
        try:
            with open(probe, "ab") as fh:
                fh.write(b"y")
        except PermissionError:
            return None
        return "chattr +i does not stop writes on this filesystem"
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        probe.unlink()


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """The files get the immutable attribute for the block (even root cannot write)."""
    subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


@pytest.fixture
def locked_files(tmp_path: Path) -> SqliteBackend:
    problem = chattr_problem(tmp_path)
    if problem is not None:
        pytest.skip(problem)
    return SqliteBackend(tmp_path)


def db_files(backend: SqliteBackend) -> list[Path]:
    """The database and its WAL file (both exist once a batch was written)."""
    files = [backend.path, backend.path.with_name(backend.path.name + "-wal")]
    assert all(f.exists() for f in files)
    return files


class TestReadOnlyFile:
    def test_flush_fails_then_succeeds_once_writable(
        self, locked_files: SqliteBackend, tmp_path: Path
    ) -> None:
        """Writes to an immutable database queue; flush raises WriteError (twice, losing
        and duplicating nothing); once writable again, one flush writes all, once."""
        store = Store(locked_files.driver(batch_size=100, batch_interval=HOLD))
        assert phase(store, "a", 5) == []
        store.flush()
        with immutable(*db_files(locked_files)):
            assert phase(store, "b", 7) == []
            for _ in range(2):
                with pytest.raises(WriteError, match="queued") as info:
                    store.flush()
                assert isinstance(info.value, RuntimeError)
                assert store.driver.pending == 7
        assert [row[0] for row in stored(locked_files)] == [1, 2, 3, 4, 5]
        store.flush()
        rows = stored(locked_files)
        assert rows == log_rows(store)
        assert_contiguous(rows, 12)
        assert without_time(rows) == reference(tmp_path, [("a", 5), ("b", 7)])
        store.close()

    def test_write_hitting_a_full_batch_raises_there_and_keeps_the_row(
        self, locked_files: SqliteBackend
    ) -> None:
        """The write that fills the batch raises WriteError at the assignment; the value
        is in the cache and queued, and is written after the file is writable again."""
        store = Store(locked_files.driver(batch_size=3, batch_interval=HOLD))
        player = store.storage("game", "p1")
        for i in range(3):
            player.score = i
        with immutable(*db_files(locked_files)):
            player.score = 10
            player.score = 11
            with pytest.raises(WriteError):
                player.score = 12
            assert player.score == 12
            assert player.__history__()["score"][-1].seq == 6
        store.flush()
        assert [row[3] for row in stored(locked_files)][-3:] == [b"\x0010", b"\x0011", b"\x0012"]
        assert stored(locked_files) == log_rows(store)
        store.close()

    def test_background_flusher_failure_keeps_rows_and_retries(
        self, locked_files: SqliteBackend
    ) -> None:
        """When the background flusher meets the fault it records it (driver.last_error),
        keeps the rows queued, and writes them by itself once the file is writable
        again: nothing waits for the application's next flush."""
        store = Store(locked_files.driver(batch_interval=0.05))
        player = store.storage("game", "p1")
        player.score = 0
        store.flush()
        driver = store.driver
        with immutable(*db_files(locked_files)):
            player.score = 1
            player.note = "during"
            wait_for(lambda: driver.last_error is not None, "the flusher to fail")  # type: ignore[attr-defined]
            assert driver.pending == 2  # type: ignore[attr-defined]
        wait_for(lambda: driver.pending == 0, "the flusher to write the queue")  # type: ignore[attr-defined]
        assert stored(locked_files) == log_rows(store)
        assert driver.last_error is None  # type: ignore[attr-defined]
        store.close()

    def test_close_saves_a_recovery_file_that_replay_writes(
        self, locked_files: SqliteBackend, tmp_path: Path
    ) -> None:
        """close() on an immutable database saves the queue beside it (the directory is
        writable), names the file; replay() after the file is writable writes the rows
        exactly; a second replay changes nothing."""
        store = Store(locked_files.driver(batch_interval=HOLD))
        assert phase(store, "a", 4) == []
        store.flush()
        assert phase(store, "b", 6) == []
        expected = log_rows(store)
        with immutable(*db_files(locked_files)), pytest.raises(WriteError) as info:
            store.close()
        path = info.value.recovery_file
        assert path is not None and Path(path).parent == tmp_path
        assert path in str(info.value)
        assert [row[0] for row in stored(locked_files)] == [1, 2, 3, 4]
        driver = locked_files.driver()
        assert replay(path, driver) == 6
        assert replay(path, driver) == 0
        driver.close()
        assert stored(locked_files) == expected
        assert without_time(expected) == reference(tmp_path, [("a", 4), ("b", 6)])


# ---------------------------------------------------------------- fault: server gone (PG)


@pytest.fixture(scope="module")
def cluster() -> Iterator[TempCluster]:
    """A PostgreSQL server of this module's own, so it can be stopped and started."""
    with private_server() as made:
        yield made


class Outage:
    """The server is down from ``__enter__`` until ``back()`` (or the block's end)."""

    def __init__(self, cluster: TempCluster) -> None:
        self.cluster = cluster
        self.down = False

    def __enter__(self) -> Outage:
        self.cluster.halt()
        self.down = True
        return self

    def back(self) -> None:
        if self.down:
            self.cluster.resume()
            self.down = False

    def __exit__(self, *exc: object) -> None:
        self.back()


@pytest.fixture
def pg(cluster: TempCluster) -> Iterator[PostgresBackend]:
    made = PostgresBackend(cluster.conninfo)
    try:
        yield made
    finally:
        made.cleanup()


def pg_store(pg: PostgresBackend, tmp_path: Path, **kwargs: Any) -> Store:
    kwargs.setdefault("batch_interval", HOLD)
    return Store(pg.driver(timeout=1.0, recovery_dir=tmp_path, **kwargs))


#: an application that writes, waits while the test stops the server, then writes,
#: flushes and closes (both fail) and reports on stdout
_OUTAGE_APP = """
import sys
from appendmuch import PostgreSQL, Store
store = Store(PostgreSQL(sys.argv[1], table_prefix=sys.argv[2], recovery_dir=sys.argv[3],
                         min_size=1, max_size=2, timeout=1.0, batch_interval=3600.0))
store.storage("a").x = 1
store.flush()
print("ready", flush=True)
sys.stdin.readline()
store.storage("a").x = 2
for what in (store.flush, store.close):
    try:
        what()
    except Exception as exc:
        print(type(exc).__name__, flush=True)
"""


class TestServerGone:
    def test_no_log_lines_on_stderr_during_an_outage(
        self, pg: PostgresBackend, cluster: TempCluster, tmp_path: Path
    ) -> None:
        """An application without logging configured sees the failures as exceptions,
        and nothing of psycopg_pool's reconnection attempts on its stderr."""
        app = subprocess.Popen(
            [sys.executable, "-c", _OUTAGE_APP, pg.conninfo, pg.prefix, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert app.stdout is not None and app.stdin is not None
        assert app.stdout.readline() == "ready\n"
        with Outage(cluster):
            app.stdin.write("go\n")
            app.stdin.flush()
            out, err = app.communicate(timeout=120)
        assert app.returncode == 0, err
        assert out.split() == ["WriteError", "WriteError"]
        assert err == ""

    def test_flushes_fail_during_outage_and_succeed_after(
        self, pg: PostgresBackend, cluster: TempCluster, tmp_path: Path
    ) -> None:
        """While the server is down, writes queue, every flush raises WriteError and the
        cache keeps everything; after the server is back one flush writes every row
        exactly once, in order."""
        store = pg_store(pg, tmp_path, batch_size=100)
        assert phase(store, "a", 6) == []
        store.flush()
        with Outage(cluster) as outage:
            assert phase(store, "b", 10) == []
            for _ in range(3):
                with pytest.raises(WriteError, match="queued") as info:
                    store.flush()
                assert isinstance(info.value, RuntimeError)
            assert store.driver.pending == 10
            assert store.storage("game", "p1").score == 8
            outage.back()
        store.flush()
        rows = stored(pg)
        assert rows == log_rows(store)
        assert_contiguous(rows, 16)
        assert without_time(rows) == reference(tmp_path, [("a", 6), ("b", 10)])
        store = pg.reopen(store)
        assert log_rows(store) == rows
        store.close()

    def test_write_hitting_a_full_batch_raises_there_and_keeps_the_row(
        self, pg: PostgresBackend, cluster: TempCluster, tmp_path: Path
    ) -> None:
        """During the outage, the write that fills the batch raises WriteError at that
        assignment; it and every later write are in the cache and queued, and all are
        written exactly once after the server is back."""
        store = pg_store(pg, tmp_path, batch_size=4)
        assert phase(store, "a", 4) == []
        store.flush()
        with Outage(cluster):
            raised = phase(store, "b", 10)
            assert raised == list(range(3, 10)), "the write filling the batch did not raise"
            with store.storage("game", "p1") as p1:
                assert p1.score == 8
                assert p1.items == ["b", 6]
        store.flush()
        rows = stored(pg)
        assert rows == log_rows(store)
        assert_contiguous(rows, 14)
        assert without_time(rows) == reference(tmp_path, [("a", 4), ("b", 10)])
        store.close()

    def test_close_during_outage_saves_a_recovery_file(
        self, pg: PostgresBackend, cluster: TempCluster, tmp_path: Path
    ) -> None:
        """close() while the server is down saves the queue to a recovery file in
        recovery_dir and names it; replay() after the server is back writes the rows
        exactly; replaying again changes nothing."""
        store = pg_store(pg, tmp_path)
        assert phase(store, "a", 5) == []
        store.flush()
        with Outage(cluster):
            assert phase(store, "b", 7) == []
            expected = log_rows(store)
            with pytest.raises(WriteError) as info:
                store.close()
        self._replay_and_check(pg, info.value, tmp_path, expected, [("a", 5), ("b", 7)])

    def test_close_after_a_failed_flush_saves_a_recovery_file(
        self, pg: PostgresBackend, cluster: TempCluster, tmp_path: Path
    ) -> None:
        """The same when a flush during the outage already failed (and the driver gave
        up its connection): close() must still save the queue to a recovery file, not
        fail to reconnect and leave the rows in a closed driver."""
        store = pg_store(pg, tmp_path)
        assert phase(store, "a", 5) == []
        store.flush()
        with Outage(cluster):
            assert phase(store, "b", 7) == []
            with pytest.raises(WriteError):
                store.flush()
            expected = log_rows(store)
            with pytest.raises(WriteError) as info:
                store.close()
        self._replay_and_check(pg, info.value, tmp_path, expected, [("a", 5), ("b", 7)])

    def test_close_after_the_background_flusher_failed_saves_a_recovery_file(
        self, pg: PostgresBackend, cluster: TempCluster, tmp_path: Path
    ) -> None:
        """The common case: the application writes during the outage, the background
        flusher meets the failure first, then the application closes.  The rows must
        reach a recovery file."""
        store = pg_store(pg, tmp_path, batch_interval=0.05)
        assert phase(store, "a", 5) == []
        store.flush()
        driver = store.driver
        with Outage(cluster):
            assert phase(store, "b", 3) == []
            wait_for(lambda: driver.last_error is not None, "the flusher to fail")  # type: ignore[attr-defined]
            expected = log_rows(store)
            with pytest.raises(WriteError) as info:
                store.close()
        self._replay_and_check(pg, info.value, tmp_path, expected, [("a", 5), ("b", 3)])

    @staticmethod
    def _replay_and_check(
        pg: PostgresBackend,
        error: WriteError,
        tmp_path: Path,
        expected: list[Row],
        phases: list[tuple[str, int]],
    ) -> None:
        path = error.recovery_file
        assert path is not None, f"no recovery file: {error}"
        assert Path(path).parent == tmp_path and Path(path).is_file()
        assert path in str(error)
        saved = len(expected) - phases[0][1]
        driver = pg.driver()
        assert replay(path, driver) == saved
        assert replay(path, driver) == 0
        driver.close()
        rows = stored(pg)
        assert rows == expected
        assert without_time(rows) == reference(tmp_path, phases)


class TestServerRestartDuringClose:
    def test_close_while_the_flusher_reconnects_returns_and_stops_it(
        self, pg: PostgresBackend, tmp_path: Path
    ) -> None:
        """The server ends the writer's session (as a restart does); the background
        flusher fails, and on its retry waits to take the writer lock again (another
        session holds it, running a statement).  close() is called while it waits, then
        the lock comes free.  The flusher's reconnect must not start another flusher
        (which would keep close() joining for ever): close() returns, no flusher thread
        of the table is left, and every row is written."""
        import sys
        import threading

        import psycopg

        driver = pg.driver(
            recovery_dir=tmp_path, batch_interval=0.05, retry_interval=2.0, lock_timeout=120.0
        )
        store = Store(driver)
        assert phase(store, "a", 3) == []
        store.flush()
        name = f"appendmuch-flusher:{driver.table}"  # type: ignore[attr-defined]
        flusher = driver._flusher  # type: ignore[attr-defined]
        outcome: list[BaseException | None] = []

        def close() -> None:
            try:
                store.close()
                outcome.append(None)
            except BaseException as exc:  # reported below
                outcome.append(exc)

        def flusher_in(function: str) -> bool:
            frame = sys._current_frames().get(flusher.ident)
            while frame is not None:
                if frame.f_code.co_name == function:
                    return True
                frame = frame.f_back
            return False

        pid = driver._writer.info.backend_pid  # type: ignore[attr-defined]
        blocker = psycopg.connect(pg.conninfo, autocommit=True)
        with psycopg.connect(pg.conninfo, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert phase(store, "b", 4) == []
        expected = log_rows(store)
        wait_for(lambda: driver.last_error is not None, "the flusher to fail")  # type: ignore[attr-defined]

        def hold_the_lock() -> None:
            with contextlib.suppress(psycopg.Error):  # cancelled below
                blocker.execute(
                    "SELECT pg_advisory_lock(%s), pg_sleep(600)",
                    (driver._lock_key,),  # type: ignore[attr-defined]
                )

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        wait_for(lambda: flusher_in("_take_writer_lock"), "the flusher to wait for the lock")
        closer = threading.Thread(target=close)
        closer.start()
        blocker.cancel()
        holder.join(PATIENCE)
        blocker.close()
        closer.join(60.0)
        assert not closer.is_alive(), "close() hangs"
        assert outcome == [None], outcome
        assert not [t for t in threading.enumerate() if t.name == name and t.is_alive()]
        assert stored(pg) == expected
