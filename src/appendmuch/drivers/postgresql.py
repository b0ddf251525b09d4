"""The PostgreSQL driver (psycopg 3 with a psycopg_pool connection pool)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .base import DBDriver, Row
from .sql import TableNames

__all__ = ["PostgreSQL"]


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ImportError(
            "the PostgreSQL driver needs psycopg 3 and psycopg_pool: pip install 'appendmuch[pg]'"
        ) from exc
    return psycopg, psycopg_pool


class PostgreSQL(DBDriver):
    """Stores the log in one PostgreSQL table (not implemented yet)."""

    def __init__(
        self,
        conninfo: str = "",
        table_prefix: str = "appendmuch",
        tblextra: str = "",
        min_size: int = 5,
        max_size: int = 50,
        replace_index_specs: list[tuple[str, str]] | None = None,
        **pool_kwargs: Any,
    ) -> None:
        super().__init__()
        names = TableNames(table_prefix, tblextra, replace_index_specs)
        _import_psycopg()
        self.conninfo = conninfo
        self.table = names.table
        raise NotImplementedError("the PostgreSQL driver is not implemented yet")

    def ensure(self) -> None:
        raise NotImplementedError

    def load_rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def append(self, row: Row) -> bool:
        raise NotImplementedError

    def replace(self, old_seq: int | None, row: Row) -> bool:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def _insert_restored(self, rows: Iterable[Row]) -> None:
        raise NotImplementedError

    def _iter_rows(self) -> Iterator[Row]:
        raise NotImplementedError
