"""The table layout shared by the SQL drivers (SPEC section 10): names and indexes."""

from __future__ import annotations

import hashlib

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
        self.table = f"{table_prefix}{tblextra}_values"
        self.replace_index_specs = check_replace_index_specs(replace_index_specs)


def index_name(table: str, field: str, pattern: str) -> str:
    """A stable, valid name for the unique partial index of one replace spec."""
    digest = hashlib.sha1(f"{field}\0{pattern}".encode()).hexdigest()[:10]
    return f"{table}_replace_{digest}"
