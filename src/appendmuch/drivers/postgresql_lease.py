"""Shared mode's lease on a PostgreSQL table (the
:class:`~appendmuch.drivers.lease.Lease` of :class:`~appendmuch.PostgreSQL`).

The lease is a session advisory lock taken on the writer connection; the server
grants waiting sessions in the order they asked, and releases it when a session
ends.  Taking it and reading what others committed since is one round trip (a
pipeline); a round's rows, its ``NOTIFY`` and the unlock are another.  Others'
commits are heard through ``LISTEN`` on a connection of its own (their ``NOTIFY``);
without one it still reads every ``poll`` seconds, in case a notification is lost.
Everything here runs in the driver's engine thread.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import ConfigMismatchError, LockedError
from .base import Row
from .layout import ROW_COLUMNS
from .lease import CommitUnknownError
from .pgpipeline import Pipeline, prepare
from .postgresql_connect import int4

if TYPE_CHECKING:
    from .wakeup import Doorbell

__all__ = ["PostgresLease"]


class PostgresLease:
    """The lease methods of :class:`~appendmuch.PostgreSQL` (a mixin: ``self`` is the
    driver)."""

    conninfo: str
    lease_timeout: float
    _quoted: str
    _channel: str
    _lease_key: int | None
    _config_key: int | None
    _psycopg: Any
    _library_errors: tuple[type[Exception], ...]
    _timeout: float
    _listener: Any
    _prepared_on: Any

    def _after_sql(self) -> str:
        """The stored rows above a seq (the parameter), in seq order.  The upper bound
        changes no result; it makes the planner see a range, whose default selectivity
        picks the seq index while the table has no statistics yet (with ``seq > $1``
        alone it guessed a third of the table, and scanned and sorted all of it)."""
        return (
            f"SELECT {ROW_COLUMNS} FROM {self._quoted} WHERE seq > %s "
            "AND seq <= 9223372036854775807 ORDER BY seq"
        )

    def lease_take(self, after: int) -> list[Row]:
        conn = self._writer_connection()
        try:
            with conn.pipeline():
                conn.execute("SELECT pg_advisory_lock(%s)", (self._lease_key,))
                cur = conn.cursor(binary=True).execute(self._after_sql(), (after,))
            return [tuple(row) for row in cur.fetchall()]
        except self._psycopg.errors.LockNotAvailable:
            raise LockedError(
                f"could not take the write lease of {self.where()} within "
                f"{self.lease_timeout} s: another shared-mode writer holds it; nothing "
                "was written"
            ) from None
        except BaseException:
            self._drop_connections()  # (ending the session gives back whatever it held)
            raise

    def lease_commit(
        self, inserts: list[Row], updates: list[tuple[int, Row]], *, keep: bool = False
    ) -> None:
        conn = self._writer_connection()
        try:
            if self._prepared_on is None or self._prepared_on() is not conn:
                prepare(conn, self._quoted)
                self._prepared_on = weakref.ref(conn)
            pipe = Pipeline(conn, self._quoted, self._timeout)
            top = max(row[0] for row in (*inserts, *(row for _, row in updates)))
            pipe.send((inserts, updates), (0, 0), (self._channel, str(top)))
            if not keep:
                pipe.send_command(b"SELECT pg_advisory_unlock($1)", [self._lease_key])
        except BaseException as exc:
            self._drop_connections()
            raise CommitUnknownError(str(exc)) from exc
        try:
            results = pipe.reap(block=True)
            pipe.close()
        except BaseException as exc:
            self._drop_connections()
            raise CommitUnknownError(str(exc)) from exc
        for _, message in results:
            if message is not None:
                if keep:  # (a failed commit gives the lease back, as promised)
                    self.lease_give_back()
                raise self._psycopg.DatabaseError(message.strip())

    def lease_give_back(self) -> None:
        conn = self._writer
        if conn is None or conn.closed:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._lease_key,))
        except BaseException:
            self._drop_connections()
            raise

    def _follow_connection(self) -> Any:
        conn = self._listener
        if conn is None or conn.closed:
            conn = self._psycopg.connect(self.conninfo, autocommit=True)
            conn.execute(f'LISTEN "{self._channel}"')
            self._listener = conn
        return conn

    def lease_rows_after(self, after: int) -> list[Row]:
        conn = self._follow_connection()
        try:
            rows = conn.cursor(binary=True).execute(self._after_sql(), (after,)).fetchall()
        except BaseException:
            self._close_listener()
            raise
        return [tuple(row) for row in rows]

    def lease_wait(self, timeout: float, bell: Doorbell) -> bool:
        # One poll() on the doorbell and the listening socket; psycopg then only
        # collects what arrived (its own timed wait polls the socket in a loop).
        writer = self._writer
        own = writer.info.backend_pid if writer is not None and not writer.closed else None
        try:
            conn = self._follow_connection()
            notes = list(conn.notifies(timeout=0))
            if not notes:
                rung = bell.wait(timeout, conn.fileno())
                notes = list(conn.notifies(timeout=0))
                if rung and not notes:
                    return False
            # (no wait for more notifications to read them at once: 3 ms of it made
            # blocks on two processes wait twice as long at p90, 6 ms instead of 3)
            foreign = any(note.pid != own for note in notes)
        except self._library_errors:
            self._close_listener()
            return True  # (read on a new connection)
        return foreign or not notes

    def lease_recreate(self) -> None:
        conn = self._writer_connection()
        with conn.transaction():
            self._lock_creation(conn)
            conn.execute(f"DROP TABLE IF EXISTS {self._quoted}")
            self._create(conn)

    def lease_close(self) -> None:
        self._close_listener()

    def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(*self._library_errors):
                conn.close()

    def lease_claim(self, digest: str, description: str) -> None:
        """A shared advisory lock per replace configuration, held by every writer
        session using it: a writer finding one of another configuration held refuses
        to join (and names its own; the others' is known by its fingerprint)."""
        conn = self._writer_connection()
        assert self._config_key is not None
        space, mine = self._config_key, int4(int(digest[:8], 16))
        conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (space, mine))
        others = conn.execute(
            "SELECT l.objid::int8, l.pid, a.application_name, a.client_addr::text "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.classid = %s::int8::oid AND l.objid <> %s::int8::oid "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY l.pid",
            (space & 0xFFFFFFFF, mine & 0xFFFFFFFF),
        ).fetchall()
        if others:
            conn.execute("SELECT pg_advisory_unlock_shared(%s, %s)", (space, mine))
            sessions = "; ".join(
                f"fingerprint {other:08x} held by server pid {pid} "
                f"(application_name {name or ''!r}, client {addr or 'local'})"
                for other, pid, name, addr in others[:5]
            )
            raise ConfigMismatchError(
                f"{self.where()}: this writer's replace configuration differs from the one "
                f"its other shared writers use, so their caches would hold different rows. "
                f"This writer: {description} (fingerprint {mine & 0xFFFFFFFF:08x}). Theirs: "
                f"{sessions}. Every shared writer of a table must use the same "
                "replace_predicate and replace_index_specs: stop the others first (a rolling "
                "deploy that changes them needs all writers stopped)"
            )

    if TYPE_CHECKING:  # the driver's own
        _writer: Any

        def _writer_connection(self) -> Any: ...

        def _drop_connections(self) -> None: ...

        def where(self) -> str: ...

        def _lock_creation(self, conn: Any) -> None: ...

        def _create(self, conn: Any) -> None: ...


if TYPE_CHECKING:
    from .lease import Lease

    #: (for mypy: the mixin implements the whole protocol)
    _implements: type[Lease] = PostgresLease
