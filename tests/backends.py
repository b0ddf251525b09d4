"""The backends every test runs on, behind one small interface.

A :class:`Backend` hands out drivers that all point at the same storage location
for the duration of one test, so a test can close a Store and open a new one on the
same log (``reopen``), exactly as an application restarting would.  The SQL backends
also say how a child process finds the log (``location``) and read the table on an
independent connection (``rows``): the one adapter of the shared-mode, crash and web
tests too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appendmuch import Memory, Sqlite3, Store
from appendmuch.drivers import DBDriver

if TYPE_CHECKING:
    from sharedlib import Seen

#: a stored row: (seq, namespace, field, value bytes or None, created_at, context)
Row = tuple[Any, ...]

#: generous bound on a wait for the server (a failure, never a timing threshold)
PATIENCE = 60.0


class Backend:
    """One storage location on one backend."""

    name = "abstract"
    #: the backend without the shared-mode suffix (what tests/crash/childlib.py opens)
    kind = "abstract"
    persistent = True

    def driver(self, **kwargs: Any) -> DBDriver:
        raise NotImplementedError

    def store(self, **store_kwargs: Any) -> Store:
        """A new Store on this backend's location."""
        return Store(self.driver(), **store_kwargs)

    def reopen(self, store: Store, **store_kwargs: Any) -> Store:
        """Close ``store`` and open a new Store on the same location."""
        store.close()
        return self.store(**store_kwargs)

    def raw_rows(self) -> list[tuple[Any, ...]]:
        """Rows as stored: (seq, namespace, field, value, created_at, context), by seq.

        Read through a read-only driver, so it works while a Store has the log open.
        """
        driver = self.driver(read_only=True) if self.name != "memory" else self.driver()
        try:
            return [tuple(row) for row in driver.load_rows()]
        finally:
            driver.close()

    def cleanup(self) -> None:
        """Release anything the backend created."""


class SqlBackend(Backend):
    """A table in a SQL database, seen from the test process."""

    #: the log's table
    table = "appendmuch_values"

    def location(self, app: str = "appendmuch-shared-peer") -> dict[str, Any]:
        """How a child process finds this log (tests/crash/childlib.py ``make_driver``);
        PostgreSQL sessions are named ``app``."""
        raise NotImplementedError

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a query on a new, independent connection (raw sqlite3 / psycopg)."""
        raise NotImplementedError

    def open(self, seen: Seen | None = None, **driver_kwargs: Any) -> Store:
        """A Store in this process as the shared-mode tests open one (replace fields
        ``r_*``, ``seen`` recording ``on_change``)."""
        from sharedlib import open_store

        return open_store(self.location("appendmuch-shared-parent"), seen, **driver_kwargs)

    def shared(self, **store_kwargs: Any) -> Store:
        """A Store whose driver is opened in shared mode."""
        return Store(self.driver(shared=True), **store_kwargs)

    def rows(self) -> list[Row]:
        """Every committed row, by seq, from an independent connection."""
        rows = self.query(
            "SELECT seq, namespace, field, value, created_at, context "
            f'FROM "{self.table}" ORDER BY seq'
        )
        return [
            (seq, ns, f, None if value is None else bytes(value), t, ctx)
            for seq, ns, f, value, t, ctx in rows
        ]

    def settle(self, app: str) -> None:
        """Wait until the server has ended every session named ``app`` (a killed child's:
        a batch it had sent in full is still committed until then)."""


class MemoryBackend(Backend):
    name = "memory"
    kind = "memory"

    def __init__(self) -> None:
        self._driver = Memory()

    def driver(self, **kwargs: Any) -> DBDriver:
        # The Memory object is the storage location: reuse it to "reopen".
        return self._driver


class SqliteBackend(SqlBackend):
    name = "sqlite"
    kind = "sqlite"

    def __init__(self, directory: Path, filename: str = "log.sqlite3") -> None:
        self.path = directory / filename

    def driver(self, **kwargs: Any) -> DBDriver:
        return Sqlite3(self.path, **kwargs)

    def location(self, app: str = "appendmuch-shared-peer") -> dict[str, Any]:
        return {"kind": "sqlite", "path": str(self.path)}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()


class SharedSqliteBackend(SqliteBackend):
    """A SQLite file opened in shared mode (issue 10): every writer is ``shared=True``.

    Read-only drivers are opened in shared mode too (a reader that follows the others).
    """

    name = "sqlite-shared"

    def driver(self, **kwargs: Any) -> DBDriver:
        kwargs.setdefault("shared", True)
        return Sqlite3(self.path, **kwargs)


#: backend name -> factory(tmp_path) ; PostgreSQL is added by conftest when available
FACTORIES: dict[str, Callable[[Path], Backend]] = {
    "memory": lambda tmp: MemoryBackend(),
    "sqlite": lambda tmp: SqliteBackend(tmp),
}


class PostgresBackend(SqlBackend):
    """A table prefix of its own in the session's PostgreSQL database."""

    name = "postgresql"
    kind = "postgresql"

    def __init__(self, conninfo: str, prefix: str = "") -> None:
        import uuid

        self.conninfo = conninfo
        self.prefix = prefix or f"t{uuid.uuid4().hex[:12]}"

    @property
    def table(self) -> str:  # type: ignore[override]
        return f"{self.prefix}_values"

    def location(self, app: str = "appendmuch-shared-peer") -> dict[str, Any]:
        return {
            "kind": "postgresql",
            "conninfo": f"{self.conninfo} application_name={app}",
            "prefix": self.prefix,
        }

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as pg:
            return list(pg.execute(sql).fetchall())  # type: ignore[arg-type]

    def settle(self, app: str) -> None:
        pg_settle(self.conninfo, app)

    def driver(self, **kwargs: Any) -> DBDriver:
        from appendmuch import PostgreSQL

        kwargs.setdefault("table_prefix", self.prefix)
        kwargs.setdefault("min_size", 1)
        kwargs.setdefault("max_size", 4)
        kwargs.setdefault("timeout", 10.0)
        return PostgreSQL(self.conninfo, **kwargs)

    def cleanup(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename LIKE %s",
                (self.prefix + "%",),
            ).fetchall()
            for (table,) in tables:
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def pg_settle(conninfo: str, app: str, poll: float = 0.005) -> None:
    """Wait until the server has ended every session named ``app`` (a killed child's:
    a batch it had sent in full is still committed until then)."""
    import psycopg

    from helpers import wait_for

    with psycopg.connect(conninfo, autocommit=True) as conn:

        def ended() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone()
            return row is not None and row[0] == 0

        wait_for(ended, f"the sessions of {app} to end", PATIENCE, poll)


def pg_conninfo() -> str:
    """The session server's conninfo; skips the test (or fails, when required) if none."""
    import os

    import pytest

    from pgserver import ENV_REQUIRE, SERVER

    conninfo = SERVER.get()
    if conninfo is None:
        reason = SERVER.unavailable or "PostgreSQL unavailable"
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{ENV_REQUIRE}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return conninfo


class SharedPostgresBackend(PostgresBackend):
    """A PostgreSQL table opened in shared mode (issue 10): every writer is ``shared=True``."""

    name = "postgresql-shared"

    def driver(self, **kwargs: Any) -> DBDriver:
        kwargs.setdefault("shared", True)
        return super().driver(**kwargs)


FACTORIES["postgresql"] = lambda tmp: PostgresBackend(pg_conninfo())
#: the SQL backends, single-writer mode (the ``place`` fixture)
SQL_BACKENDS = ["sqlite", "postgresql"]


def sql_place(
    kind: str, directory: Path, *, filename: str = "log.sqlite3", prefix: str = ""
) -> SqliteBackend | PostgresBackend:
    """A new location on one SQL backend: a SQLite file in ``directory`` or a table
    prefix (``prefix``, or a fresh one) in the session's PostgreSQL database."""
    if kind == "sqlite":
        return SqliteBackend(directory, filename)
    return PostgresBackend(pg_conninfo(), prefix)


#: the shared-mode variants: the same contract, several writers allowed on one log
SHARED_FACTORIES: dict[str, Callable[[Path], Backend]] = {
    "sqlite-shared": lambda tmp: SharedSqliteBackend(tmp),
    "postgresql-shared": lambda tmp: SharedPostgresBackend(pg_conninfo()),
}
#: every backend the contract suite (the ``backend`` fixture, the model test) runs on
ALL_FACTORIES: dict[str, Callable[[Path], Backend]] = {**FACTORIES, **SHARED_FACTORIES}


def is_shared(backend: Backend | str) -> bool:
    """Whether a backend (or backend name) opens its writers in shared mode."""
    name = backend if isinstance(backend, str) else backend.name
    return name.endswith("-shared")
