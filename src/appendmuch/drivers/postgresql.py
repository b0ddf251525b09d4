"""The PostgreSQL driver: psycopg 3 with a psycopg_pool connection pool.

psycopg is imported when a driver is constructed, never when the package is imported,
so ``appendmuch`` works without the ``pg`` extra installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import DatabaseError, DumpFormatError, SchemaError, WriteError
from .base import DBDriver, Row
from .batching import Pending
from .sql import ROW_COLUMNS, TableNames, index_name

__all__ = ["PostgreSQL"]

_FETCH = 8192
_COPY_TYPES = ["int8", "text", "text", "bytea", "float8", "text"]

#: column -> accepted information_schema data types
_EXPECTED = {
    "id": {"bigint", "integer"},
    "seq": {"bigint", "integer"},
    "namespace": {"text", "character varying"},
    "field": {"text", "character varying"},
    "value": {"bytea"},
    "created_at": {"double precision", "real"},
    "context": {"text", "character varying"},
}


def _import_psycopg() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ImportError(
            "the PostgreSQL driver needs psycopg 3 and psycopg_pool, which come with the "
            "'pg' extra: pip install 'appendmuch[pg]'"
        ) from exc
    return psycopg, psycopg_pool


class PostgreSQL(DBDriver):
    """Stores the log in one table of a PostgreSQL database.

    Rows are written in batches (``batch_size`` rows or ``batch_interval`` seconds,
    whichever first), each batch with one ``COPY`` in one transaction.  If the server
    cannot be reached, the write or flush raises
    :class:`~appendmuch.errors.WriteError` and the rows stay queued, in order, until a
    later flush succeeds.

    :param conninfo: libpq connection string or URL (``""``: libpq defaults / PG* env).
    :param table_prefix: first part of the table name (an ASCII identifier).
    :param tblextra: appended to the prefix; the table is ``{prefix}{extra}_values``.
    :param min_size: connections the pool keeps open.
    :param max_size: most connections the pool opens.
    :param replace_index_specs: ``[(field, like_pattern)]``: unique partial indexes on
        (namespace, field) for replace-semantics fields.
    :param batch_size: rows per batch (default 100).
    :param batch_interval: seconds a row may wait in a batch (default 0.1).
    :param pool_kwargs: passed to :class:`psycopg_pool.ConnectionPool` (e.g. ``timeout``,
        the seconds to wait for a connection, default 30; ``check`` defaults to
        ``ConnectionPool.check_connection`` so broken connections are replaced).

    >>> driver = PostgreSQL("postgresql://localhost/mydb")  # doctest: +SKIP
    >>> store = Store(driver)  # doctest: +SKIP
    """

    def __init__(
        self,
        conninfo: str = "",
        table_prefix: str = "appendmuch",
        tblextra: str = "",
        min_size: int = 5,
        max_size: int = 50,
        replace_index_specs: list[tuple[str, str]] | None = None,
        *,
        batch_size: int = 100,
        batch_interval: float = 0.1,
        **pool_kwargs: Any,
    ) -> None:
        super().__init__()
        names = TableNames(table_prefix, tblextra, replace_index_specs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}"
            )
        psycopg, psycopg_pool = _import_psycopg()
        self._psycopg = psycopg
        self._pool_class = psycopg_pool.ConnectionPool
        self._errors: tuple[type[Exception], ...] = (psycopg.Error, psycopg_pool.PoolTimeout)
        self.conninfo = conninfo
        self.table_prefix = names.table_prefix
        self.tblextra = names.tblextra
        self.table = names.table
        self.replace_index_specs = names.replace_index_specs
        self._quoted = f'"{self.table}"'
        pool_kwargs.setdefault("check", psycopg_pool.ConnectionPool.check_connection)
        pool_kwargs.setdefault("name", f"appendmuch:{self.table}")
        self._pool_args: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            **pool_kwargs,
        }
        self._pool: Any = None
        self._writer: Any = None
        self._ensured = False
        self._pending = Pending(batch_size, batch_interval)
        self.append = self._pending.add  # type: ignore[method-assign]
        self._copy_sql = f"COPY {self._quoted} ({ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)"

    def __repr__(self) -> str:
        return f"PostgreSQL(table={self.table!r})"

    # ------------------------------------------------------------------ connection

    def _open_pool(self) -> Any:
        """The connection pool, opened on first use (and again after a failure)."""
        if self._pool is None:
            self._pool = self._pool_class(self.conninfo, open=False, **self._pool_args)
            self._pool.open(wait=False)
        return self._pool

    def _connection(self) -> Any:
        """A pooled connection, as a context manager."""
        return self._open_pool().connection()

    def ensure(self) -> None:
        try:
            with self._connection() as conn:
                exists = conn.execute("SELECT to_regclass(%s)", (self._quoted,)).fetchone()[0]
                if exists is None:
                    self._create(conn)
                else:
                    self._check_schema(conn)
                largest = conn.execute(f"SELECT MAX(seq) FROM {self._quoted}").fetchone()[0]
        except self._errors as exc:
            self._discard_pool()
            raise DatabaseError(f"cannot open table {self.table!r} on PostgreSQL: {exc}") from exc
        if largest is not None:
            self._saw_seq(int(largest))
        self._ensured = True

    def _create(self, conn: Any) -> None:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self._quoted} ("
            "id BIGSERIAL PRIMARY KEY, "
            "seq BIGINT NOT NULL UNIQUE, "
            "namespace TEXT NOT NULL, "
            "field TEXT NOT NULL, "
            "value BYTEA, "
            "created_at DOUBLE PRECISION NOT NULL, "
            "context TEXT NOT NULL)"
        )
        self._create_indexes(conn)

    def _create_indexes(self, conn: Any) -> None:
        psycopg = self._psycopg
        for field, pattern in self.replace_index_specs:
            name = index_name(self.table, field, pattern)
            try:
                with conn.transaction():
                    conn.execute(
                        f'CREATE UNIQUE INDEX IF NOT EXISTS "{name}" ON {self._quoted} '
                        f"(namespace, field) WHERE field = '{field}' "
                        f"AND namespace LIKE '{pattern}'"
                    )
            except psycopg.errors.UniqueViolation as exc:
                raise SchemaError(
                    f"cannot create the unique replace index for field {field!r} / "
                    f"namespaces LIKE {pattern!r} on table {self.table!r}: the table already "
                    "holds several rows for one such namespace and field"
                ) from exc

    def _check_schema(self, conn: Any) -> None:
        columns = {
            name: (data_type, nullable == "YES", default)
            for name, data_type, nullable, default in conn.execute(
                "SELECT column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s",
                (self.table,),
            )
        }
        problems = []
        for name, accepted in _EXPECTED.items():
            if name not in columns:
                problems.append(f"column {name!r} is missing")
            elif columns[name][0] not in accepted:
                problems.append(
                    f"column {name!r} is {columns[name][0]}, expected {sorted(accepted)[0]}"
                )
        for name, (_, nullable, default) in columns.items():
            if name not in _EXPECTED and not nullable and default is None:
                problems.append(f"extra column {name!r} is NOT NULL without a default")
        if "seq" in columns and not self._seq_is_unique(conn):
            problems.append("column 'seq' has no UNIQUE constraint")
        if "id" in columns and not self._id_is_key(conn):
            problems.append("column 'id' is not the primary key")
        if problems:
            raise SchemaError(
                f"table {self.table!r} exists with an incompatible layout "
                f"({'; '.join(problems)}); it was left untouched. Use another "
                "table_prefix/tblextra, or driver.reset() to drop and recreate it (this "
                "deletes its rows)"
            )
        self._create_indexes(conn)

    def _seq_is_unique(self, conn: Any) -> bool:
        row = conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indnatts = 1 "
            "AND i.indpred IS NULL AND a.attname = 'seq'",
            (self._quoted,),
        ).fetchone()
        return row is not None

    def _id_is_key(self, conn: Any) -> bool:
        row = conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary AND i.indnatts = 1 "
            "AND a.attname = 'id'",
            (self._quoted,),
        ).fetchone()
        return row is not None

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

    def _copy(self, conn: Any, rows: Iterable[Row]) -> None:
        with conn.cursor() as cur, cur.copy(self._copy_sql) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)

    def _writer_connection(self) -> Any:
        """The connection batches are written with, taken from the pool and kept.

        It is in autocommit mode, so a batch of inserts is one ``COPY`` statement, atomic
        by itself, with no BEGIN/COMMIT round trips and no per-batch pool checkout.
        """
        conn = self._writer
        if conn is None or conn.closed:
            conn = self._open_pool().getconn()
            conn.autocommit = True
            self._writer = conn
        return conn

    def _release_writer(self, broken: bool) -> None:
        conn, self._writer = self._writer, None
        if conn is None or self._pool is None:
            return
        if broken:
            conn.close()
        elif not conn.closed:
            conn.autocommit = False
        self._pool.putconn(conn)

    def flush(self) -> None:
        pending = self._pending
        if not len(pending):
            return
        try:
            if not self._ensured:
                self.ensure()
            conn = self._writer_connection()
            if not pending.updates:
                self._copy(conn, pending.inserts)
            else:
                with conn.transaction():
                    if pending.inserts:
                        self._copy(conn, pending.inserts)
                    for old_seq, row in pending.updates:
                        cur = conn.execute(
                            f"UPDATE {self._quoted} SET seq = %s, namespace = %s, "
                            "field = %s, value = %s, created_at = %s, context = %s "
                            "WHERE seq = %s",
                            (*row, old_seq),
                        )
                        if cur.rowcount == 0:
                            self._copy(conn, [row])
        except self._errors as exc:
            self._release_writer(broken=True)
            self._discard_pool()
            raise WriteError(
                f"could not write {len(pending)} queued rows to PostgreSQL table "
                f"{self.table!r}: {exc}. They stay queued and are written by the next "
                "successful flush"
            ) from exc
        self._now = pending.last_time
        pending.clear()

    def _discard_pool(self) -> None:
        """Drop the pool after a failure: the next use connects afresh, at once, instead
        of waiting for the old pool's reconnection back-off."""
        self._release_writer(broken=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=0)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._release_writer(broken=False)
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.close()  # a later use opens a new pool

    # ------------------------------------------------------------------ reading

    def load_rows(self) -> Iterator[Row]:
        self.flush()
        return self._select()

    def _iter_rows(self) -> Iterator[Row]:
        return self._select()

    def _select(self) -> Iterator[Row]:
        largest = 0
        with (
            self._connection() as conn,
            conn.transaction(),
            conn.cursor(name="appendmuch_load") as cur,
        ):
            cur.itersize = _FETCH
            cur.execute(f"SELECT {ROW_COLUMNS} FROM {self._quoted} ORDER BY seq")
            while True:
                rows = cur.fetchmany(_FETCH)
                if not rows:
                    break
                largest = rows[-1][0]
                yield from rows
        self._saw_seq(largest)

    def size(self) -> int:
        self.flush()
        with self._connection() as conn:
            (size,) = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass)", (self._quoted,)
            ).fetchone()
        return int(size)

    # ------------------------------------------------------------------ maintenance

    def reset(self) -> None:
        self._pending.clear()
        with self._connection() as conn, conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {self._quoted}")
            self._create(conn)

    def _insert_restored(self, rows: Iterable[Row]) -> None:
        psycopg = self._psycopg
        batch = list(rows)
        try:
            with self._connection() as conn, conn.transaction():
                self._copy(conn, batch)
        except psycopg.errors.UniqueViolation as exc:
            raise DumpFormatError(
                f"restore: {self._first_existing(batch)}; nothing was restored"
            ) from exc

    def _first_existing(self, rows: list[Row]) -> str:
        with self._connection() as conn:
            found = conn.execute(
                f"SELECT MIN(seq) FROM {self._quoted} WHERE seq = ANY(%s)",
                ([row[0] for row in rows],),
            ).fetchone()[0]
        if found is not None:
            return f"seq {found} already exists in table {self.table!r}"
        return "a row violates a constraint of the table (a replace index?)"
