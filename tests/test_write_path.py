"""The write path under pressure: flush waits for a batch the flusher holds, batches are
split by bytes, a failing database is not retried on every write, a reader does not keep
a SQLite file out of WAL mode, and a database file removed while open is noticed.

Real parts only: SQLite files with second ``sqlite3`` connections holding locks, the
session's PostgreSQL server, and child processes killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Sqlite3, Store
from appendmuch.errors import LockedError, WriteError
from backends import Backend, PostgresBackend, SqliteBackend
from helpers import close_fails, wait_for

#: a batch interval so long that only a full batch, flush or close writes the queue
HOLD = 3600.0
#: how long to wait for a background event at most (a limit, never a threshold)
PATIENCE = 30.0
#: SQLite's default maximum page count, restored to clear a "disk full"
NO_LIMIT = 1073741823


def count_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (count,) = conn.execute("SELECT count(*) FROM appendmuch_values").fetchone()
        return int(count)
    finally:
        conn.close()


def in_function(thread_id: int, name: str, filename_end: str) -> bool:
    """Whether the thread is running (somewhere down its stack) function ``name``."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        code = frame.f_code
        if code.co_name == name and code.co_filename.endswith(filename_end):
            return True
        frame = frame.f_back
    return False


# --------------------------------------------------------------------------- 12.1


class TestFlushWaitsForTheFlusher:
    def test_flush_waits_for_a_batch_the_flusher_holds(self, tmp_path: Path) -> None:
        """Another connection holds SQLite's write lock, so the background flusher sits
        in its write with a batch it took.  flush() called then must not return before
        that batch is committed (checked with a separate connection right after)."""
        path = tmp_path / "log.sqlite3"
        store = Store(Sqlite3(path, batch_interval=0.01, timeout=PATIENCE))
        s = store.storage("a")
        s.x = 0
        store.flush()
        driver = store.driver
        flusher = driver._flusher  # type: ignore[attr-defined]
        assert flusher is not None and flusher.ident is not None
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        for i in range(1, 6):
            s.x = i
        wait_for(
            lambda: in_function(flusher.ident or 0, "_write_batch", "drivers/sqlite.py"),
            "the flusher to start writing its batch",
        )
        main = threading.get_ident()
        done = threading.Event()

        def release_once_flush_waits() -> None:
            # Release the write lock once the main thread is inside flush() (or done).
            while not done.is_set() and not in_function(main, "flush", "drivers/sql.py"):
                done.wait(0.001)
            blocker.execute("COMMIT")

        releaser = threading.Thread(target=release_once_flush_waits)
        releaser.start()
        try:
            store.flush()
            seen = count_rows(path)
        finally:
            done.set()
            releaser.join(PATIENCE)
        assert seen == 6, f"flush() returned while {6 - seen} rows were not committed"
        store.close()
        blocker.close()

    def test_sigkill_right_after_flush_loses_nothing(self, tmp_path: Path) -> None:
        """A child writes large rows, waits until the background flusher is writing
        them, and flushes; it is killed with SIGKILL the moment it reports that flush()
        returned.  Every row written before that flush is in the file."""
        script = (
            "import sys, time\n"
            "from appendmuch import Sqlite3, Store\n"
            "store = Store(Sqlite3(sys.argv[1], batch_interval=0.5))\n"
            "s = store.storage('big')\n"
            "for i in range(1, 11):\n"
            "    s.x = str(i % 10) * 3_000_000\n"
            "ident = store.driver._flusher.ident\n"
            "deadline = time.monotonic() + 30\n"
            "def writing():\n"
            "    frame = sys._current_frames().get(ident)\n"
            "    while frame is not None:\n"
            "        if frame.f_code.co_name == '_write_batch':\n"
            "            return True\n"
            "        frame = frame.f_back\n"
            "    return False\n"
            "while not writing() and time.monotonic() < deadline:\n"
            "    time.sleep(0.0005)\n"
            "store.flush()\n"
            "print('flushed', flush=True)\n"
            "sys.stdin.read()\n"
        )
        for attempt in range(5):
            path = tmp_path / f"kill{attempt}.sqlite3"
            child = subprocess.Popen(
                [sys.executable, "-c", script, str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            line = child.stdout.readline()
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            assert line.strip() == "flushed"
            assert count_rows(path) == 10, f"attempt {attempt}: rows lost after flush()"


# --------------------------------------------------------------------------- 12.7


def transactions_of(backend: Backend, driver: Any) -> list[int]:
    """Rows per transaction of the table (PostgreSQL: by xmin)."""
    assert isinstance(backend, PostgresBackend)
    import psycopg

    with psycopg.connect(backend.conninfo, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT count(*) FROM {driver._quoted} GROUP BY xmin::text ORDER BY min(seq)"
        ).fetchall()
    return [int(count) for (count,) in rows]


class TestBatchBytes:
    def test_a_queue_larger_than_batch_bytes_is_written_in_several_batches(
        self, place: Backend
    ) -> None:
        """With batch_bytes=10,000, 30 rows of about 3,000 bytes go in batches of at most
        three rows (each in its own transaction), in order, and all arrive."""
        driver = place.driver(batch_interval=HOLD, batch_size=1000, batch_bytes=10_000)
        commits: list[str] = []
        if isinstance(place, SqliteBackend):
            driver.connection.set_trace_callback(  # type: ignore[attr-defined]
                lambda statement: commits.append(statement) if statement == "COMMIT" else None
            )
        store = Store(driver)
        s = store.storage("b")
        for i in range(30):
            s.x = f"{i:03d}" + "y" * 3000
        store.flush()
        values = [row[3] for row in place.raw_rows()]
        assert len(values) == 30
        assert [store.codec.decode(v)[:3] for v in values] == [f"{i:03d}" for i in range(30)]
        if isinstance(place, SqliteBackend):
            assert len(commits) == 10
        else:
            assert transactions_of(place, driver) == [3] * 10
        store.close()

    def test_batch_bytes_must_be_a_positive_int(self, place: Backend) -> None:
        for bad in (0, -1, 1.5, "10"):
            with pytest.raises(ValueError, match="batch_bytes"):
                place.driver(batch_bytes=bad)


# --------------------------------------------------------------------------- 12.17


class TestBackOff:
    def test_after_a_failure_full_batches_only_queue_until_the_retry_interval(
        self, tmp_path: Path
    ) -> None:
        """Disk full: the write that fills a batch tries and fails; the next writes raise
        at once without touching the database (no transaction begun); flush() tries at
        once; after the fault, one flush writes everything exactly once."""
        path = tmp_path / "log.sqlite3"
        driver = Sqlite3(path, batch_size=2, batch_interval=HOLD, retry_interval=HOLD)
        store = Store(driver)
        s = store.storage("d")
        s.x = "a" * 5000
        store.flush()
        conn = driver.connection
        begins: list[str] = []
        conn.set_trace_callback(lambda st: begins.append(st) if st.startswith("BEGIN") else None)
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count={pages}")
        raised: list[int] = []
        tried = 0
        for i in range(40):
            try:
                s.x = str(i) * 5000
            except WriteError as exc:
                if not raised:
                    tried = len(begins)  # the write that met the fault tried
                else:
                    assert "retries" in str(exc)
                raised.append(i)
        assert raised and raised == list(range(raised[0], 40)), "a due write did not raise"
        assert len(raised) > 30
        assert len(begins) == tried, "writes during the back-off tried the database again"
        with pytest.raises(WriteError):
            store.flush()
        assert len(begins) == tried + 1, "flush() did not try at once"
        conn.execute(f"PRAGMA max_page_count={NO_LIMIT}")
        store.flush()
        assert count_rows(path) == 41
        store.close()

    def test_retry_interval_must_not_be_negative(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="retry_interval"):
            Sqlite3(tmp_path / "x.sqlite3", retry_interval=-1)


# --------------------------------------------------------------------------- 12.15


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        conn.close()


class TestWalAfterAReader:
    def test_a_reader_at_the_first_write_does_not_keep_the_file_out_of_wal(
        self, tmp_path: Path
    ) -> None:
        """A reader is inside a read transaction when the writer first writes, so the
        switch to WAL is refused (and the commit waits in vain).  Once the reader is
        gone the next batch switches the file to WAL, where long reads no longer
        block commits."""
        path = tmp_path / "log.sqlite3"
        with Store(Sqlite3(path)) as store:
            store.storage("w").x = 0
        assert journal_mode(path) == "delete"
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM appendmuch_values").fetchone()
        store = Store(Sqlite3(path, batch_interval=HOLD, timeout=0.2))
        s = store.storage("w")
        s.x = 1
        with pytest.raises(WriteError, match="locked"):
            store.flush()
        reader.execute("COMMIT")
        store.flush()
        assert journal_mode(path) == "wal"
        # A long read no longer blocks the writer's commits.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM appendmuch_values").fetchone()
        s.x = 2
        store.flush()
        reader.execute("COMMIT")
        reader.close()
        assert count_rows(path) == 3
        store.close()


# --------------------------------------------------------------------------- 12.5 / 12.10


class TestFileAndLockIdentity:
    @pytest.mark.parametrize("how", ["removed", "replaced"])
    def test_a_database_file_removed_while_open_is_noticed(self, tmp_path: Path, how: str) -> None:
        """The file is removed (or replaced by another) while a Store has it open: the
        next flush raises WriteError saying so, later writes are refused, and close()
        saves the queued rows to a recovery file."""
        path = tmp_path / "log.sqlite3"
        store = Store(Sqlite3(path, batch_interval=HOLD, recovery_dir=tmp_path / "rec"))
        (tmp_path / "rec").mkdir()
        s = store.storage("r")
        s.x = 1
        store.flush()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        if how == "replaced":
            with Store(Sqlite3(tmp_path / "other.sqlite3")) as other:
                other.storage("o").y = 1
            os.replace(tmp_path / "other.sqlite3", path)
        s.x = 2
        s.x = 3
        with pytest.raises(WriteError, match="removed or replaced"):
            store.flush()
        with pytest.raises(WriteError, match="removed or replaced"):
            store.flush()
        error = close_fails(store)
        assert error.recovery_file is not None
        from appendmuch.recovery import read_recovery_file

        saved = read_recovery_file(error.recovery_file)
        assert [row[0] for row, _ in saved] == [2, 3]

    def test_a_removed_lock_file_is_noticed_and_the_new_one_kept(self, tmp_path: Path) -> None:
        """The lock file is deleted while a writer has the table open, and a second writer
        opens: the first refuses its next write (LockedError), saves its queue on close
        and does not delete the second writer's lock file."""
        path = tmp_path / "log.sqlite3"
        first = Store(Sqlite3(path, batch_interval=HOLD, recovery_dir=tmp_path))
        s = first.storage("l")
        s.x = 1
        first.flush()
        lock = Path(f"{path}-appendmuch_values.lock")
        assert lock.exists()
        lock.unlink()
        second = Store(Sqlite3(path, batch_interval=HOLD))
        second.storage("l2").y = 1
        second.flush()
        s.x = 2
        with pytest.raises(LockedError, match="lock file"):
            first.flush()
        error = close_fails(first)
        assert error.recovery_file is not None
        assert lock.exists(), "closing the first writer removed the second writer's lock"
        second.close()
        assert not lock.exists()
