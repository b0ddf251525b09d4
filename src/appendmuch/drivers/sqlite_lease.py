"""Shared mode's lease on a SQLite file (the :class:`~appendmuch.drivers.lease.Lease`
of :class:`~appendmuch.Sqlite3`).

The lease is a lock file beside the database, ``{database}-{table}.lease``, taken in
turn (:mod:`appendmuch.drivers.fifolock`: a process that gives it back and asks again
queues behind those already waiting); the kernel releases it when its holder dies.
Everything here runs in the driver's engine thread, on a connection of its own, so it
never shares a connection with the application's reads.  Others' commits are noticed
with ``PRAGMA data_version``, which changes whenever another connection commits to
the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import sqlite3
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import ClosedError, ConfigMismatchError, LockedError
from .base import Row
from .fifolock import FifoLock
from .layout import ROW_COLUMNS

if TYPE_CHECKING:
    from .wakeup import Doorbell

__all__ = ["SqliteLease", "rows_by_seq"]


def rows_by_seq(conn: sqlite3.Connection, quoted: str, seqs: list[int]) -> dict[int, Row]:
    """The rows of table ``quoted`` with these seqs, by seq (500 per query: SQLite's
    limit on bound parameters is 999 in older builds)."""
    found: dict[int, Row] = {}
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT {ROW_COLUMNS} FROM {quoted} WHERE seq IN ({marks})", chunk
        ):
            found[row[0]] = row
    return found


class SqliteLease:
    """The lease methods of :class:`~appendmuch.Sqlite3` (a mixin: ``self`` is the
    driver)."""

    database: str
    table: str
    timeout: float
    synchronous: str
    lease_timeout: float
    _quoted: str
    _insert_sql: str
    _lease: FifoLock | None
    _lease_conn: sqlite3.Connection | None
    _lease_version: int | None
    _config_file: IO[bytes] | None
    read_only: bool

    def _init_lease(self) -> None:
        self._lease = None
        self._lease_conn = None
        self._lease_version = None
        self._config_file = None

    @property
    def lease_path(self) -> str:
        """The lease's lock file (beside the writer lock file)."""
        return self.lock_path[: -len(".lock")] + ".lease"

    def _lease_connection(self) -> sqlite3.Connection:
        conn = self._lease_conn
        if conn is None:
            target, uri = self.database, False
            if self.read_only:  # (a follower that writes nothing)
                target, uri = f"file:{quote(os.path.abspath(self.database))}?mode=ro", True
            conn = sqlite3.connect(
                target,
                uri=uri,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            if not self.read_only:
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._lease_conn = conn
            self._lease_version = None
        return conn

    def lease_take(self, after: int) -> list[Row]:
        lock = self._lease
        if lock is None:
            lock = self._lease = FifoLock(self.lease_path)
        try:
            lock.acquire(timeout=self.lease_timeout)
        except TimeoutError:
            raise LockedError(
                f"could not take the write lease of {self.where()} within "
                f"{self.lease_timeout} s: another shared-mode writer holds it (lock file "
                f"{self.lease_path}); nothing was written"
            ) from None
        except InterruptedError:
            raise ClosedError(f"{self.where()} was closed while waiting for its lease") from None
        try:
            self._check_still_ours()
            return self.lease_rows_after(after)
        except BaseException:
            lock.release()
            raise

    def lease_commit(
        self, inserts: list[Row], updates: list[tuple[int, Row]], *, keep: bool = False
    ) -> None:
        failed = True
        try:
            conn = self._lease_connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if inserts:
                    conn.executemany(self._insert_sql, inserts)
                self._overwrite(conn, updates)
                conn.execute("COMMIT")
                failed = False
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if failed or not keep:
                self.lease_give_back()

    def lease_give_back(self) -> None:
        lock = self._lease
        if lock is not None and lock.held:
            lock.release()

    def lease_rows_after(self, after: int) -> list[Row]:
        return (
            self._lease_connection()
            .execute(
                f"SELECT {ROW_COLUMNS} FROM {self._quoted} WHERE seq > ? ORDER BY seq", (after,)
            )
            .fetchall()
        )

    def lease_wait(self, timeout: float, bell: Doorbell) -> bool:
        if bell.wait(timeout):
            return False
        (version,) = self._lease_connection().execute("PRAGMA data_version").fetchone()
        changed = version != self._lease_version
        self._lease_version = version
        return bool(changed)

    def lease_recreate(self) -> None:
        conn = self._lease_connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"DROP TABLE IF EXISTS {self._quoted}")
            self._create_table(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def lease_claim(self, digest: str, description: str) -> None:
        """A file per replace configuration beside the lock file, held with a shared
        lock by every writer using it (and holding its description): a writer finding
        another one held refuses to join.  Files nobody holds are removed."""
        prefix = self.lock_path[: -len(".lock")] + ".config-"
        mine = open(prefix + digest, "a+b")  # noqa: SIM115 - held while open
        fcntl.flock(mine.fileno(), fcntl.LOCK_SH)
        if os.fstat(mine.fileno()).st_size == 0:
            mine.write(description.encode())
            mine.flush()
        for path in glob.glob(glob.escape(prefix) + "*"):
            if path == prefix + digest:
                continue
            try:
                other = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            with other:
                try:
                    fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # held: a writer attached uses that one
                    theirs = other.read().decode(errors="replace") or "(unknown)"
                    mine.close()
                    raise ConfigMismatchError(
                        f"{self.where()}: this writer's replace configuration differs from "
                        f"the one its other shared writers use, so their caches would hold "
                        f"different rows. This writer: {description}. Theirs: {theirs}. "
                        "Every shared writer of a table must use the same replace_predicate "
                        "and replace_index_specs: stop the others first (a rolling deploy "
                        "that changes them needs all writers stopped)"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # nobody uses it any more
        old, self._config_file = self._config_file, mine
        if old is not None:
            old.close()

    def lease_close(self) -> None:
        config, self._config_file = self._config_file, None
        if config is not None:
            config.close()
        lock, self._lease = self._lease, None
        if lock is not None:
            lock.close()
        conn, self._lease_conn = self._lease_conn, None
        if conn is not None:
            conn.close()

    if TYPE_CHECKING:  # the driver's own

        @property
        def lock_path(self) -> str: ...

        def where(self) -> str: ...

        def _check_still_ours(self) -> None: ...

        def _overwrite(self, conn: sqlite3.Connection, updates: list[tuple[int, Row]]) -> None: ...

        def _create_table(self, conn: sqlite3.Connection) -> Any: ...


if TYPE_CHECKING:
    from .lease import Lease

    #: (for mypy: the mixin implements the whole protocol)
    _implements: type[Lease] = SqliteLease
