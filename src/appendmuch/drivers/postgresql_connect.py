"""PostgreSQL connections and the writer lock (the connection handling of
:class:`~appendmuch.PostgreSQL`).

Reads use a psycopg_pool pool; the writer has a connection of its own, which holds
the table's session advisory lock (exclusive for a single writer, shared by
shared-mode writers).  A writer that was just killed keeps its server session, and
the lock, while the session finishes the statement it ran: opening waits for such a
busy holder (``lock_timeout``), but fails at once on an idle, living one.  A broken
connection is dropped with the pool, and the next use connects afresh.
"""

from __future__ import annotations

import threading
import time
import zlib
from typing import TYPE_CHECKING, Any

from ..errors import DatabaseError, LockedError, one_line

if TYPE_CHECKING:
    from .batching import Pending
    from .pgpipeline import Pipeline
    from .sharing import Engine

__all__ = ["PostgresConnections", "import_psycopg", "int4"]

#: server pids of writer sessions this process closed without unlocking first
_ended_sessions: set[int] = set()
#: first key of every table's create lock (see PostgreSQL._lock_creation)
_CREATE_SPACE = 0x61706D63  # "apmc"


def int4(value: int) -> int:
    """Package-internal: an unsigned 32-bit number as the signed int4 PostgreSQL
    takes."""
    return value - (1 << 32) if value >= 1 << 31 else value


def import_psycopg() -> tuple[Any, Any]:
    """Package-internal: psycopg and psycopg_pool, imported on first use."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ImportError(
            "the PostgreSQL driver needs psycopg 3 and psycopg_pool, which come with the "
            "'pg' extra: pip install 'appendmuch[pg]'"
        ) from exc
    return psycopg, psycopg_pool


def _ending(conn: Any) -> None:
    """Note a writer session about to be closed (see PostgreSQL._holder_busy)."""
    if not conn.closed:
        _ended_sessions.add(conn.info.backend_pid)


class PostgresConnections:
    """The connection methods of :class:`~appendmuch.PostgreSQL` (a mixin: ``self``
    is the driver)."""

    def _open_pool(self) -> Any:
        """The connection pool for reads, opened on first use (and again after a
        failure)."""
        if self._pool is None:
            self._pool = self._pool_class(self.conninfo, open=False, **self._pool_args)
            self._pool.open(wait=False)
        return self._pool

    def _connection(self) -> Any:
        """A pooled connection, as a context manager."""
        return self._open_pool().connection()

    def _direct_connection(self) -> Any:
        """A connection of its own (autocommit), failing within ``connect_timeout``
        with the server and the cause."""
        kwargs = dict(self._pool_args["kwargs"])
        try:
            conn = self._psycopg.connect(self.conninfo, **kwargs)
        except self._psycopg.Error as exc:
            raise DatabaseError(
                f"cannot connect to the PostgreSQL server at {self._server} for table "
                f"{self.table!r}: {one_line(exc)}"
            ) from exc
        try:
            conn.autocommit = True
            configure = self._pool_args.get("configure")
            if configure is not None:
                configure(conn)
            if self._identity is None:
                self._note_identity(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _note_identity(self, conn: Any) -> None:
        """Note database and schema (where the table is, or would be created) and
        derive the advisory lock key from them."""
        database, schema = conn.execute(
            "SELECT current_database(), COALESCE((SELECT n.nspname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)), "
            "current_schema())",
            (self._quoted,),
        ).fetchone()
        try:
            (system,) = conn.execute(
                "SELECT system_identifier::text FROM pg_control_system()"
            ).fetchone()
        except self._psycopg.Error:  # not readable for this role: host:port identifies
            system = None
        self._identity = {
            "backend": "postgresql",
            "server": self._server,
            "system": system,
            "database": database,
            "schema": schema,
            "table": self.table,
        }
        self._lock_key = zlib.crc32(f"appendmuch:{database}:{schema}:{self.table}".encode())
        self._lease_key = zlib.crc32(f"appendmuch-lease:{database}:{schema}:{self.table}".encode())
        self._config_key = int4(
            zlib.crc32(f"appendmuch-config:{database}:{schema}:{self.table}".encode())
        )
        self._create_key = (
            _CREATE_SPACE,
            int4(zlib.crc32(f"appendmuch-create:{database}:{schema}:{self.table}".encode())),
        )

    def _writer_connection(self) -> Any:
        """The connection batches are written with, kept open (not the pool's).

        It holds the table's advisory lock (one writer per table) and, once writing,
        is in pipeline mode (see :mod:`appendmuch.drivers.pgpipeline`).
        """
        conn = self._writer
        if conn is None or conn.closed:
            conn = self._direct_connection()
            try:
                self._take_writer_lock(conn)
                if self.sharing is not None:
                    # bounds the wait for the write lease (pg_advisory_lock)
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, false)",
                        (f"{max(1, round(self.lease_timeout * 1000))}ms",),
                    )
            except BaseException:
                conn.close()
                raise
            self._writer = conn
        return conn

    def _take_writer_lock(self, conn: Any) -> None:
        """Take the table's session advisory lock on ``conn`` or raise LockedError.

        A writer that was just killed keeps its server session, and the lock, while
        that session finishes the batch it was running: wait for such a busy holder
        (up to ``lock_timeout``), but not for an idle, living writer."""
        # Shared writers hold it shared, a single writer exclusively: the two modes
        # exclude each other.
        take = "pg_try_advisory_lock_shared" if self.sharing else "pg_try_advisory_lock"
        start = time.monotonic()
        deadline = start + self.lock_timeout
        while True:
            (locked,) = conn.execute(f"SELECT {take}(%s)", (self._lock_key,)).fetchone()
            if locked:
                return
            if time.monotonic() >= deadline or not self._holder_busy(conn):
                break
            time.sleep(0.05)
        raise LockedError(self._locked_message(conn, time.monotonic() - start))

    def _locked_message(self, conn: Any, waited: float) -> str:
        if self.sharing is not None:
            return (
                f"{self.where()} is open for writing by a single-writer Store; shared mode "
                "cannot join it: close that Store, or open it with shared=True too"
            )
        shared = self._count_shared(conn)
        if shared:
            return (
                f"{self.where()} is open by {shared} shared-mode writer(s); open this one "
                "with shared=True too, or read_only=True"
            )
        return (
            f"{self.where()} is already open for writing by another session "
            f"(waited {waited:.1f} s); close the other Store first, or open this one "
            "with read_only=True"
        )

    def _count_shared(self, conn: Any) -> int:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND mode = 'ShareLock' AND classid = 0 AND objid = %s::bigint::oid "
            "AND objsubid = 1",
            (self._lock_key,),
        ).fetchone()
        return int(count)

    def writers(self) -> int | None:
        """How many shared-mode writers have the table open."""
        if self._lock_key is None:
            self.ensure()  # the lock key comes from the server
        with self._connection() as conn:
            return self._count_shared(conn)

    def lock_holders(self) -> tuple[str, int | None]:
        """Who has the table open for writing: ``("none", 0)``, ``("single", 1)`` or
        ``("shared", number of writers)``."""
        if self._lock_key is None:
            self.ensure()  # the lock key comes from the server
        with self._connection() as conn:
            modes = dict(
                conn.execute(
                    "SELECT mode, count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND classid = 0 AND objid = %s::bigint::oid "
                    "AND objsubid = 1 GROUP BY mode",
                    (self._lock_key,),
                ).fetchall()
            )
        if modes.get("ExclusiveLock"):
            return "single", 1
        if modes.get("ShareLock"):
            return "shared", int(modes["ShareLock"])
        return "none", 0

    def _holder_busy(self, conn: Any) -> bool:
        """Whether to wait for the table's writer lock: its holder is running a
        statement, or is a writer session this process closed without unlocking (after
        a write was cut short), which lets go once the server has noticed, or there is
        no holder any more."""
        row = conn.execute(
            "SELECT a.state, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 "
            "AND l.objid = %s::bigint::oid AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (self._lock_key,),
        ).fetchone()
        # No holder any more (it let go since the try): worth trying again at once.
        return row is None or row[0] == "active" or row[1] in _ended_sessions

    def _drop_connections(self) -> None:
        """Close the writer connection and the pool; the next use connects afresh, at
        once, instead of waiting for the old pool's reconnection back-off.  Batches
        still in flight go back to the front of the queue (their outcome is unknown:
        the next write leaves out rows the table turns out to hold)."""
        self._pipe = None
        self._pending.release()
        self._uncertain = True
        conn, self._writer = self._writer, None
        if conn is not None:
            _ending(conn)
            conn.close()  # also releases the advisory lock
        pool, self._pool = self._pool, None
        if pool is not None:
            # Its workers may be busy reconnecting: let them stop in the background.
            threading.Thread(target=pool.close, kwargs={"timeout": 10.0}, daemon=True).start()

    def _after_failure(self) -> None:
        self._drop_connections()
        self._connected = False

    def _abort(self) -> None:
        # A pipeline cut short is out of step with the server: start a new session
        # (which takes the writer lock again, see SQLDriver._open).
        if self._pipe is not None or self._writer is not None:
            self._after_failure()

    def _abandon(self) -> list[object]:
        # Never closed here: closing would end the parent's sessions (and its lock).
        kept = [self._pipe, self._writer, self._pool]
        self._pipe = self._writer = self._pool = None
        return kept

    def _disconnect(self) -> None:
        # The writer connection is closed whatever state a write cut short left it in;
        # the lock is released first when the session is in step, so that a writer
        # opening right after finds it free (the server ends a closed session, and frees
        # its locks, only some time after the client has gone).
        conn, pipe = self._writer, self._pipe
        if conn is not None:
            _ending(conn)
            try:
                if not conn.closed and self._lock_key is not None:
                    if pipe is not None:
                        pipe.close()
                    if conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
                        conn.execute("ROLLBACK")
                    # every lock of the session: the table's (shared mode: the mode
                    # lock) and the lease
                    conn.execute("SELECT pg_advisory_unlock_all()")
                    _ended_sessions.discard(conn.info.backend_pid)  # nothing to wait for
            except Exception:  # out of step: closing ends the session (and the lock) anyway
                pass
            finally:
                conn.close()
        # cleared only now: a disconnect cut short is completed by the next one
        self._writer = self._pipe = None
        self._close_listener()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    if TYPE_CHECKING:  # the driver's own
        conninfo: str
        table: str
        lease_timeout: float
        lock_timeout: float
        sharing: Engine | None
        _quoted: str
        _psycopg: Any
        _pool_class: Any
        _pool_args: dict[str, Any]
        _pool: Any
        _writer: Any
        _pipe: Pipeline | None
        _server: str
        _identity: dict[str, Any] | None
        _lock_key: int | None
        _lease_key: int | None
        _config_key: int | None
        _create_key: tuple[int, int] | None
        _pending: Pending
        _uncertain: bool
        _connected: bool

        def ensure(self) -> None: ...

        def where(self) -> str: ...

        def _close_listener(self) -> None: ...
