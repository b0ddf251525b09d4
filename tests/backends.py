"""The backends every contract test runs on, behind one small interface.

A :class:`Backend` hands out drivers that all point at the same storage location
for the duration of one test, so a test can close a Store and open a new one on the
same log (``reopen``), exactly as an application restarting would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from appendmuch import Memory, Sqlite3, Store
from appendmuch.drivers import DBDriver


class Backend:
    """One storage location on one backend."""

    name = "abstract"
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


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self._driver = Memory()

    def driver(self, **kwargs: Any) -> DBDriver:
        # The Memory object is the storage location: reuse it to "reopen".
        return self._driver


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, directory: Path, filename: str = "log.sqlite3") -> None:
        self.path = directory / filename

    def driver(self, **kwargs: Any) -> DBDriver:
        return Sqlite3(self.path, **kwargs)


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


class PostgresBackend(Backend):
    """A table prefix of its own in the session's PostgreSQL database."""

    name = "postgresql"

    def __init__(self, conninfo: str) -> None:
        import uuid

        self.conninfo = conninfo
        self.prefix = f"t{uuid.uuid4().hex[:12]}"

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
