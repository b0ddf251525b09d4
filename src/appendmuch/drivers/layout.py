"""The table layout shared by the SQL drivers (SPEC section 10): names and indexes."""

from __future__ import annotations

import hashlib

from ..errors import InvalidNameError
from ..names import check_replace_index_specs, check_sql_identifier, check_table_part

__all__ = ["COLUMNS", "TableNames", "index_name"]

#: column -> (SQLite declared type, PostgreSQL type); order is the row order
COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("INTEGER", "BIGINT"),
    "seq": ("INTEGER", "BIGINT"),
    "namespace": ("TEXT", "TEXT"),
    "field": ("TEXT", "TEXT"),
    "value": ("BLOB", "BYTEA"),
    "created_at": ("REAL", "DOUBLE PRECISION"),
    "context": ("TEXT", "TEXT"),
}
ROW_COLUMNS = "seq, namespace, field, value, created_at, context"
#: longest table name (PostgreSQL truncates identifiers beyond 63 bytes)
MAX_TABLE_NAME = 63


class TableNames:
    """Validated table prefix, extra part and replace index specs of a SQL driver."""

    __slots__ = ("replace_index_specs", "table", "table_prefix", "tblextra")

    def __init__(
        self,
        table_prefix: str,
        tblextra: str,
        replace_index_specs: list[tuple[str, str]] | None,
    ) -> None:
        self.table_prefix = check_sql_identifier(table_prefix, "table_prefix")
        self.tblextra = check_table_part(tblextra, "tblextra")
        table = f"{table_prefix}{tblextra}_values"
        if len(table) > MAX_TABLE_NAME:
            # PostgreSQL silently truncates longer names, so two long prefixes could
            # share one table; SQLite is held to the same limit for portability.
            raise InvalidNameError(
                f"table name {table!r} is {len(table)} characters long; table_prefix and "
                f"tblextra together may have at most {MAX_TABLE_NAME - len('_values')}"
            )
        if table.lower().startswith(("sqlite_", "pg_")):
            raise InvalidNameError(
                f"table name {table!r} starts with a prefix the database reserves "
                "(sqlite_ or pg_); choose another table_prefix"
            )
        self.table = table
        self.replace_index_specs = check_replace_index_specs(replace_index_specs)


def index_name(table: str, field: str, pattern: str) -> str:
    """A stable name for the unique partial index of one replace spec, short enough for
    PostgreSQL's 63-byte limit whatever the table name."""
    digest = hashlib.sha1(f"{table}\0{field}\0{pattern}".encode()).hexdigest()[:20]
    return f"appendmuch_replace_{digest}"
