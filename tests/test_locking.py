"""One writer per table, and read-only access for analysis while it writes.

- A second writer on the same SQLite database + table, in another process (a real child
  Python process) or in this one, fails *at open* with ``LockedError`` (a RuntimeError)
  naming the lock file ``{db}-{table}.lock`` -- never later with a seq collision.  Other
  tables of the same file can be written at the same time.  When the writer closes, or
  is killed with SIGKILL, the next writer can open; ``close()`` leaves no lock file.
- ``Sqlite3(path, read_only=True)`` opens a consistent snapshot while a writer (a child
  process writing continuously) runs: it sees a prefix of the log, seqs 1..N contiguous
  as committed, never part of a batch.  It refuses every write (``ReadOnlyError``),
  changes no byte of the database, takes no lock, and on a missing file is an error
  that creates nothing.
- PostgreSQL: the same, with the advisory lock the driver takes per table.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Sqlite3, Store
from appendmuch.errors import DatabaseError, LockedError, ReadOnlyError, WriteError
from appendmuch.recovery import replay, write_recovery_file
from backends import PostgresBackend, SqliteBackend, pg_conninfo
from helpers import wait_for
from snapshots import cache_snapshot

#: how long to wait for a child process or a server-side event at most
PATIENCE = 60.0
BATCH = 25

#: A child process that holds a table open for writing.  argv: kind, where, prefix,
#: rows.  Writes ``rows`` rows, flushes, prints "ready", then waits for its stdin to
#: close (or to be killed) and closes the store.
HOLDER = r"""
import sys
from appendmuch import PostgreSQL, Sqlite3, Store
kind, where, prefix, rows = sys.argv[1:5]
if kind == "sqlite":
    driver = Sqlite3(where, table_prefix=prefix, batch_interval=3600)
else:
    driver = PostgreSQL(where, table_prefix=prefix, min_size=1, max_size=2,
                        batch_interval=3600)
store = Store(driver)
holder = store.storage("held")
for i in range(int(rows)):
    holder.n = i
store.flush()
print("ready", flush=True)
sys.stdin.read()
store.close()
print("closed", flush=True)
"""

#: A child process that writes continuously, one full batch per transaction: the log is
#: seqs 1..N with value == seq.  argv: kind, where, prefix, batch, stop_file.  Stops
#: (after a whole batch) when stop_file exists, or after 60 s.
WRITER = r"""
import os, sys, time
from appendmuch import PostgreSQL, Sqlite3, Store
kind, where, prefix, batch, stop_file = sys.argv[1:6]
batch = int(batch)
if kind == "sqlite":
    driver = Sqlite3(where, table_prefix=prefix, batch_size=batch, batch_interval=3600)
else:
    driver = PostgreSQL(where, table_prefix=prefix, min_size=1, max_size=2,
                        batch_size=batch, batch_interval=3600)
store = Store(driver)
log = store.storage("w")
deadline = time.monotonic() + 60
i = 0
while True:
    i += 1
    log.n = i
    if i % batch == 0:
        if i == batch:
            store.flush()
            print("ready", flush=True)
        if os.path.exists(stop_file) or time.monotonic() > deadline:
            break
store.close()
print("done", i, flush=True)
"""

#: A child process that tries to open a table for writing and reports what happened.
OPENER = r"""
import sys
from appendmuch import Sqlite3, Store
from appendmuch.errors import LockedError
try:
    Store(Sqlite3(sys.argv[1]))
except LockedError as exc:
    print("LockedError", isinstance(exc, RuntimeError), exc, flush=True)
else:
    print("opened", flush=True)
"""


class Child:
    """A child Python process running one of the scripts above."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, word: str) -> str:
        """Wait for the next output line; it must start with ``word``."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            self.kill()
            _, err = self.proc.communicate(timeout=PATIENCE)
            pytest.fail(f"child printed {line!r}, expected {word!r}; stderr:\n{err}")
        return line.strip()

    def finish(self) -> str:
        """Close its stdin (the holder's signal to close) and wait for it to exit
        cleanly; return the rest of its stdout."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=PATIENCE)
        out, err = self.proc.stdout.read(), self.proc.stderr.read()
        assert self.proc.returncode == 0, err
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=PATIENCE)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    """Start child processes; any still running at the end is killed (by its pid)."""
    started: list[Child] = []

    def start(script: str, *args: Any) -> Child:
        child = Child(script, *map(str, args))
        started.append(child)
        return child

    yield start
    for child in started:
        child.cleanup()


def lock_file(path: Path, table: str = "appendmuch_values") -> Path:
    return Path(f"{path}-{table}.lock")


def files_in(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def make_log(path: Path, rows: int = 5, **kwargs: Any) -> None:
    """A closed SQLite log with ``rows`` writes of game/p1.score (seqs 1..rows)."""
    store = Store(Sqlite3(path, **kwargs))
    player = store.storage("game", "p1")
    for i in range(rows):
        player.score = i
    store.close()


# ---------------------------------------------------------------- SQLite: one writer


class TestSqliteWriterLock:
    def test_second_writer_in_another_process_fails_at_open(
        self, tmp_path: Path, children: Callable[..., Child]
    ) -> None:
        """While a child process has the table open for writing, opening it here raises
        LockedError naming the lock file, and the reverse holds too (a child process
        trying while this process writes); the holder's log is untouched."""
        path = tmp_path / "log.sqlite3"
        holder = children(HOLDER, "sqlite", path, "appendmuch", 3)
        holder.expect("ready")
        assert lock_file(path).exists()
        with pytest.raises(LockedError, match=re.escape(str(lock_file(path)))) as info:
            Store(Sqlite3(path))
        assert isinstance(info.value, RuntimeError)
        assert "closed" in holder.finish()
        assert not lock_file(path).exists()

        store = Store(Sqlite3(path))
        opener = children(OPENER, path)
        line = opener.expect("LockedError")
        assert "True" in line and str(lock_file(path)) in line
        opener.finish()
        store.storage("held").n = 99
        store.close()
        history = Store(Sqlite3(path, read_only=True)).storage("held").__history__()["n"]
        assert [(v.seq, v.data) for v in history] == [(1, 0), (2, 1), (3, 2), (4, 99)]

    def test_second_writer_in_this_process_fails_at_open(self, tmp_path: Path) -> None:
        """Two drivers for one table in one process: the second fails at open with
        LockedError; the first keeps writing, with no seq collision."""
        path = tmp_path / "log.sqlite3"
        first = Store(Sqlite3(path))
        first.storage("a").x = 1
        second = Sqlite3(path)
        with pytest.raises(LockedError, match=re.escape(str(lock_file(path)))):
            Store(second)
        with pytest.raises(LockedError):
            second.restore(b"")
        first.storage("a").x = 2
        first.close()
        rows = SqliteBackend(tmp_path).raw_rows()
        assert [(r[0], r[3]) for r in rows] == [(1, b"\x001"), (2, b"\x002")]
        assert not lock_file(path).exists()

    def test_other_tables_of_one_file_can_be_written_at_once(self, tmp_path: Path) -> None:
        """Different table prefixes (and tblextra) in one file each have a lock of their
        own: all can be open for writing, each with its own sequence."""
        path = tmp_path / "log.sqlite3"
        stores = [
            Store(Sqlite3(path, table_prefix="a")),
            Store(Sqlite3(path, table_prefix="b")),
            Store(Sqlite3(path, table_prefix="a", tblextra="x")),
        ]
        for round_ in range(3):
            for i, store in enumerate(stores):
                store.storage("ns").v = (i, round_)
                store.flush()
        for store in stores:
            store.close()
        for i, (prefix, extra) in enumerate([("a", ""), ("b", ""), ("a", "x")]):
            driver = Sqlite3(path, table_prefix=prefix, tblextra=extra, read_only=True)
            history = Store(driver).storage("ns").__history__()["v"]
            assert [(v.seq, v.data) for v in history] == [(1, (i, 0)), (2, (i, 1)), (3, (i, 2))]
        assert not list(tmp_path.glob("*.lock"))

    def test_next_writer_opens_after_close_and_no_lock_file_is_left(self, tmp_path: Path) -> None:
        path = tmp_path / "log.sqlite3"
        store = Store(Sqlite3(path))
        store.storage("a").x = 1
        assert lock_file(path).exists()
        store.close()
        assert not lock_file(path).exists()
        store = Store(Sqlite3(path))
        store.storage("a").x = 2
        assert store.storage("a").__history__()["x"][-1].seq == 2
        store.close()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["log.sqlite3"]

    def test_next_writer_opens_after_the_writer_is_killed(
        self, tmp_path: Path, children: Callable[..., Child]
    ) -> None:
        """A writer killed with SIGKILL leaves its lock file behind, but not the lock: the
        next writer opens, sees every row the dead one committed, continues its seqs,
        and removes the lock file when it closes."""
        path = tmp_path / "log.sqlite3"
        holder = children(HOLDER, "sqlite", path, "appendmuch", 4)
        holder.expect("ready")
        holder.kill()
        assert holder.proc.returncode == -signal.SIGKILL
        store = Store(Sqlite3(path))
        held = store.storage("held")
        assert [v.data for v in held.__history__()["n"]] == [0, 1, 2, 3]
        held.n = 4
        assert held.__history__()["n"][-1].seq == 5
        store.close()
        assert not lock_file(path).exists()

    def test_same_database_through_a_symlink_is_locked(self, tmp_path: Path) -> None:
        """The lock belongs to the database, not to the spelling of its path: opening the
        same file through a symlink (or an absolute path) while it is open for writing
        raises LockedError instead of letting two writers collide on seqs."""
        path = tmp_path / "log.sqlite3"
        make_log(path, rows=1)
        link = tmp_path / "link.sqlite3"
        link.symlink_to(path)
        store = Store(Sqlite3(path))
        try:
            with pytest.raises(LockedError):
                Store(Sqlite3(path.resolve()))
            with pytest.raises(LockedError):
                Store(Sqlite3(link))
        finally:
            store.close()
            gc.collect()

    def test_table_names_differing_only_in_case_are_one_table(self, tmp_path: Path) -> None:
        """SQLite table names are case-insensitive: prefixes "Game" and "game" name the
        same table, so the second writer must get LockedError (or the two must stay
        separate), never a seq collision at the first flush."""
        path = tmp_path / "log.sqlite3"
        first = Store(Sqlite3(path, table_prefix="Game", recovery_dir=tmp_path / "r"))
        first.storage("a").x = 1
        first.flush()
        try:
            second = Store(Sqlite3(path, table_prefix="game", recovery_dir=tmp_path / "r"))
        except LockedError:
            first.close()
            return
        try:
            first.storage("a").x = 2
            second.storage("b").y = 2
            first.flush()
            second.flush()  # a UNIQUE(seq) failure here is the collision forbidden here
        finally:
            (tmp_path / "r").mkdir()
            for store in (second, first):
                with contextlib.suppress(WriteError):
                    store.close()


# ---------------------------------------------------------------- SQLite: read-only


class TestSqliteReadOnly:
    def test_consistent_snapshots_while_a_writer_runs(
        self, tmp_path: Path, children: Callable[..., Child]
    ) -> None:
        """A child process writes continuously (batches of BATCH rows, one transaction
        each).  Every read-only Store opened meanwhile sees seqs 1..N contiguous with N a
        multiple of BATCH (never half a batch), values matching, the counter at N, and
        refuses writes; successive snapshots grow.  At the end a snapshot sees all."""
        path = tmp_path / "log.sqlite3"
        stop = tmp_path / "stop"
        writer = children(WRITER, "sqlite", path, "appendmuch", BATCH, stop)
        writer.expect("ready")
        seen: list[int] = []
        deadline = time.monotonic() + PATIENCE
        while len(set(seen)) < 4 and time.monotonic() < deadline:
            seen.append(self._check_snapshot(path))
        stop.touch()
        total = int(writer.expect("done").split()[1])
        writer.finish()
        assert len(set(seen)) >= 4, f"the writer did not move: {seen}"
        assert seen == sorted(seen)
        assert self._check_snapshot(path) == total

    @staticmethod
    def _check_snapshot(path: Path) -> int:
        store = Store(Sqlite3(path, read_only=True))
        try:
            log = store.storage("w")
            history = log.__history__().get("n", ())
            seqs = [v.seq for v in history]
            count = len(seqs)
            assert seqs == list(range(1, count + 1))
            assert [v.data for v in history] == seqs
            assert count % BATCH == 0, f"saw {count} rows: part of a batch"
            assert store.driver.last_seq == count
            with pytest.raises(ReadOnlyError):
                log.n = -1
            assert store.driver.last_seq == count
            return count
        finally:
            store.close()

    def test_read_only_takes_no_lock_while_a_writer_holds_it(
        self, tmp_path: Path, children: Callable[..., Child]
    ) -> None:
        """Read-only opens while another process holds the writer lock, and creates no
        lock file of its own (the writer's is the only one)."""
        path = tmp_path / "log.sqlite3"
        holder = children(HOLDER, "sqlite", path, "appendmuch", 2)
        holder.expect("ready")
        locks_before = sorted(p.name for p in tmp_path.glob("*.lock"))
        store = Store(Sqlite3(path, read_only=True))
        assert [v.data for v in store.storage("held").__history__()["n"]] == [0, 1]
        assert sorted(p.name for p in tmp_path.glob("*.lock")) == locks_before
        store.close()
        holder.finish()

    def test_refuses_every_write_and_changes_nothing(self, tmp_path: Path) -> None:
        """Assignment, del, a with-block mutation, reset, restore and replay through a
        read-only driver raise ReadOnlyError; the cache, the database bytes and the
        counter are unchanged, and no lock file appears."""
        path = tmp_path / "log.sqlite3"
        store = Store(Sqlite3(path))
        player = store.storage("game", "p1")
        player.score = 1
        player.items = [1]
        store.close()
        recovery = str(tmp_path / "r.msgpack")
        write_recovery_file(recovery, [(9, "game/p1", "score", b"\x009", 1.0, "x:1")], [])
        before = files_in(tmp_path)

        store = Store(Sqlite3(path, read_only=True))
        cache = cache_snapshot(store)
        player = store.storage("game", "p1")
        attempts: list[Callable[[], Any]] = [
            lambda: setattr(player, "score", 2),
            lambda: setattr(player, "fresh", 2),
            lambda: setattr(store.storage("brand", "new"), "x", 1),
            lambda: delattr(player, "score"),
            store.driver.reset,
            lambda: store.driver.restore(b""),
            lambda: replay(recovery, store.driver),
        ]
        for attempt in attempts:
            with pytest.raises(ReadOnlyError):
                attempt()
        with pytest.raises(ReadOnlyError), player:
            player.items.append(2)
        assert isinstance(ReadOnlyError("x"), RuntimeError)
        store.flush()  # nothing to write: fine
        assert cache_snapshot(store) == cache
        assert store.get_namespace(("brand", "new")) is None
        assert store.get_namespace(("brand",)) is None
        assert player.score == 1
        assert store.driver.last_seq == 2
        store.close()
        after = files_in(tmp_path)
        assert after["log.sqlite3"] == before["log.sqlite3"]
        assert not [name for name in after if name.endswith(".lock")]

    def test_never_changes_a_byte_of_the_database(self, tmp_path: Path) -> None:
        """Opening, loading, dumping and closing read-only leaves the database file
        byte-identical (both for a log in WAL mode and one never switched to it)."""
        path = tmp_path / "log.sqlite3"
        make_log(path, rows=6)
        before = path.read_bytes()
        for _ in range(2):
            store = Store(Sqlite3(path, read_only=True))
            assert store.storage("game", "p1").score == 5
            assert len(b"".join(store.driver.dump())) > 0
            assert store.driver.size() > 0
            store.close()
            gc.collect()
        assert path.read_bytes() == before
        assert not list(tmp_path.glob("*.lock"))

    def test_creates_no_file(self, tmp_path: Path) -> None:
        """The documented promise of ``read_only=True`` (Sqlite3 docstring: "open without
        writing anything, creating nothing, locking nothing"): the directory holds the
        same files, with the same bytes, after a read-only session."""
        path = tmp_path / "log.sqlite3"
        make_log(path, rows=3)
        before = files_in(tmp_path)
        store = Store(Sqlite3(path, read_only=True))
        assert store.storage("game", "p1").score == 2
        store.close()
        gc.collect()
        assert files_in(tmp_path) == before

    def test_missing_file_or_table_is_an_error_that_creates_nothing(self, tmp_path: Path) -> None:
        """Read-only on a path with no database raises DatabaseError (a RuntimeError)
        naming the path and creates no file; on a database without the table it raises
        naming the table and creates no table."""
        missing = tmp_path / "missing.sqlite3"
        with pytest.raises(DatabaseError, match=re.escape(str(missing))) as info:
            Store(Sqlite3(missing, read_only=True))
        assert isinstance(info.value, RuntimeError)
        gc.collect()
        assert list(tmp_path.iterdir()) == []

        path = tmp_path / "log.sqlite3"
        make_log(path, rows=1)
        before = path.read_bytes()
        with pytest.raises(DatabaseError, match="other_values"):
            Store(Sqlite3(path, table_prefix="other", read_only=True))
        gc.collect()
        assert path.read_bytes() == before
        assert not list(tmp_path.glob("*.lock"))


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg() -> Iterator[PostgresBackend]:
    made = PostgresBackend(pg_conninfo())
    try:
        yield made
    finally:
        made.cleanup()


class TestPostgres:
    def test_second_writer_gets_locked_error(
        self, pg: PostgresBackend, children: Callable[..., Child]
    ) -> None:
        """A second writer on the same table prefix, in this process or while a child
        process holds it, fails at open with LockedError; another prefix is free; after
        the holder closes, the next writer opens and continues the seqs."""
        first = Store(pg.driver())
        first.storage("a").x = 1
        with pytest.raises(LockedError) as info:
            Store(pg.driver())
        assert isinstance(info.value, RuntimeError)
        assert pg.prefix in str(info.value)
        other = PostgresBackend(pg.conninfo)
        try:
            Store(other.driver()).close()
        finally:
            other.cleanup()
        first.close()

        holder = children(HOLDER, "pg", pg.conninfo, pg.prefix, 2)
        holder.expect("ready")
        with pytest.raises(LockedError):
            Store(pg.driver())
        holder.finish()
        store = Store(pg.driver())
        store.storage("a").x = 2
        assert store.storage("a").__history__()["x"][-1].seq == 4
        store.close()

    def test_killed_writer_releases_the_lock(
        self, pg: PostgresBackend, children: Callable[..., Child]
    ) -> None:
        """When a writer process is killed, the server ends its session and with it the
        lock: the next writer can open (as soon as the server noticed) and sees every
        row the dead writer committed."""
        holder = children(HOLDER, "pg", pg.conninfo, pg.prefix, 3)
        holder.expect("ready")
        holder.kill()
        stores: list[Store] = []

        def opened() -> bool:
            try:
                stores.append(Store(pg.driver()))
            except LockedError:
                return False
            return True

        wait_for(opened, "the server to release the dead writer's lock")
        store = stores[0]
        assert [v.data for v in store.storage("held").__history__()["n"]] == [0, 1, 2]
        store.close()

    def test_read_only_snapshots_while_a_writer_runs(
        self, pg: PostgresBackend, children: Callable[..., Child]
    ) -> None:
        """Read-only Stores opened while a child process writes see seqs 1..N contiguous,
        N a multiple of the batch size, and refuse assignment, reset and restore."""
        stop = Path(os.environ.get("TMPDIR", "/tmp")) / f"stop-{pg.prefix}"
        writer = children(WRITER, "pg", pg.conninfo, pg.prefix, BATCH, stop)
        try:
            writer.expect("ready")
            seen: list[int] = []
            deadline = time.monotonic() + PATIENCE
            while len(set(seen)) < 4 and time.monotonic() < deadline:
                store = Store(pg.driver(read_only=True))
                try:
                    log = store.storage("w")
                    history = log.__history__().get("n", ())
                    seqs = [v.seq for v in history]
                    assert seqs == list(range(1, len(seqs) + 1))
                    assert [v.data for v in history] == seqs
                    assert len(seqs) % BATCH == 0, f"saw {len(seqs)} rows: part of a batch"
                    with pytest.raises(ReadOnlyError):
                        log.n = -1
                    with pytest.raises(ReadOnlyError):
                        store.driver.reset()
                    with pytest.raises(ReadOnlyError):
                        store.driver.restore(b"")
                    seen.append(len(seqs))
                finally:
                    store.close()
            stop.touch()
            total = int(writer.expect("done").split()[1])
            writer.finish()
        finally:
            stop.unlink(missing_ok=True)
        assert len(set(seen)) >= 4, f"the writer did not move: {seen}"
        assert seen == sorted(seen)
        assert [row[0] for row in pg.raw_rows()] == list(range(1, total + 1))
