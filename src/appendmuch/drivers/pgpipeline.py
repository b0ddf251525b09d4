"""Batches sent to PostgreSQL without waiting for them (libpq pipeline mode).

Each batch is one ``INSERT ... SELECT FROM unnest(...)`` of all its rows (plus one
statement per overwrite) followed by a Sync, so the server runs it as one implicit
transaction and commits it on its own.  The application queues the next batch while
the server works on this one; results are read later, oldest first.  A batch is
acknowledged (committed) only once its result has been read.  Each batch carries a tag
(how many queued rows it took), handed back with its result.

A pipeline whose sending or reading was cut short (an exception, KeyboardInterrupt)
is out of step with the server: the driver drops its connection rather than read on.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections import deque
from typing import Any

from .base import Row
from .pgarrays import pack_rows

__all__ = ["INSERT", "NOTIFY", "Batch", "Pipeline", "Tag", "insert_sql", "prepare"]

#: (rows to insert, (seq of stored row, row overwriting it))
Batch = tuple[list[Row], list[tuple[int, Row]]]
#: the insert's six parameters, all in binary format
_BINARY_6 = [1] * 6
#: what the sender needs back with a batch's result (queued inserts, overwrites taken)
Tag = tuple[int, int]


#: the statements every writer connection prepares once (:func:`prepare`): parsing
#: and planning the insert for each batch cost the server about a third of its work
INSERT = b"appendmuch_insert"
NOTIFY = b"appendmuch_notify"


def insert_sql(table: str) -> str:
    """One batch's insert: the six columns as arrays ($1..$6), unnested into rows."""
    return (
        f"INSERT INTO {table} (seq, namespace, field, value, created_at, context) "
        "SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::bytea[], "
        "$5::float8[], $6::text[])"
    )


def prepare(conn: Any, table: str) -> None:
    """Prepare :data:`INSERT` and :data:`NOTIFY` on a new writer connection (not in
    pipeline mode; they last as long as its session).  One already there is this
    table's (a connection writes one table): a call cut short is simply repeated."""
    from psycopg.errors import DuplicatePreparedStatement

    for statement in (
        f"PREPARE {INSERT.decode()} AS {insert_sql(table)}",
        f"PREPARE {NOTIFY.decode()} (text, text) AS SELECT pg_notify($1, $2)",
    ):
        with contextlib.suppress(DuplicatePreparedStatement):
            conn.execute(statement)


def ready(fd: int, timeout: float, *, write: bool = False) -> int:
    """Wait up to ``timeout`` seconds until ``fd`` is readable (or writable, with
    ``write``); the ``poll`` events seen, 0 if none.  ``poll`` rather than ``select``:
    a process with many open files may hand out descriptors above 1023."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | (select.POLLOUT if write else 0))
    events = poller.poll(max(timeout, 0.0) * 1000.0)
    return events[0][1] if events else 0


class Pipeline:
    """A writer connection in pipeline mode, with the batches it has in flight.

    The connection must have been through :func:`prepare`."""

    def __init__(self, conn: Any, table: str, timeout: float) -> None:
        import psycopg
        from psycopg import pq
        from psycopg.adapt import PyFormat, Transformer
        from psycopg.types.numeric import Int8

        self.conn = conn
        self.pgconn = conn.pgconn
        self.timeout = timeout
        #: tags of the batches sent, oldest first, whose results have not been read yet
        self.inflight: deque[Tag] = deque()
        self._pq = pq
        self._int8 = Int8
        self._transformer = Transformer(conn)
        self._binary = [PyFormat.BINARY] * 7
        #: texts may be packed as UTF-8 (pgarrays) rather than dumped by psycopg
        self._utf8 = conn.info.encoding == "utf-8"
        self._operational_error = psycopg.OperationalError
        self._insert = insert_sql(table).encode()
        self._overwrite = (
            f"WITH updated AS (UPDATE {table} SET seq = $1::int8, namespace = $2::text, "
            "field = $3::text, value = $4::bytea, created_at = $5::float8, "
            "context = $6::text WHERE seq = $7::int8 RETURNING 1) "
            f"INSERT INTO {table} (seq, namespace, field, value, created_at, context) "
            "SELECT $1::int8, $2::text, $3::text, $4::bytea, $5::float8, $6::text "
            "WHERE NOT EXISTS (SELECT 1 FROM updated)"
        ).encode()
        self.pgconn.enter_pipeline_mode()

    def send(self, batch: Batch, tag: Tag, notify: tuple[str, str] | None = None) -> None:
        """Queue a batch on the server.  It is in flight from the first byte sent.

        ``notify``: (channel, payload) of a ``NOTIFY`` sent in the batch's transaction.
        """
        inserts, updates = batch
        self.inflight.append(tag)
        if inserts:
            packed = pack_rows(inserts) if self._utf8 else None
            if packed is not None:
                self.pgconn.send_query_prepared(INSERT, packed, param_formats=_BINARY_6)
            else:
                columns: list[list[Any]] = [list(column) for column in zip(*inserts, strict=True)]
                columns[0] = [self._int8(seq) for seq in columns[0]]
                self._send(self._insert, columns, 6)
        for old_seq, row in updates:
            params = [self._int8(row[0]), *row[1:], self._int8(old_seq)]
            self._send(self._overwrite, params, 7)
        if notify is not None:
            channel, payload = notify
            self.pgconn.send_query_prepared(NOTIFY, [channel.encode(), payload.encode()])
        self.pgconn.pipeline_sync()
        self._drain_output()

    def send_command(self, command: bytes, params: list[Any]) -> None:
        """Queue one statement (int parameters as int8) in a transaction of its own,
        after the batches in flight; it counts as an empty batch."""
        self.inflight.append((0, 0))
        values = [self._int8(p) if type(p) is int else p for p in params]
        self._send(command, values, len(values))
        self.pgconn.pipeline_sync()
        self._drain_output()

    def _drain_output(self) -> None:
        """Push libpq's output buffer to the server (psycopg runs libpq non-blocking,
        so a large batch may still sit in it after the calls above returned)."""
        pgconn = self.pgconn
        deadline = time.monotonic() + self.timeout
        while pgconn.flush():
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._operational_error(
                    f"could not send a batch to the server within {self.timeout} s"
                )
            if ready(pgconn.socket, left, write=True) & select.POLLIN:
                pgconn.consume_input()  # the server may wait for us to read first

    def _send(self, command: bytes, params: list[Any], count: int) -> None:
        transformer = self._transformer
        values = transformer.dump_sequence(params, self._binary[:count])
        self.pgconn.send_query_params(
            command,
            values,
            param_types=transformer.types,
            param_formats=transformer.formats,
        )

    def check_alive(self) -> None:
        """Raise ``psycopg.OperationalError`` if the server has closed the connection.

        A server that shuts down sends a notice and closes the socket; libpq notices
        only when it reads past the notice, so read whatever is waiting (results of
        in-flight batches are kept for :meth:`reap`).  Costs one ``select`` when idle.
        """
        pgconn = self.pgconn
        for _ in range(3):
            if not ready(pgconn.socket, 0.0):
                return
            pgconn.consume_input()

    def reap(self, *, block: bool, keep: int = 0) -> list[tuple[Tag, str | None]]:
        """Read results of in-flight batches, oldest first, down to ``keep`` left.

        Without ``block``, stops at the first batch whose results have not arrived.
        Returns each batch's tag with the server's error message, or None when it was
        committed.  Raises ``psycopg.OperationalError`` if the connection breaks (the
        in-flight batches then stay in :attr:`inflight`, their outcome unknown).
        """
        results: list[tuple[Tag, str | None]] = []
        while len(self.inflight) > keep:
            if not block and not self._arrived():
                break
            message = self._read_batch()
            results.append((self.inflight.popleft(), message))
        return results

    def _arrived(self) -> bool:
        self.pgconn.consume_input()
        return not self.pgconn.is_busy()

    def _wait(self) -> None:
        self._drain_output()
        deadline = time.monotonic() + self.timeout
        pgconn = self.pgconn
        while not self._arrived():
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._operational_error(f"no answer from the server within {self.timeout} s")
            ready(pgconn.socket, left)

    def _read_batch(self) -> str | None:
        """Read one batch's results up to its Sync; the first error message, if any."""
        pq = self._pq
        error: str | None = None
        ended = False
        while True:
            self._wait()
            result = self.pgconn.get_result()
            if result is None:
                if ended:  # nothing more will come: no Sync was sent for this batch
                    raise self._operational_error("the pipeline is out of step")
                ended = True
                continue  # the end of one statement's results
            ended = False
            status = result.status
            if status == pq.ExecStatus.PIPELINE_SYNC:
                return error
            if status == pq.ExecStatus.FATAL_ERROR and error is None:
                error = result.get_error_message()
            elif status not in (
                pq.ExecStatus.COMMAND_OK,
                pq.ExecStatus.TUPLES_OK,
                pq.ExecStatus.PIPELINE_ABORTED,
            ):
                error = error or f"unexpected result {status.name}"

    def close(self) -> None:
        """Leave pipeline mode (every result must have been read)."""
        self.pgconn.exit_pipeline_mode()
