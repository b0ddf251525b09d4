"""The SQLite driver: the embedded default for real use (stdlib ``sqlite3``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator

from ..errors import DumpFormatError, SchemaError, WriteError
from .base import DBDriver, Row
from .batching import Pending
from .sql import ROW_COLUMNS, TableNames, index_name

__all__ = ["Sqlite3"]


def _affinity(declared: str) -> str:
    """SQLite's column affinity rules (section 3.1 of its datatype documentation)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


_EXPECTED = {
    "id": "INTEGER",
    "seq": "INTEGER",
    "namespace": "TEXT",
    "field": "TEXT",
    "value": "BLOB",
    "created_at": "REAL",
    "context": "TEXT",
}


class Sqlite3(DBDriver):
    """Stores the log in one table of a SQLite database file.

    Rows are written in batches (``batch_size`` rows or ``batch_interval`` seconds,
    whichever comes first) inside one transaction each, in WAL mode.  ``close()``
    flushes; the driver reconnects by itself when used again after ``close()``.

    :param database: path of the database file (created if missing), or ``":memory:"``.
    :param table_prefix: first part of the table name (an ASCII identifier).
    :param tblextra: appended to the prefix; the table is ``{prefix}{extra}_values``.
    :param replace_index_specs: ``[(field, like_pattern)]``: a unique partial index on
        (namespace, field) for that field in namespaces matching the LIKE pattern.
    :param batch_size: rows per batch (default 100).
    :param batch_interval: seconds a row may wait in a batch (default 0.1).
    :param timeout: seconds to wait for a lock held by another connection.
    :param synchronous: SQLite ``PRAGMA synchronous`` level (default ``"NORMAL"``:
        committed batches survive a crash of the process; ``"FULL"`` also survives
        power loss, at the cost of an fsync per batch).

    >>> import os, tempfile
    >>> from appendmuch import Sqlite3, Store
    >>> path = os.path.join(tempfile.mkdtemp(), "log.sqlite3")
    >>> with Store(Sqlite3(path)) as store:
    ...     store.storage("game", "p1").score = 5
    >>> Store(Sqlite3(path)).storage("game", "p1").score
    5
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        table_prefix: str = "appendmuch",
        tblextra: str = "",
        replace_index_specs: list[tuple[str, str]] | None = None,
        *,
        batch_size: int = 100,
        batch_interval: float = 0.1,
        timeout: float = 5.0,
        synchronous: str = "NORMAL",
    ) -> None:
        super().__init__()
        names = TableNames(table_prefix, tblextra, replace_index_specs)
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.database = os.fspath(database)
        self.table_prefix = names.table_prefix
        self.tblextra = names.tblextra
        self.table = names.table
        self.replace_index_specs = names.replace_index_specs
        self.timeout = timeout
        self.synchronous = synchronous.upper()
        self._conn: sqlite3.Connection | None = None
        self._pending = Pending(batch_size, batch_interval)
        self.append = self._pending.add  # type: ignore[method-assign]
        self._quoted = f'"{self.table}"'
        self._insert_sql = f"INSERT INTO {self._quoted} ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"

    def __repr__(self) -> str:
        return f"Sqlite3({self.database!r}, table={self.table!r})"

    # ------------------------------------------------------------------ connection

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection (opened, and the table checked, on first use)."""
        if self._conn is None:
            self.ensure()
        assert self._conn is not None
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.database, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def ensure(self) -> None:
        if self._conn is None:
            conn = self._connect()
            try:
                self._ensure_table(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        else:
            self._ensure_table(self._conn)

    def _ensure_table(self, conn: sqlite3.Connection) -> None:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
        ).fetchone()
        if exists:
            self._check_schema(conn)
        else:
            self._create(conn)
        # Only now, with a table we created or accept: WAL changes the file header for good.
        if self.database != ":memory:" and not self.database.startswith("file::memory:"):
            conn.execute("PRAGMA journal_mode=WAL")
        (largest,) = conn.execute(f"SELECT MAX(seq) FROM {self._quoted}").fetchone()
        if largest is not None:
            self._saw_seq(int(largest))

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._quoted} ("
                "id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "seq INTEGER NOT NULL UNIQUE, "
                "namespace TEXT NOT NULL, "
                "field TEXT NOT NULL, "
                "value BLOB, "
                "created_at REAL NOT NULL, "
                "context TEXT NOT NULL)"
            )
            self._create_indexes(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _create_indexes(self, conn: sqlite3.Connection) -> None:
        for field, pattern in self.replace_index_specs:
            name = index_name(self.table, field, pattern)
            try:
                conn.execute(
                    f'CREATE UNIQUE INDEX IF NOT EXISTS "{name}" ON {self._quoted} '
                    f"(namespace, field) WHERE field = '{field}' AND namespace LIKE '{pattern}'"
                )
            except sqlite3.IntegrityError as exc:
                raise SchemaError(
                    f"cannot create the unique replace index for field {field!r} / namespaces "
                    f"LIKE {pattern!r} on table {self.table!r}: the table already holds "
                    "several rows for one such namespace and field"
                ) from exc

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        columns = {
            name: (declared, notnull, default, pk)
            for _, name, declared, notnull, default, pk in conn.execute(
                f"PRAGMA table_info({self._quoted})"
            )
        }
        problems = []
        for name, affinity in _EXPECTED.items():
            if name not in columns:
                problems.append(f"column {name!r} is missing")
            elif _affinity(columns[name][0]) != affinity:
                problems.append(
                    f"column {name!r} is {columns[name][0] or 'untyped'}, expected {affinity}"
                )
        if "id" in columns and columns["id"][3] != 1:
            problems.append("column 'id' is not the primary key")
        for name, (_, notnull, default, _pk) in columns.items():
            if name not in _EXPECTED and notnull and default is None:
                problems.append(f"extra column {name!r} is NOT NULL without a default")
        if "seq" in columns and not self._seq_is_unique(conn):
            problems.append("column 'seq' has no UNIQUE constraint")
        if problems:
            raise SchemaError(
                f"table {self.table!r} in {self.database!r} exists with an incompatible "
                f"layout ({'; '.join(problems)}); it was left untouched. Use another "
                "table_prefix/tblextra, or driver.reset() to drop and recreate it (this "
                "deletes its rows)"
            )
        self._create_indexes(conn)

    def _seq_is_unique(self, conn: sqlite3.Connection) -> bool:
        for _, index, unique, *_ in conn.execute(f"PRAGMA index_list({self._quoted})"):
            if unique:
                cols = [row[2] for row in conn.execute(f'PRAGMA index_info("{index}")')]
                if cols == ["seq"]:
                    return True
        return False

    # ------------------------------------------------------------------ writing

    def append(self, row: Row) -> bool:
        """Queue a row (instances bind this straight to the queue's ``add``)."""
        return self._pending.add(row)

    @property
    def now(self) -> float | None:
        queued = self._pending.last_time
        return queued if queued is not None else self._now

    def replace(self, old_seq: int | None, row: Row) -> bool:
        return self._pending.replace(old_seq, row)

    def flush(self) -> None:
        pending = self._pending
        if not len(pending):
            return
        conn = self.connection
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if pending.inserts:
                    conn.executemany(self._insert_sql, pending.inserts)
                for old_seq, row in pending.updates:
                    cur = conn.execute(
                        f"UPDATE {self._quoted} SET seq = ?, namespace = ?, field = ?, "
                        "value = ?, created_at = ?, context = ? WHERE seq = ?",
                        (*row, old_seq),
                    )
                    if cur.rowcount == 0:
                        conn.execute(self._insert_sql, row)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise WriteError(
                f"could not write {len(pending)} queued rows to table {self.table!r} in "
                f"{self.database!r}: {exc}. They stay queued and are written by the next "
                "successful flush"
            ) from exc
        self._now = pending.last_time
        pending.clear()

    def close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            self.flush()
        finally:
            self._conn = None
            conn.close()

    # ------------------------------------------------------------------ reading

    def load_rows(self) -> Iterator[Row]:
        self.flush()
        return self._select()

    def _iter_rows(self) -> Iterator[Row]:
        return self._select()

    def _select(self) -> Iterator[Row]:
        # The cursor itself: rows are produced one at a time in C, none held in bulk.
        cursor: Iterator[Row] = self.connection.execute(
            f"SELECT {ROW_COLUMNS} FROM {self._quoted} ORDER BY seq"
        )
        return cursor

    def size(self) -> int:
        self.flush()
        conn = self.connection
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(page_size)

    # ------------------------------------------------------------------ maintenance

    def reset(self) -> None:
        # No table check here: reset is how an incompatible table gets replaced.
        conn = self._conn if self._conn is not None else self._connect()
        self._pending.clear()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"DROP TABLE IF EXISTS {self._quoted}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._ensure_table(conn)
        except BaseException:
            if conn is not self._conn:
                conn.close()
            raise
        self._conn = conn

    def _insert_restored(self, rows: Iterable[Row]) -> None:
        conn = self.connection
        batch = list(rows)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(self._insert_sql, batch)
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            raise DumpFormatError(
                f"restore: {self._first_existing(batch)}; nothing was restored"
            ) from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _first_existing(self, rows: list[Row]) -> str:
        conn = self.connection
        for start in range(0, len(rows), 500):
            seqs = [row[0] for row in rows[start : start + 500]]
            marks = ", ".join("?" * len(seqs))
            found = conn.execute(
                f"SELECT MIN(seq) FROM {self._quoted} WHERE seq IN ({marks})", seqs
            ).fetchone()[0]
            if found is not None:
                return f"seq {found} already exists in table {self.table!r}"
        return "a row violates a constraint of the table (a replace index?)"
