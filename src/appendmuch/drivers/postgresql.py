"""The PostgreSQL driver: psycopg 3 with a psycopg_pool connection pool.

psycopg is imported when a driver is constructed, never when the package is imported,
so ``appendmuch`` works without the ``pg`` extra installed.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
import zlib
from collections.abc import Iterator
from typing import Any

from ..errors import DatabaseError, DumpFormatError, SchemaError, one_line
from .base import Row
from .layout import ROW_COLUMNS, TableNames, index_name
from .pgpipeline import Pipeline, Tag, prepare
from .postgresql_connect import PostgresConnections, import_psycopg
from .postgresql_lease import PostgresLease
from .sql import BATCH_BYTES, RETRY_INTERVAL, SQLDriver

__all__ = ["PostgreSQL"]

_quiet_pool = logging.getLogger("psycopg.pool")

_FETCH = 8192
#: batches sent but not yet confirmed, at most
_MAX_IN_FLIGHT = 2
_COPY_TYPES = ["int8", "text", "text", "bytea", "float8", "text"]
#: shared mode: the follower reads anyway after this many seconds without a NOTIFY
_FOLLOW_TIMEOUT = 0.1

#: "seq above the parameter", for reading the rows committed since a high-water mark.
#: The upper bound changes no result; it makes the planner see a range, whose default
#: selectivity (0.5%) picks the seq index while the table has no statistics yet (a
#: table written faster than autovacuum analyzes it).  With ``seq > $1`` alone it
#: guessed a third of the table, and every follower read scanned and sorted all of it.
_SEQ_ABOVE = "seq > %s AND seq <= 9223372036854775807"

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


class PostgreSQL(PostgresLease, PostgresConnections, SQLDriver):
    """Stores the log in one table of a PostgreSQL database.

    Batches (see :mod:`appendmuch.drivers.sql` for when they are written) go in with
    one binary ``COPY`` each, on one connection the driver keeps for writing; that
    connection holds a session advisory lock on the table, so a second writer fails at
    open.  Other work uses the pool.  If the server cannot be reached, the write or
    flush raises :class:`~appendmuch.errors.WriteError`, the rows stay queued, and the
    next use reconnects.

    :param conninfo: libpq connection string or URL (``""``: libpq defaults / PG* env).
    :param table_prefix: first part of the table name (an ASCII identifier).
    :param tblextra: appended to the prefix; the table is ``{prefix}{extra}_values``.
    :param min_size: connections the pool keeps open (default 5, or ``max_size`` if
        that is smaller).
    :param max_size: most connections the pool opens.
    :param replace_index_specs: ``[(field, like_pattern)]``: unique partial indexes on
        (namespace, field) for replace-semantics fields.
    :param batch_size: rows per batch (default 100).
    :param batch_interval: seconds a row may wait in a batch (default 0.1).
    :param write_through: commit every row before the assignment returns.
    :param read_only: sessions are read-only; nothing is created or written.
    :param recovery_dir: where ``close()`` saves rows it cannot write (default: the
        current directory).
    :param lock_timeout: seconds to wait for the table's writer lock while the session
        holding it is running a statement (default 10): a writer that was just killed
        keeps its session until the batch it sent is done.  An idle holder is a living
        writer: opening fails at once.
    :param batch_bytes: a queue holding more bytes of values is written in several
        batches (default 64 MiB; one statement cannot carry more than 1 GB).
    :param retry_interval: seconds after a failed write during which full batches only
        queue (default 1); ``flush()`` retries at once.
    :param shared: several processes, on any number of machines, write the table at
        once (see :mod:`appendmuch.drivers.sharing`); commits are announced with
        ``NOTIFY``.  Every writer of the table must use it: a shared open of a table a
        single writer has open (or the reverse) raises
        :class:`~appendmuch.errors.LockedError`.
    :param lease_timeout: shared mode: seconds a write waits for the write lease
        (another writer's batch) before it raises :class:`~appendmuch.errors.LockedError`
        and writes nothing (default 10).
    :param connect_timeout: seconds to wait for the server when connecting (default:
        ``connect_timeout`` of ``conninfo`` if it has one, else 5).  Rounded up to whole
        seconds, at least 2 (libpq's rule).  An unreachable server fails the open with
        one :class:`~appendmuch.errors.DatabaseError` naming the server and the cause.
    :param pool_kwargs: passed to :class:`psycopg_pool.ConnectionPool` (e.g. ``timeout``,
        the seconds to wait for a connection, default 30; ``check`` defaults to
        ``ConnectionPool.check_connection`` so broken connections are replaced).  The
        pool serves reads; the writer has a connection of its own, so ``max_size=1``
        works.

    >>> driver = PostgreSQL("postgresql://localhost/mydb")  # doctest: +SKIP
    >>> store = Store(driver)  # doctest: +SKIP
    """

    #: a bytea field holds at most 1 GiB (and a batch's value array must fit in one
    #: allocation of that size), less 1 MiB for headers
    max_value_bytes = (1 << 30) - (1 << 20)

    def __init__(
        self,
        conninfo: str = "",
        table_prefix: str = "appendmuch",
        tblextra: str = "",
        min_size: int | None = None,
        max_size: int = 50,
        replace_index_specs: list[tuple[str, str]] | None = None,
        *,
        batch_size: int = 100,
        batch_interval: float = 0.1,
        write_through: bool = False,
        read_only: bool = False,
        recovery_dir: str | os.PathLike[str] | None = None,
        lock_timeout: float = 10.0,
        batch_bytes: int = BATCH_BYTES,
        retry_interval: float = RETRY_INTERVAL,
        shared: bool = False,
        lease_timeout: float = 10.0,
        connect_timeout: float | None = None,
        **pool_kwargs: Any,
    ) -> None:
        names = TableNames(table_prefix, tblextra, replace_index_specs)
        if min_size is None:
            min_size = min(5, max_size)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}"
            )
        psycopg, psycopg_pool = import_psycopg()
        super().__init__(
            names,
            batch_size=batch_size,
            batch_interval=batch_interval,
            write_through=write_through,
            read_only=read_only,
            recovery_dir=recovery_dir,
            batch_bytes=batch_bytes,
            retry_interval=retry_interval,
            shared=shared,
            lease_timeout=lease_timeout,
            follow_interval=_FOLLOW_TIMEOUT,
        )
        # Only the background thread uses the writer connection, so a Ctrl-C never
        # cuts a psycopg call short (see SQLDriver.in_writer).
        self._background_io = True
        self._psycopg = psycopg
        self._pool_class = psycopg_pool.ConnectionPool
        self._library_errors: tuple[type[Exception], ...] = (
            psycopg.Error,
            psycopg_pool.PoolTimeout,
        )
        self.conninfo = conninfo
        #: seconds to wait for the table's writer lock held by another session
        self.lock_timeout = lock_timeout
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ValueError(f"invalid PostgreSQL conninfo: {one_line(exc)}") from exc
        if connect_timeout is None:
            connect_timeout = float(params.get("connect_timeout") or 5.0)
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout!r}")
        #: seconds to wait for the server when connecting
        self.connect_timeout = connect_timeout
        self._server = self._describe_server(params)
        pool_kwargs.setdefault("check", psycopg_pool.ConnectionPool.check_connection)
        pool_kwargs.setdefault("name", f"appendmuch:{self.table}")
        kwargs = dict(pool_kwargs.pop("kwargs", None) or {})
        kwargs["connect_timeout"] = max(2, math.ceil(connect_timeout))
        if read_only:
            options = kwargs.get("options", "")
            kwargs["options"] = f"{options} -c default_transaction_read_only=on".strip()
        pool_kwargs["kwargs"] = kwargs
        # The pool logs each failed reconnection; without logging configured those
        # would reach stderr through logging's last resort.  Failures are raised.
        if not _quiet_pool.handlers:
            _quiet_pool.addHandler(logging.NullHandler())
        self._pool_args: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            **pool_kwargs,
        }
        self._pool: Any = None
        self._writer: Any = None
        self._pipe: Pipeline | None = None
        #: the writer connection the batch statements are prepared on (pgpipeline.prepare)
        self._prepared_on: Any = None
        self._timeout = float(self._pool_args.get("timeout", 30.0))
        #: the table's advisory lock: database, schema and table (noted on connecting)
        self._lock_key: int | None = None
        self._identity: dict[str, Any] | None = None
        #: shared mode: the session lock that serialises commits (noted on connecting)
        self._lease_key: int | None = None
        #: shared mode: the first key of the advisory locks naming replace configurations
        self._config_key: int | None = None
        #: the two-key advisory lock that serialises creating the table and its indexes
        self._create_key: tuple[int, int] | None = None
        #: shared mode: the NOTIFY channel of the table
        self._channel = f"appendmuch_{zlib.crc32(f'appendmuch:{self.table}'.encode()):08x}"
        self._listener: Any = None
        self._insert_sql = (
            f"INSERT INTO {self._quoted} ({ROW_COLUMNS}) SELECT * FROM unnest("
            "%b::int8[], %b::text[], %b::text[], %b::bytea[], %b::float8[], %b::text[])"
        )
        self._upsert_sql = (
            f"WITH updated AS (UPDATE {self._quoted} SET seq = %(seq)s, "
            "namespace = %(ns)s, field = %(field)s, value = %(value)s, "
            "created_at = %(at)s, context = %(ctx)s WHERE seq = %(old)s RETURNING 1) "
            f"INSERT INTO {self._quoted} ({ROW_COLUMNS}) "
            "SELECT %(seq)s, %(ns)s, %(field)s, %(value)s, %(at)s, %(ctx)s "
            "WHERE NOT EXISTS (SELECT 1 FROM updated)"
        )
        self._copy_sql = f"COPY {self._quoted} ({ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)"

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        if self.sharing is not None:
            mode += ", shared=True"
        return f"PostgreSQL(table={self.table!r}{mode})"

    def where(self) -> str:
        ident = self._identity
        if ident is None:
            return f"PostgreSQL table {self.table!r} on {self._server}"
        return (
            f"PostgreSQL table {ident['schema']}.{self.table} in database "
            f"{ident['database']!r} on {self._server}"
        )

    def _default_recovery_dir(self) -> str:
        return os.getcwd()

    @staticmethod
    def _describe_server(params: dict[str, Any]) -> str:
        host = params.get("host") or os.environ.get("PGHOST") or "the local socket"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        return f"{host}:{port}"

    def identity(self) -> dict[str, Any]:
        """Server (system identifier where readable, and host:port), database, schema
        and table."""
        if self._identity is not None:
            return dict(self._identity)
        return {
            "backend": "postgresql",
            "server": self._server,
            "system": None,
            "database": None,
            "schema": None,
            "table": self.table,
        }

    def recovery_stem(self) -> str:
        ident = self.identity()
        parts = [str(ident[key]) for key in ("database", "schema") if ident[key] is not None]
        return ".".join([*parts, self.table])

    def _errors(self) -> tuple[type[Exception], ...]:
        return self._library_errors

    # ------------------------------------------------------------------ connection

    def _connect(self) -> None:
        try:
            if self.read_only:
                conn = self._direct_connection()
                try:
                    largest = self._open_table(conn)
                finally:
                    conn.close()
            else:
                # the lock first: an open that finds another writer creates nothing
                largest = self._open_table(self._writer_connection())
        except self._library_errors as exc:
            self._drop_connections()
            raise DatabaseError(f"cannot open {self.where()}: {one_line(exc)}") from exc
        except BaseException:
            self._drop_connections()
            raise
        if largest is not None:
            self.saw_seq(int(largest))

    def _open_table(self, conn: Any) -> Any:
        """Check the table (create it when absent and writable); its largest seq.

        A writer checks and creates in one transaction holding the table's create lock
        (see :meth:`_lock_creation`): shared-mode writers opening a fresh table at once
        would otherwise all run ``CREATE ... IF NOT EXISTS`` side by side, and all but
        one fail on the catalog's unique indexes.  A reader sees the table whole
        (indexes included) or not at all."""
        exists = conn.execute("SELECT to_regclass(%s)", (self._quoted,)).fetchone()[0]
        if self.read_only:
            if exists is None:
                raise DatabaseError(f"there is no table {self.table!r} on the server")
            self._check_schema(conn)
        else:
            with conn.transaction():
                self._lock_creation(conn)
                if exists is None:
                    # another writer may have created it since the look above: then
                    # this creates nothing, and the check below is of that table
                    self._create_table(conn)
                self._check_schema(conn)
                self._create_indexes(conn)
        return conn.execute(f"SELECT MAX(seq) FROM {self._quoted}").fetchone()[0]

    def _lock_creation(self, conn: Any) -> None:
        """Take the table's create lock until the end of the current transaction.

        A lock of its own (not the writer lock, which shared writers hold together),
        keyed on database, schema and table, and in the two-key space of advisory
        locks, apart from the one-key writer and lease locks."""
        assert self._create_key is not None  # noted on connecting
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._create_key)

    def _pipeline(self) -> Pipeline:
        pipe = self._pipe
        if pipe is None:
            conn = self._writer_connection()
            if self._prepared_on is None or self._prepared_on() is not conn:
                prepare(conn, self._quoted)  # (once per session: the table exists now)
                self._prepared_on = weakref.ref(conn)  # (no reference keeps it open)
            pipe = self._pipe = Pipeline(conn, self._quoted, self._timeout)
        return pipe

    def _leave_pipeline(self) -> None:
        """Take the writer connection out of pipeline mode (nothing in flight): the
        next batch starts a pipeline again."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()

    def _patience(self) -> float:
        return 4 * self._timeout + self.lock_timeout + 30.0

    def _seqs_after(self, seq: int, limit: int) -> list[int]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT seq FROM {self._quoted} WHERE {_SEQ_ABOVE} ORDER BY seq LIMIT %s",
                (seq, limit),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def _create(self, conn: Any) -> None:
        """Create the table and its replace indexes (inside the caller's transaction,
        holding the create lock)."""
        self._create_table(conn)
        self._create_indexes(conn)

    def _create_table(self, conn: Any) -> None:
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

    def _create_indexes(self, conn: Any) -> None:
        for field, pattern in self.replace_index_specs:
            name = index_name(self.table, field, pattern)
            try:
                with conn.transaction():
                    conn.execute(
                        f'CREATE UNIQUE INDEX IF NOT EXISTS "{name}" ON {self._quoted} '
                        f"(namespace, field) WHERE field = '{field}' "
                        f"AND namespace LIKE '{pattern}'"
                    )
            except self._psycopg.errors.UniqueViolation as exc:
                raise SchemaError(
                    f"cannot create the unique replace index for field {field!r} / "
                    f"namespaces LIKE {pattern!r} on table {self.table!r}: the table already "
                    "holds several rows for one such namespace and field"
                ) from exc

    def _check_schema(self, conn: Any) -> None:
        # pg_catalog rather than information_schema: on a new session (every open) its
        # views cost about 10 ms of catalog loading, these two queries about 3 ms.
        # format_type(..., NULL) names the (domain's base) type without its modifier,
        # as information_schema's data_type does: "character varying", not "(20)".
        columns = {
            name: (data_type, nullable, has_default)
            for name, data_type, nullable, has_default in conn.execute(
                "SELECT a.attname, format_type(COALESCE(NULLIF(t.typbasetype, 0), t.oid), "
                "NULL), NOT a.attnotnull, a.atthasdef FROM pg_attribute a "
                "JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                (self._quoted,),
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
        for name, (_, nullable, has_default) in columns.items():
            if name not in _EXPECTED and not nullable and not has_default:
                problems.append(f"extra column {name!r} is NOT NULL without a default")
        unique, primary = self._single_column_indexes(conn)
        if "seq" in columns and "seq" not in unique:
            problems.append("column 'seq' has no UNIQUE constraint")
        if "id" in columns and "id" not in primary:
            problems.append("column 'id' is not the primary key")
        if problems:
            raise SchemaError(
                f"table {self.table!r} exists with an incompatible layout "
                f"({'; '.join(problems)}); it was left untouched. Use another "
                "table_prefix/tblextra, or driver.reset() to drop and recreate it (this "
                "deletes its rows)"
            )

    def _single_column_indexes(self, conn: Any) -> tuple[set[str], set[str]]:
        """The columns with a unique index of their own (no predicate), and those that
        are the primary key by themselves."""
        unique: set[str] = set()
        primary: set[str] = set()
        for column, is_unique, is_primary in conn.execute(
            "SELECT a.attname, i.indisunique, i.indisprimary FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND i.indnatts = 1 AND i.indpred IS NULL",
            (self._quoted,),
        ):
            if is_unique:
                unique.add(column)
            if is_primary:
                primary.add(column)
        return unique, primary

    # ------------------------------------------------------------------ writing

    def _copy(self, conn: Any, rows: list[Row]) -> None:
        with conn.cursor() as cur, cur.copy(self._copy_sql) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)

    def _drain(self, wait: bool) -> None:
        """Send the queue without waiting, in batches of at most ``batch_bytes``; with
        ``wait``, also read every in-flight result (then all is committed).  At most a
        couple of batches are in flight: sending waits for the oldest beyond that."""
        pipe = self._pipeline()
        pending = self._pending
        self._confirm(pipe.reap(block=False))
        left = pending.unsent()
        while left > 0:
            if len(pipe.inflight) >= _MAX_IN_FLIGHT:
                self._confirm(pipe.reap(block=True, keep=_MAX_IN_FLIGHT - 1))
            pipe.check_alive()  # so the write that meets a dead server is the one to raise
            inserts, updates, taken = self._take()
            left -= taken[0] + taken[1]
            # Sent even when nothing is left after the check for stored rows: the
            # result confirms the batch's place in the queue, in order.
            pipe.send((inserts, updates), taken)
            self.note_written(inserts, updates)
        if wait:
            self._confirm(pipe.reap(block=True))

    def _confirm(self, results: list[tuple[Tag, str | None]]) -> None:
        """Drop committed batches from the queue, oldest first; at the first batch the
        server refused, raise (its rows and every later batch's stay queued)."""
        for (inserts, updates), message in results:
            if message is not None:
                raise self._psycopg.DatabaseError(message.strip())
            self._committed(inserts, updates)

    def _inflight(self) -> int:
        pipe = self._pipe
        return 0 if pipe is None else len(pipe.inflight)

    def _write_batch(self, inserts: list[Row], updates: list[tuple[int, Row]]) -> None:
        """Write one batch of rows that are not queued in one transaction, and wait
        for its commit (after confirming the queued batches in flight)."""
        pipe = self._pipeline()
        self._confirm(pipe.reap(block=True))
        pipe.send((inserts, updates), (0, 0))
        self._confirm(pipe.reap(block=True))

    # ------------------------------------------------------------------ shared mode

    def _overwrite(self, conn: Any, updates: list[tuple[int, Row]]) -> None:
        """Overwrite stored rows in place (replace semantics); insert if gone."""
        for old_seq, row in updates:
            cur = conn.execute(
                f"UPDATE {self._quoted} SET seq = %s, namespace = %s, field = %s, "
                "value = %s, created_at = %s, context = %s WHERE seq = %s",
                (*row, old_seq),
            )
            if cur.rowcount == 0:
                self._copy(conn, [row])

    # ------------------------------------------------------------------ reading

    def _rows_between(self, low: float, high: float) -> Iterator[Row]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {ROW_COLUMNS} FROM {self._quoted} WHERE created_at BETWEEN %s AND %s",
                (low, high),
            ).fetchall()
        return iter([tuple(row) for row in rows])

    def _select(self) -> Iterator[Row]:
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
                yield from rows

    def stored_names(self) -> set[tuple[str, str]]:
        with self._connection() as conn:
            rows = conn.execute(f"SELECT DISTINCT namespace, field FROM {self._quoted}")
            return {(namespace, field) for namespace, field in rows}

    def _table_size(self) -> int:
        with self._connection() as conn:
            (size,) = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass)", (self._quoted,)
            ).fetchone()
        return int(size)

    def _stored_rows(self, seqs: list[int]) -> dict[int, Row]:
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {ROW_COLUMNS} FROM {self._quoted} WHERE seq = ANY(%s)", (seqs,)
            ).fetchall()
        return {row[0]: tuple(row) for row in rows}

    # ------------------------------------------------------------------ maintenance

    def _recreate(self) -> None:
        self._writer_connection()  # the lock first
        with self._connection() as conn, conn.transaction():
            self._lock_creation(conn)
            conn.execute(f"DROP TABLE IF EXISTS {self._quoted}")
            self._create(conn)
        if self._flusher is None or not self._flusher.alive():
            self._start_flusher()

    def _insert_atomically(self, rows: list[Row], updates: list[tuple[int, Row]]) -> None:
        try:
            with self._connection() as conn, conn.transaction():
                if rows:
                    self._copy(conn, rows)
                self._overwrite(conn, updates)
        except self._psycopg.errors.UniqueViolation as exc:
            existing = sorted(self._existing_seqs([row[0] for row in rows]))
            what = (
                f"seq {existing[0]} already exists in table {self.table!r}"
                if existing
                else f"a row violates a constraint of table {self.table!r} (a replace index?)"
            )
            raise DumpFormatError(f"restore: {what}; nothing was restored") from exc
