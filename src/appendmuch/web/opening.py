"""Opening a log for the web view: read-only, following its writers, indexed.

A SQLite file or a PostgreSQL table is opened with a read-only driver in shared mode
(``read_only=True, shared=True``): it takes no lock, creates and writes nothing, and
its follower brings in what the writers commit, whether one single writer or several
shared ones (SQLite: a ``PRAGMA data_version`` check every few milliseconds;
PostgreSQL: ``LISTEN`` plus a read every 0.1 s).  Each new row reaches the index
through the Store's ``on_change``.  A dump file is restored into a Memory log: it is
shown as it is and does not change.

The database is checked first with :func:`appendmuch.inspection.open_log`, so a
missing file, a missing table or an unreachable server gives the same one-line error
as the other commands.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from ..drivers.base import DBDriver
from ..drivers.memory import Memory
from ..drivers.postgresql import PostgreSQL
from ..drivers.sqlite import Sqlite3
from ..errors import DatabaseError, DumpFormatError, one_line
from ..inspection import Target, open_log
from ..rendering import LenientCodec
from ..store import Store
from .index import LogIndex

__all__ = ["Source", "open_source"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
#: seconds the writer status is reused before it is asked again
_WRITER_TTL = 2.0


@dataclass
class Source:
    """An opened log: its read-only Store, the index over it, and what it is."""

    store: Store
    index: LogIndex
    #: "sqlite", "postgresql" or "dump"
    backend: str
    #: the database for people (a PostgreSQL URL without its password)
    database: str
    #: the table shown (None for a dump file)
    table: str | None
    #: new rows arrive while it is open (not for a dump)
    live: bool
    _writer: tuple[float, str, int | None] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def writer(self) -> tuple[str, int | None]:
        """Who writes the log now: ``("none", 0)``, ``("single", 1)``, ``("shared", n)``
        (n None: unknown), ``("dump", 0)``, or ``("unknown", None)`` if the database
        cannot say.  Asked at most every 2 seconds."""
        if self.backend == "dump":
            return "dump", 0
        with self._lock:
            cached = self._writer
            if cached is not None and time.monotonic() - cached[0] < _WRITER_TTL:
                return cached[1], cached[2]
            holders = getattr(self.store.driver, "lock_holders", None)
            try:
                mode, count = holders() if holders is not None else ("unknown", None)
            except Exception:  # the server went away: the page still shows the rest
                mode, count = "unknown", None
            self._writer = (time.monotonic(), mode, count)
            return mode, count

    def follow_error(self) -> str | None:
        """The last error of the follower (it retries by itself), or None."""
        sharing = self.store.driver.sharing
        error = getattr(sharing, "last_error", None) if sharing is not None else None
        return None if error is None else one_line(error)

    def close(self) -> None:
        """Close the Store (and its driver and follower)."""
        self.store.close()


def _is_dump(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    return bool(head) and head != _SQLITE_MAGIC


def open_source(
    db: str, *, table_prefix: str = "appendmuch", tblextra: str = "", timeout: float = 10.0
) -> Source:
    """Open ``db`` (a SQLite path, a ``postgresql://`` URL or a dump file) read-only
    and index it.  O(rows).  Raises :class:`~appendmuch.errors.DatabaseError` (and the
    Store's load errors) with a one-line message."""
    target = Target(db, table_prefix, tblextra)
    index = LogIndex()
    if not target.is_postgres and os.path.isfile(db) and _is_dump(db):
        store = _open_dump(db, index)
        index.build(store)
        return Source(store, index, "dump", db, None, live=False)
    open_log(target, timeout=timeout).close()  # the usual checks and messages
    driver: DBDriver
    if target.is_postgres:
        driver = PostgreSQL(
            db,
            table_prefix=table_prefix,
            tblextra=tblextra,
            read_only=True,
            shared=True,
            min_size=0,
            max_size=3,
            timeout=timeout,
        )
    else:
        driver = Sqlite3(
            db, table_prefix=table_prefix, tblextra=tblextra, read_only=True, shared=True
        )
    store = Store(driver, codec=LenientCodec(), on_change=index.note)
    try:
        index.build(store)
    except BaseException:
        store.close()
        raise
    backend = "postgresql" if target.is_postgres else "sqlite"
    return Source(store, index, backend, target.display, target.table, live=True)


def _open_dump(path: str, index: LogIndex) -> Store:
    driver = Memory()
    try:
        with open(path, "rb") as fh:
            driver.restore(fh)
    except DumpFormatError as exc:
        raise DatabaseError(
            f"{path!r} is neither a SQLite database nor an appendmuch dump: {one_line(exc)}"
        ) from exc
    driver.read_only = True  # the Store refuses writes, as for the SQL backends
    return Store(driver, codec=LenientCodec(), on_change=index.note)
