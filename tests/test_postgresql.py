"""PostgreSQL-specific behaviour, against a real server (see tests/pgserver.py).

The shared contract suite already runs on PostgreSQL through the ``backend`` fixture;
these tests cover what only a server has: table prefixes sharing a database, moving a
log between SQLite and PostgreSQL, batches as single transactions, and the server going
away while an application writes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from appendmuch import Sqlite3, Store
from appendmuch.drivers.wakeup import Doorbell
from appendmuch.errors import SchemaError, WriteError
from backends import PostgresBackend, pg_conninfo
from helpers import python_without
from pgserver import TempCluster


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresBackend]:
    made = PostgresBackend(pg_conninfo())
    try:
        yield made
    finally:
        made.cleanup()


def _commits(conninfo: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        (count,) = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(count)


class TestLayout:
    def test_table_layout(self, pg: PostgresBackend) -> None:
        """One table {prefix}_values with the SPEC section 10 columns and types."""
        Store(pg.driver()).close()
        with psycopg.connect(pg.conninfo) as conn:
            columns = conn.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (f"{pg.prefix}_values",),
            ).fetchall()
        assert columns == [
            ("id", "bigint", "NO"),
            ("seq", "bigint", "NO"),
            ("namespace", "text", "NO"),
            ("field", "text", "NO"),
            ("value", "bytea", "YES"),
            ("created_at", "double precision", "NO"),
            ("context", "text", "NO"),
        ]

    def test_incompatible_table_is_refused_and_left_untouched(self, pg: PostgresBackend) -> None:
        table = f"{pg.prefix}_values"
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{table}" (id BIGSERIAL PRIMARY KEY, seq TEXT, x INT)')
            conn.execute(f"INSERT INTO \"{table}\" (seq, x) VALUES ('a', 1)")
        with pytest.raises(SchemaError, match="incompatible layout") as info:
            Store(pg.driver())
        assert isinstance(info.value, RuntimeError)
        with psycopg.connect(pg.conninfo) as conn:
            rows = conn.execute(f'SELECT seq, x FROM "{table}"').fetchall()
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position",
                (table,),
            ).fetchall()
        assert rows == [("a", 1)]
        assert columns == [("id",), ("seq",), ("x",)]

    def test_replace_index_spec_creates_partial_unique_index(self, pg: PostgresBackend) -> None:
        driver = pg.driver(replace_index_specs=[("state", "game/%")])
        store = Store(driver, replace_predicate=lambda ns, f: f == "state")
        player = store.storage("game", "p1")
        for i in range(5):
            player.state = i
        store.close()
        with psycopg.connect(pg.conninfo) as conn:
            (definition,) = conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s",
                (f"{pg.prefix}_values", "%replace%"),
            ).fetchone()
            rows = conn.execute(
                f"SELECT seq, value FROM \"{pg.prefix}_values\" WHERE field = 'state'"
            ).fetchall()
        assert "UNIQUE" in definition and "game/%" in definition
        assert rows == [(5, b"\x004")]


class TestReadingNewRows:
    """Shared mode reads the rows committed since a seq often (the follower after each
    notification, a writer taking the lease, ``sync()``): that read must cost what it
    returns, not the table, also before autovacuum has analyzed a fast-growing table."""

    @pytest.mark.parametrize("plan", ["force_custom_plan", "force_generic_plan"])
    def test_rows_after_a_seq_are_read_through_the_seq_index(
        self, pg: PostgresBackend, plan: str
    ) -> None:
        store = Store(pg.driver())
        query = store.driver._after_sql().replace("%s", "$1")  # type: ignore[attr-defined]
        store.close()
        table = f"{pg.prefix}_values"
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            # as a benchmark run leaves it: 200,000 rows, never analyzed
            conn.execute(
                f'INSERT INTO "{table}" (seq, namespace, field, value, created_at, context) '
                "SELECT g, 'game/p1', 'score', '\\x0031'::bytea, 1.0, 'app.py.main:1' "
                "FROM generate_series(1, 200000) AS g"
            )
            conn.execute(f"SET plan_cache_mode = {plan}")
            conn.execute(f"PREPARE after(int8) AS {query}")
            lines = [row[0] for row in conn.execute("EXPLAIN EXECUTE after(199990)")]
        plan_text = "\n".join(lines)
        assert "Seq Scan" not in plan_text, plan_text
        assert f"{table}_seq_key" in plan_text, plan_text


class TestFollowerWaking:
    """A shared-mode engine waits for notifications on its LISTEN connection (and its
    doorbell): another session's commit must end the wait whether its notification is
    still on the socket or came in already with the engine's last read; its own
    commit's notification, and the doorbell, end it without asking for a read."""

    @staticmethod
    def _wait(driver: Any, bell: Doorbell) -> bool:
        # The timeout is an hour: only a notification (or the bell) ends this wait.
        result: list[bool] = []
        waiter = threading.Thread(target=lambda: result.append(driver.lease_wait(3600.0, bell)))
        waiter.start()
        waiter.join(60)
        assert not waiter.is_alive(), "the notification did not end the wait"
        return result[0]

    @pytest.fixture
    def follower(self, pg: PostgresBackend) -> Iterator[Any]:
        driver: Any = pg.driver(shared=True)
        driver._open()  # connected, no engine thread: the test waits in its place
        driver._follow_connection()  # LISTEN
        try:
            yield driver
        finally:
            driver.lease_close()
            driver._disconnect()

    @pytest.mark.parametrize("read_between", [False, True], ids=["on-socket", "read-already"])
    def test_another_sessions_commit_asks_for_a_read_and_our_own_does_not(
        self, pg: PostgresBackend, follower: Any, read_between: bool
    ) -> None:
        bell = Doorbell()
        writer = follower._writer_connection()
        writer.execute("SELECT pg_notify(%s, '7')", (follower._channel,))
        if read_between:
            follower.lease_rows_after(0)  # (the notification may arrive with this read)
        assert self._wait(follower, bell) is False  # our own commit: the cache has it
        with psycopg.connect(pg.conninfo, autocommit=True) as other:
            other.execute("SELECT pg_notify(%s, '8')", (follower._channel,))
        if read_between:
            follower.lease_rows_after(0)
        assert self._wait(follower, bell) is True

    def test_the_doorbell_ends_the_wait_without_a_read(self, follower: Any) -> None:
        bell = Doorbell()
        bell.ring()
        assert self._wait(follower, bell) is False


class TestPreparedStatements:
    def test_a_prepare_cut_short_is_repeated_on_the_same_session(self, pg: PostgresBackend) -> None:
        """The batch insert is prepared once per writer session; a prepare() whose
        completion was never noted (a Ctrl-C after its PREPARE) runs again without
        failing the next write."""
        store = Store(pg.driver())
        player = store.storage("game", "p1")
        player.score = 1
        store.flush()
        driver: Any = store.driver

        def as_if_cut_short() -> None:  # (in the writer's thread: its connection)
            driver._leave_pipeline()  # (the next batch starts a pipeline again)
            driver._prepared_on = None  # as if prepare() was cut short after its PREPAREs

        driver.in_writer(as_if_cut_short)
        player.score = 2
        store.flush()
        store = pg.reopen(store)
        assert [v.data for v in store.storage("game", "p1").__history__()["score"]] == [1, 2]
        store.close()


class TestSeparation:
    def test_two_prefixes_in_one_database_stay_separate(self, pg: PostgresBackend) -> None:
        other = PostgresBackend(pg.conninfo)
        try:
            a, b = Store(pg.driver()), Store(other.driver())
            a.storage("game", "p1").score = 1
            b.storage("game", "p1").score = 2
            b.storage("game", "p2").score = 3
            a = pg.reopen(a)
            b = other.reopen(b)
            assert a.storage("game", "p1").score == 1
            assert a.get_namespace(("game", "p2")) is None
            assert b.storage("game", "p1").score == 2
            assert [row[0] for row in pg.raw_rows()] == [1]
            assert [row[0] for row in other.raw_rows()] == [1, 2]
            a.close()
            b.close()
        finally:
            other.cleanup()


class TestMovingLogs:
    def test_sqlite_to_postgresql_and_back_is_byte_identical(
        self, pg: PostgresBackend, tmp_path: Path
    ) -> None:
        source = Store(Sqlite3(tmp_path / "a.sqlite3"))
        player = source.storage("game", "p1")
        player.score = 10
        with player:
            player.items = ["sword"]
            player.items.append("shield")
        player.round = 1
        del player.round
        source.storage("game", "p2").note = "héllo"
        dump = b"".join(source.driver.dump())
        source.close()

        target = pg.driver()
        assert target.restore(dump) == 6
        from_pg = b"".join(target.dump())
        target.close()
        assert from_pg == dump

        back = Sqlite3(tmp_path / "b.sqlite3")
        back.restore(from_pg)
        assert b"".join(back.dump()) == dump
        back.close()

        store = Store(pg.driver())
        with store.storage("game", "p1") as p1:
            assert p1.items == ["sword", "shield"]
        assert store.storage("game", "p2").note == "héllo"
        assert store.storage("game", "p1").get("round") is None
        store.close()


class TestBatches:
    def test_a_batch_is_one_transaction(self, pg: PostgresBackend) -> None:
        """250 writes go in as 3 batches (100, 100, 50), not one statement per row."""
        store = Store(pg.driver(batch_interval=3600))
        player = store.storage("game", "p1")
        before = _commits(pg.conninfo)
        for i in range(250):
            player.score = i
        store.flush()
        after = _commits(pg.conninfo)
        assert len(pg.raw_rows()) == 250
        # 3 batch transactions; the counter also sees this test's own two queries
        assert after - before <= 3 + 2
        store.close()

    def test_rows_are_visible_to_another_connection_after_flush(self, pg: PostgresBackend) -> None:
        store = Store(pg.driver(batch_interval=3600))
        store.storage("game", "p1").score = 7
        store.flush()
        with psycopg.connect(pg.conninfo) as conn:
            rows = conn.execute(f'SELECT seq, value FROM "{pg.prefix}_values"').fetchall()
        assert rows == [(1, b"\x007")]
        store.close()


class TestServerGoingAway:
    def test_rows_stay_pending_and_are_written_after_the_server_returns(
        self, private_cluster: TempCluster
    ) -> None:
        backend = PostgresBackend(private_cluster.conninfo)
        store = Store(backend.driver(batch_interval=3600, timeout=2.0))
        player = store.storage("game", "p1")
        player.score = 1
        store.flush()

        private_cluster.halt()
        for i in range(2, 6):
            player.score = i  # queued; the batch is not due yet
        with pytest.raises(WriteError, match="stay queued") as info:
            store.flush()
        assert isinstance(info.value, RuntimeError)
        assert player.score == 5  # the cache kept every write

        private_cluster.resume()
        store.flush()
        assert [(row[0], row[3]) for row in backend.raw_rows()] == [
            (1, b"\x001"),
            (2, b"\x002"),
            (3, b"\x003"),
            (4, b"\x004"),
            (5, b"\x005"),
        ]
        store = backend.reopen(store)
        assert [v.data for v in store.storage("game", "p1").__history__()["score"]] == [
            1,
            2,
            3,
            4,
            5,
        ]
        store.close()


class TestOptionalDependency:
    def test_import_does_not_import_psycopg(self) -> None:
        code = "import sys, appendmuch; print('psycopg' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "False"

    def test_constructing_without_psycopg_names_the_pg_extra(self) -> None:
        code = (
            "import appendmuch\n"
            "try:\n"
            "    appendmuch.PostgreSQL('dbname=x')\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
        )
        out = python_without(("psycopg", "psycopg_pool"), code)
        assert out.returncode == 0, out.stderr
        assert "appendmuch[pg]" in out.stdout
