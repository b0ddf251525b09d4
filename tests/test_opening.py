"""Opening and closing: what a failed open leaves (nothing), what a closed Store may
still do (read, never take the writer lock again), and how the PostgreSQL driver
meets an unreachable server, schemas and a one-connection pool."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appendmuch import PostgreSQL, Sqlite3, Store
from appendmuch.errors import AppendmuchError, ClosedError, LockedError, RecoveryPendingError
from backends import Backend, pg_conninfo


def lock_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".lock"))


# ---------------------------------------------------------------- 9.7: after close()


class TestAfterClose:
    def test_reads_after_close_take_no_writer_lock(self, place: Backend, tmp_path: Path) -> None:
        """store.load(), driver.dump() and driver.size() after close() still read the
        log, but a second writer opens meanwhile: nothing took the lock again."""
        store = place.store()
        store.storage("a").x = 1
        store.close()
        store.load()
        assert store.storage("a").x == 1
        assert len(list(store.driver.dump())) == 1
        assert store.driver.size()
        assert lock_files(tmp_path) == []
        other = place.store()  # the same table, in the same process
        other.storage("a").x = 2
        other.close()
        store.load()
        assert store.storage("a").x == 2
        assert lock_files(tmp_path) == []

    def test_writes_through_a_retired_driver_raise_closed_error(self, place: Backend) -> None:
        store = place.store()
        store.storage("a").x = 1
        store.close()
        driver = store.driver
        with pytest.raises(ClosedError):
            driver.append((99, "a", "y", b"\x001", 1.0, "m:1"))
        with pytest.raises(ClosedError):
            driver.reset()
        with pytest.raises(ClosedError):
            Store(driver)
        assert [row[2] for row in place.raw_rows()] == ["x"]

    def test_a_driver_closed_on_its_own_reopens_for_writing(self, tmp_path: Path) -> None:
        """Without a Store, driver.close() keeps its documented meaning: used again, the
        driver reconnects (and locks) on next use."""
        driver = Sqlite3(tmp_path / "log.sqlite3")
        driver.ensure()
        driver.close()
        driver.ensure()
        assert lock_files(tmp_path) != []
        driver.close()
        assert lock_files(tmp_path) == []

    def test_no_lock_file_outlives_a_process_that_read_after_close(self, tmp_path: Path) -> None:
        path = tmp_path / "log.sqlite3"
        code = (
            "import sys\n"
            "from appendmuch import Sqlite3, Store\n"
            "store = Store(Sqlite3(sys.argv[1]))\n"
            "store.storage('a').x = 1\n"
            "store.close()\n"
            "store.load(); list(store.driver.dump()); store.driver.size()\n"
            "import os; os._exit(0)\n"  # no cleanup at all, as after a kill
        )
        done = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60)
        assert done.returncode == 0
        assert lock_files(tmp_path) == []


# ---------------------------------------------------------------- 9.9: bad paths


class TestBadSqlitePaths:
    def test_missing_directory(self, tmp_path: Path) -> None:
        path = tmp_path / "nope" / "log.sqlite3"
        with pytest.raises(AppendmuchError, match="nope"):
            Store(Sqlite3(path))
        assert list(tmp_path.iterdir()) == []

    def test_directory_as_database(self, tmp_path: Path) -> None:
        path = tmp_path / "adir"
        path.mkdir()
        with pytest.raises(AppendmuchError, match="adir"):
            Store(Sqlite3(path))
        assert [p.name for p in tmp_path.iterdir()] == ["adir"]
        assert list(path.iterdir()) == []

    def test_damaged_pages(self, tmp_path: Path) -> None:
        """A file whose data pages are garbage: one AppendmuchError naming the file,
        no lock or journal files, the file byte-identical."""
        path = tmp_path / "log.sqlite3"
        with Store(Sqlite3(path)) as store:
            for i in range(2000):
                store.storage("game", f"p{i}").note = f"{i}" * 50
        conn = sqlite3.connect(path)
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        conn.close()
        data = bytearray(path.read_bytes())
        assert len(data) > 20 * page_size
        # garbage over the table's leaf pages (b-tree page type 13), keeping the schema
        # and the seq index readable: the open succeeds, loading the rows fails
        leaves = [page for page in range(1, len(data) // page_size) if data[page * page_size] == 13]
        assert len(leaves) > 10
        for page in leaves[len(leaves) // 2 :]:
            data[page * page_size : (page + 1) * page_size] = b"\xa5" * page_size
        path.write_bytes(bytes(data))
        with pytest.raises(AppendmuchError, match=r"log\.sqlite3") as info:
            Store(Sqlite3(path))
        assert not isinstance(info.value, sqlite3.Error)
        assert path.read_bytes() == bytes(data)
        assert [p.name for p in tmp_path.iterdir()] == ["log.sqlite3"]


# ---------------------------------------------------------------- 9.10: unreachable server


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestUnreachableServer:
    def test_one_clear_error_and_nothing_on_stderr(self, capfd: pytest.CaptureFixture[str]) -> None:
        port = closed_port()
        with pytest.raises(AppendmuchError) as info:
            Store(PostgreSQL(f"host=127.0.0.1 port={port} user=nobody dbname=nothing"))
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message
        assert "refused" in message.lower()
        captured = capfd.readouterr()
        assert captured.err == ""

    def test_nothing_on_stderr_without_logging_configured(self) -> None:
        """In an application that configured no logging (unlike pytest), the pool's
        messages would reach stderr through logging's last resort."""
        code = (
            "import sys\n"
            "from appendmuch import PostgreSQL, Store\n"
            "try:\n"
            "    Store(PostgreSQL(f'host=127.0.0.1 port={sys.argv[1]} user=x dbname=y'))\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(closed_port())],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.stdout == "DatabaseError\n"
        assert done.stderr == ""

    def test_connect_timeout_is_a_keyword(self) -> None:
        driver = PostgreSQL("host=127.0.0.1 port=1", connect_timeout=3.0)
        assert driver.connect_timeout == 3.0
        assert PostgreSQL("host=127.0.0.1 port=1 connect_timeout=7").connect_timeout == 7.0
        assert PostgreSQL("host=127.0.0.1 port=1").connect_timeout == 5.0
        with pytest.raises(ValueError):
            PostgreSQL("host=127.0.0.1 port=1", connect_timeout=0)


# ---------------------------------------------------------------- 12.11 and 12.17: PostgreSQL


@pytest.fixture
def schemas() -> Iterator[tuple[str, list[str]]]:
    import psycopg

    conninfo = pg_conninfo()
    names = [f"s{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield conninfo, names
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def in_schema(conninfo: str, schema: str, **kwargs: object) -> PostgreSQL:
    return PostgreSQL(
        conninfo, min_size=0, max_size=2, kwargs={"options": f"-c search_path={schema}"}, **kwargs
    )


def tables_in(conninfo: str, schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
    return [name for (name,) in rows]


class TestPostgresOpening:
    def test_same_table_in_two_schemas_has_two_writers(
        self, schemas: tuple[str, list[str]]
    ) -> None:
        conninfo, (one, two) = schemas
        first = Store(in_schema(conninfo, one))
        second = Store(in_schema(conninfo, two))  # no false LockedError
        first.storage("a").x = 1
        second.storage("a").x = 2
        first.close()
        second.close()
        assert tables_in(conninfo, one) == tables_in(conninfo, two) == ["appendmuch_values"]

    def test_a_locked_open_creates_no_table(self, schemas: tuple[str, list[str]]) -> None:
        """The writer lock is taken before the table is created: an open that finds
        another writer leaves the schema as it was."""
        import psycopg

        conninfo, (one, _) = schemas
        holder = Store(in_schema(conninfo, one))
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{one}".appendmuch_values')
        with pytest.raises(LockedError):
            Store(in_schema(conninfo, one))
        assert tables_in(conninfo, one) == []
        holder.close()

    def test_locked_error_states_the_time_waited(self, schemas: tuple[str, list[str]]) -> None:
        conninfo, (one, _) = schemas
        holder = Store(in_schema(conninfo, one))
        start = time.monotonic()
        with pytest.raises(LockedError) as info:
            Store(in_schema(conninfo, one, lock_timeout=30.0))
        elapsed = time.monotonic() - start
        holder.close()
        waited = float(str(info.value).split("waited ")[1].split(" s")[0])
        assert waited <= elapsed  # an idle holder: it says what it did, not the limit

    @pytest.mark.parametrize("min_size", [0, 1, None])
    def test_a_one_connection_pool_opens(self, min_size: int | None) -> None:
        conninfo = pg_conninfo()
        kwargs = {} if min_size is None else {"min_size": min_size}
        prefix = f"t{uuid.uuid4().hex[:12]}"
        store = Store(PostgreSQL(conninfo, prefix, max_size=1, timeout=10.0, **kwargs))
        store.storage("a").x = 1
        store.flush()
        assert [row[2] for row in store.driver.load_rows()] == ["x"]
        store.close()
        reopened = Store(PostgreSQL(conninfo, prefix, max_size=1, min_size=0, read_only=True))
        assert reopened.storage("a").x == 1
        reopened.close()
        import psycopg

        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{prefix}_values"')


class _RefusingSqlite3(Sqlite3):
    """A driver whose open fails after connecting, as a pending recovery file of this
    very database makes it fail."""

    def _refuse_if_recovery_pending(self) -> None:
        raise RecoveryPendingError("refused for the test", recovery_files=[])


def test_a_failed_open_removes_the_file_it_created(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    with pytest.raises(RecoveryPendingError):
        Store(_RefusingSqlite3(path))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_open_keeps_a_file_that_was_there(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with Store(Sqlite3(path)) as store:
        store.storage("a").x = 1
    before = path.read_bytes()
    with pytest.raises(RecoveryPendingError):
        Store(_RefusingSqlite3(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["old.sqlite3"]


# ---------------------------------------------------------------- 12.17: read-only after a crash


def test_read_only_open_after_a_crash_changes_no_file(tmp_path: Path) -> None:
    """A writer killed in WAL mode leaves -wal and -shm; a read-only Store then sees
    every committed row and changes no byte of any file (not even -shm)."""
    path = tmp_path / "log.sqlite3"
    code = (
        "import os, sys\n"
        "from appendmuch import Sqlite3, Store\n"
        "store = Store(Sqlite3(sys.argv[1], write_through=True))\n"
        "for i in range(50):\n"
        "    store.storage('a').x = i\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60)
    assert done.returncode == -9
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"log.sqlite3-wal", "log.sqlite3-shm"} <= set(before)
    store = Store(Sqlite3(path, read_only=True))
    assert store.storage("a").x == 49
    store.load()
    store.close()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
