"""The SQLite driver: the embedded default for real use (stdlib ``sqlite3``)."""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import quote

from ..errors import (
    DatabaseError,
    DecodeError,
    DumpFormatError,
    SchemaError,
)
from .base import Row
from .layout import ROW_COLUMNS, TableNames, index_name
from .sql import BATCH_BYTES, FOLLOW_INTERVAL, RETRY_INTERVAL, SQLDriver
from .sqlite_files import SqliteFiles, lock_state, writer_lock_held
from .sqlite_lease import SqliteLease, rows_by_seq

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


class Sqlite3(SqliteLease, SqliteFiles, SQLDriver):
    """Stores the log in one table of a SQLite database file.

    Rows are written in batches, each in one transaction, in WAL mode (see
    :mod:`appendmuch.drivers.sql` for when batches are written).  While a driver has
    the table open for writing it holds a lock file ``{database}-{table}.lock``, so a
    second writer, in this or another process, fails at open instead of colliding
    later.  ``read_only=True`` opens a consistent snapshot for analysis, even while a
    writer runs, and refuses every write.

    :param database: path of the database file (created if missing, unless read-only),
        or ``":memory:"``.
    :param table_prefix: first part of the table name (an ASCII identifier).
    :param tblextra: appended to the prefix; the table is ``{prefix}{extra}_values``.
    :param replace_index_specs: ``[(field, like_pattern)]``: a unique partial index on
        (namespace, field) for that field in namespaces matching the LIKE pattern.
    :param batch_size: rows per batch (default 100).
    :param batch_interval: seconds a row may wait in a batch (default 0.1).
    :param write_through: commit every row before the assignment returns.
    :param read_only: open without writing to the database, creating it or locking it.
        (A writer leaves a closed file in rollback-journal mode, so reading it creates
        nothing; while a writer runs, readers share its ``-wal`` and ``-shm`` files.)
    :param recovery_dir: where ``close()`` saves rows it cannot write (default: the
        database's directory).
    :param timeout: seconds to wait for a lock held by another connection.
    :param batch_bytes: a queue holding more bytes of values is written in several
        batches (default 64 MiB).
    :param retry_interval: seconds after a failed write during which full batches only
        queue (default 1); ``flush()`` retries at once.
    :param synchronous: SQLite ``PRAGMA synchronous`` level.  ``"NORMAL"`` (default):
        a committed batch survives a crash of the process; ``"FULL"`` also survives a
        power loss, at the cost of an fsync per batch.
    :param shared: several processes on this machine write the table at once (see
        :mod:`appendmuch.drivers.sharing`).  Every writer of the table must use it: a
        shared open of a table a single writer has open (or the reverse) raises
        :class:`~appendmuch.errors.LockedError`.
    :param lease_timeout: shared mode: seconds a write waits for the write lease
        (another writer's batch) before it raises :class:`~appendmuch.errors.LockedError`
        and writes nothing (default 10).
    :param follow_interval: shared mode: seconds between two checks for the other
        writers' commits (default 0.005): how soon their writes reach this process's
        cache, against a few system calls per check.

    >>> import os, tempfile
    >>> from appendmuch import Sqlite3, Store
    >>> path = os.path.join(tempfile.mkdtemp(), "log.sqlite3")
    >>> with Store(Sqlite3(path)) as store:
    ...     store.storage("game", "p1").score = 5
    >>> Store(Sqlite3(path, read_only=True)).storage("game", "p1").score
    5
    """

    #: SQLITE_MAX_LENGTH (10**9 bytes, the default build's limit on a row) less 1 MiB
    #: for the row's other columns
    max_value_bytes = 1_000_000_000 - (1 << 20)

    def __init__(
        self,
        database: str | os.PathLike[str],
        table_prefix: str = "appendmuch",
        tblextra: str = "",
        replace_index_specs: list[tuple[str, str]] | None = None,
        *,
        batch_size: int = 100,
        batch_interval: float = 0.1,
        write_through: bool = False,
        read_only: bool = False,
        recovery_dir: str | os.PathLike[str] | None = None,
        timeout: float = 5.0,
        synchronous: str = "NORMAL",
        batch_bytes: int = BATCH_BYTES,
        retry_interval: float = RETRY_INTERVAL,
        shared: bool = False,
        lease_timeout: float = 10.0,
        follow_interval: float = FOLLOW_INTERVAL,
    ) -> None:
        names = TableNames(table_prefix, tblextra, replace_index_specs)
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
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
            follow_interval=follow_interval,
        )
        self.database = os.fspath(database)
        if shared and self._in_memory:
            raise ValueError("shared=True needs a database file, not an in-memory database")
        self.timeout = timeout
        self.synchronous = synchronous.upper()
        self._conn: sqlite3.Connection | None = None
        self._lockfile: IO[bytes] | None = None
        self._init_lease()
        #: the database file's identity, noted when it is opened
        self._identity: dict[str, Any] | None = None
        #: this open created the database file (an open that fails removes it again)
        self._created = False
        self._wal = False
        #: (device, inode) of the database file and of the lock file as opened
        self._opened_as: tuple[tuple[int, int], tuple[int, int] | None] | None = None
        self._insert_sql = f"INSERT INTO {self._quoted} ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        self._update_sql = (
            f"UPDATE {self._quoted} SET seq = ?, namespace = ?, field = ?, value = ?, "
            "created_at = ?, context = ? WHERE seq = ?"
        )

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        if self.sharing is not None:
            mode += ", shared=True"
        return f"Sqlite3({self.database!r}, table={self.table!r}{mode})"

    @property
    def _in_memory(self) -> bool:
        return self.database == ":memory:" or self.database.startswith("file::memory:")

    def where(self) -> str:
        return f"table {self.table!r} in {self.database!r}"

    def _replay_target(self) -> str:
        words = [self.database]
        if self.table_prefix != "appendmuch":
            words += ["--table-prefix", self.table_prefix]
        if self.tblextra:
            words += ["--tblextra", self.tblextra]
        return shlex.join(words)

    def _default_recovery_dir(self) -> str:
        if self._in_memory:
            return os.getcwd()
        return os.path.dirname(os.path.abspath(self.database))

    def _errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error,)

    def identity(self) -> dict[str, Any]:
        """The file (absolute path, device and inode) and the table (lower case, as
        SQLite compares names)."""
        if self._identity is None:
            self._identity = self._file_identity()
        return dict(self._identity)

    def _file_identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"backend": "sqlite", "table": self.table.lower()}
        if self._in_memory:
            return {**ident, "path": self.database, "dev": None, "ino": None}
        path = os.path.realpath(self.database)
        try:
            st = os.stat(path)
        except OSError:
            return {**ident, "path": path, "dev": None, "ino": None}
        return {**ident, "path": path, "dev": st.st_dev, "ino": st.st_ino}

    def recovery_stem(self) -> str:
        name = "memory" if self._in_memory else os.path.basename(self.database)
        return f"{name}-{self.table}"

    # ------------------------------------------------------------------ connection

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection (opened, and the table checked, on first use)."""
        if self._conn is None:
            self.ensure()
        assert self._conn is not None
        return self._conn

    def _connect(self) -> None:
        if self.read_only:
            conn = self._open_read_only()
        else:
            self._check_path()
            self._take_lock()
            self._created = not self._in_memory and not os.path.exists(self.database)
            try:
                conn = sqlite3.connect(
                    self.database,
                    timeout=self.timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                self._release_lock()
                raise DatabaseError(f"cannot open {self.database!r}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._ensure_table(conn)
            if self.sharing is not None and not self.read_only:
                # several connections write and read at once: WAL from the start
                self._use_wal(conn)
        except sqlite3.DatabaseError as exc:
            self._conn = conn
            self._abandon_open()
            raise DatabaseError(
                f"{self.database!r} is not a usable SQLite database: {exc}"
            ) from exc
        except BaseException:
            self._conn = conn
            self._abandon_open()
            raise
        self._conn = conn
        if not self._in_memory:
            self._identity = self._file_identity()

    def _open_read_only(self) -> sqlite3.Connection:
        if self._in_memory:
            raise DatabaseError("an in-memory SQLite database cannot be opened read-only")
        if not os.path.isfile(self.database):
            raise DatabaseError(f"no SQLite database at {self.database!r}")
        uri = f"file:{quote(os.path.abspath(self.database))}?mode=ro"
        if os.path.exists(self.database + "-shm") and not writer_lock_held(self.lock_path):
            # A writer's -shm with no writer alive (it crashed): read it without writing
            # to it; SQLite then indexes the -wal in private memory.
            conn = None
            try:
                conn = self._connect_uri(uri + "&readonly_shm=1")
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.Error:
                if conn is not None:
                    conn.close()
            else:
                return conn
        try:
            return self._connect_uri(uri)
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open {self.database!r} read-only: {exc}") from exc

    def _connect_uri(self, uri: str) -> sqlite3.Connection:
        return sqlite3.connect(
            uri,
            uri=True,
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=False,
        )

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        wal, self._wal = self._wal, False
        self._opened_as = None
        try:
            if conn is not None:
                if wal and self.sharing is not None and self.writers() != 1:
                    wal = False  # other writers are attached: the file stays in WAL mode
                if wal:
                    # Leave the closed file in rollback-journal mode: a read-only open
                    # of it then creates no -wal/-shm files.  If a reader is attached,
                    # the switch is refused; the file simply stays in WAL mode.
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("PRAGMA journal_mode=DELETE")
                conn.close()
        finally:
            self._release_lock()

    def _ensure_table(self, conn: sqlite3.Connection) -> None:
        found = conn.execute(
            "SELECT type FROM sqlite_master WHERE name = ? COLLATE NOCASE", (self.table,)
        ).fetchone()
        if found and found[0] != "table":
            raise SchemaError(
                f"{self.table!r} in {self.database!r} is a {found[0]}, not a table; it was "
                "left untouched. Use another table_prefix/tblextra"
            )
        if found:
            self._check_schema(conn)
        elif self.read_only:
            raise DatabaseError(f"there is no table {self.table!r} in {self.database!r}")
        else:
            self._create(conn)
        (largest,) = conn.execute(f"SELECT MAX(seq) FROM {self._quoted}").fetchone()
        if largest is not None:
            if type(largest) is not int:
                raise DecodeError(
                    f"table {self.table!r} in {self.database!r} holds a seq that is not an "
                    f"integer ({largest!r}); it was left untouched"
                )
            self.saw_seq(largest)

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL mode, if not done yet.

        Only once writing: switching to WAL changes the file for good, and an open that
        fails (an undecodable row, say) must leave the file untouched.  A reader in the
        middle of a read transaction refuses the switch (SQLITE_BUSY); then this batch
        is written in rollback-journal mode (as durable) and the switch is tried again,
        without waiting, at the next batch, until it succeeds.  A file that cannot be
        in WAL mode at all (the answer is another mode) is not asked again.
        """
        if self._wal:
            return
        if self._in_memory:
            self._wal = True
            return
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError:
            return  # busy: a reader holds the file; try again at the next batch
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        self._wal = True

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._create_table(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._use_wal(conn)

    def _create_table(self, conn: sqlite3.Connection) -> None:
        """The table and its replace indexes (in the caller's transaction)."""
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
        if not self.read_only and self.replace_index_specs:
            self._create_indexes(conn)

    def _seq_is_unique(self, conn: sqlite3.Connection) -> bool:
        for _, index, unique, *_ in conn.execute(f"PRAGMA index_list({self._quoted})"):
            if unique:
                cols = [row[2] for row in conn.execute(f'PRAGMA index_info("{index}")')]
                if cols == ["seq"]:
                    return True
        return False

    def writers(self) -> int | None:
        """How many shared-mode writers have the table open (None: unknown here)."""
        state, count = lock_state(self.lock_path)
        return count if state == "shared" else 0

    def lock_holders(self) -> tuple[str, int | None]:
        """Who has the table open for writing: ``("none", 0)``, ``("single", 1)`` or
        ``("shared", number of writers)``."""
        if self._in_memory:
            return "none", 0
        return lock_state(self.lock_path)

    # ------------------------------------------------------------------ writing

    def _write_batch(self, inserts: list[Row], updates: list[tuple[int, Row]]) -> None:
        conn = self.connection
        if conn.in_transaction:  # left open by a write cut short (KeyboardInterrupt)
            conn.execute("ROLLBACK")
        self._use_wal(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if inserts:
                conn.executemany(self._insert_sql, inserts)
            self._overwrite(conn, updates)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")

    def _patience(self) -> float:
        return 4 * self.timeout + 30.0

    def _seqs_after(self, seq: int, limit: int) -> list[int]:
        rows = self.connection.execute(
            f"SELECT seq FROM {self._quoted} WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [int(row[0]) for row in rows]

    def _overwrite(self, conn: sqlite3.Connection, updates: list[tuple[int, Row]]) -> None:
        """Overwrite stored rows in place (replace semantics); insert if gone."""
        for old_seq, row in updates:
            if conn.execute(self._update_sql, (*row, old_seq)).rowcount == 0:
                conn.execute(self._insert_sql, row)

    # ------------------------------------------------------------------ reading

    def _rows_between(self, low: float, high: float) -> Iterator[Row]:
        cursor: Iterator[Row] = self.connection.execute(
            f"SELECT {ROW_COLUMNS} FROM {self._quoted} WHERE created_at BETWEEN ? AND ?",
            (low, high),
        )
        return cursor

    def _select(self) -> Iterator[Row]:
        # The cursor itself: rows are produced one at a time in C, none held in bulk.
        cursor: Iterator[Row] = self.connection.execute(
            f"SELECT {ROW_COLUMNS} FROM {self._quoted} ORDER BY seq"
        )
        return cursor

    def stored_names(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(
                self.connection.execute(f"SELECT DISTINCT namespace, field FROM {self._quoted}")
            )

    def _table_size(self) -> int:
        conn = self.connection
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(page_size)

    def _stored_rows(self, seqs: list[int]) -> dict[int, Row]:
        return rows_by_seq(self.connection, self._quoted, seqs)

    # ------------------------------------------------------------------ maintenance

    def _recreate(self) -> None:
        # No table check first: reset is how an incompatible table gets replaced.
        if self._conn is None:
            self._take_lock()
            try:
                self._conn = sqlite3.connect(
                    self.database,
                    timeout=self.timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except BaseException:
                self._release_lock()
                raise
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"DROP TABLE IF EXISTS {self._quoted}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._ensure_table(conn)
        if not self.read_only and (self._flusher is None or not self._flusher.alive()):
            self._start_flusher()

    def _insert_atomically(self, rows: list[Row], updates: list[tuple[int, Row]]) -> None:
        conn = self.connection
        self._use_wal(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(self._insert_sql, rows)
            self._overwrite(conn, updates)
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            existing = sorted(self._existing_seqs([row[0] for row in rows]))
            what = (
                f"seq {existing[0]} already exists in table {self.table!r}"
                if existing
                else f"a row violates a constraint of table {self.table!r} (a replace index?)"
            )
            raise DumpFormatError(f"restore: {what}; nothing was restored") from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
