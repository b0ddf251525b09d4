"""The SQLite file and its writer lock (the file handling of :class:`~appendmuch.Sqlite3`).

A writer holds ``{database}-{table}.lock`` (an flock: exclusive for a single writer,
shared by shared-mode writers, so the two modes exclude each other) while the table
is open for writing.  The file exists only while locked, and the kernel releases the
lock when its holder dies.  Before each batch the writer checks that the database
file and the lock file are still the ones it opened.  :func:`writer_lock_held` and
:func:`lock_state` tell, without disturbing a writer, who holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from typing import IO, TYPE_CHECKING

from ..errors import DatabaseError, LockedError, WriteError

if TYPE_CHECKING:
    from .sharing import Engine

__all__ = ["SqliteFiles", "file_id", "lock_state", "open_file_id", "writer_lock_held"]


def writer_lock_held(path: str) -> bool:
    """Whether a process holds the writer lock file ``path`` (a file left behind by a
    killed writer is not held).

    On Linux this reads ``/proc/locks``, taking no lock itself, so a writer opening at
    the same moment is never turned away; elsewhere it probes with a shared lock,
    released at once."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = _flock_listed(st)
    if held is not None:
        return held
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock
    return False


def _flock_listed(st: os.stat_result) -> bool | None:
    """Whether ``/proc/locks`` lists an flock on this file (None: cannot tell)."""
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" (blocked waiters: "->")
        if len(fields) >= 6 and fields[1] == "FLOCK" and device in fields[4:6]:
            return True
    return False


def file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def open_file_id(file: IO[bytes]) -> tuple[int, int]:
    """(device, inode) of an open file."""
    st = os.fstat(file.fileno())
    return (st.st_dev, st.st_ino)


def lock_state(path: str) -> tuple[str, int | None]:
    """Who holds the lock file ``path``: ``("none", 0)``, ``("single", 1)`` or
    ``("shared", n)`` (n: the shared writers attached; None where the system does not
    say, which is anywhere but Linux)."""
    try:
        probe = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return "none", 0
    with probe:
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "single", 1
        try:
            count = _shared_holders(os.fstat(probe.fileno()))
        finally:
            fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
    if count is None:
        return "shared", None
    count -= 1  # the probe itself
    return ("shared", count) if count > 0 else ("none", 0)


def _shared_holders(stat: os.stat_result) -> int | None:
    """Shared flocks held on the file, as /proc/locks lists them (Linux)."""
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    count = 0
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  READ 1234 08:01:5678 0 EOF"; waiters are marked "->"
        if len(parts) >= 6 and "->" not in parts and parts[1:4] == ["FLOCK", "ADVISORY", "READ"]:
            count += parts[5] == device
    return count


class SqliteFiles:
    """The file and lock methods of :class:`~appendmuch.Sqlite3` (a mixin: ``self``
    is the driver)."""

    def _check_path(self) -> None:
        """Refuse, before creating anything, a path SQLite cannot open as a database."""
        if self._in_memory:
            return
        if os.path.isdir(self.database):
            raise DatabaseError(f"{self.database!r} is a directory, not a SQLite database")
        directory = os.path.dirname(os.path.abspath(self.database))
        if not os.path.isdir(directory):
            raise DatabaseError(
                f"cannot open {self.database!r}: its directory {directory!r} does not exist"
            )

    def _abandon_open(self) -> None:
        """Disconnect after a failed open; a database file this open created is
        removed again if it holds nothing but this driver's empty table.

        Only in single-writer mode: a shared writer cannot tell whether another one
        has opened the file since (removing it would lose that one's writes), and an
        empty table left behind does no harm."""
        conn, created = self._conn, self._created and self.sharing is None
        self._created = False
        remove = False
        if created and conn is not None:
            with contextlib.suppress(sqlite3.Error):
                names = {
                    name.lower()
                    for (name,) in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                    )
                }
                remove = names <= {self.table.lower()} and (
                    not names
                    or conn.execute(f"SELECT 1 FROM {self._quoted} LIMIT 1").fetchone() is None
                )
        self._wal = False  # leave the journal mode as it is
        try:
            if conn is not None:
                self._conn = None
                conn.close()
            if remove:
                for suffix in ("", "-journal", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.database + suffix)
        finally:
            self._release_lock()

    def _take_lock(self) -> None:
        """Hold ``{database}-{table}.lock`` (flock) while the table is open for writing.

        The file exists only while locked: it is removed before it is unlocked, and a
        lock taken on a file that was removed meanwhile is dropped and taken again.
        """
        if self._in_memory or self._lockfile is not None:
            return
        path = self.lock_path
        shared = self.sharing is not None
        while True:
            try:
                lockfile = open(path, "a+b")  # noqa: SIM115 - held open while connected
            except OSError as exc:
                raise DatabaseError(
                    f"cannot open {self.database!r} for writing: cannot create its lock "
                    f"file {path!r}: {exc.strerror}"
                ) from exc
            try:
                # shared writers hold it shared, a single writer exclusively: the two
                # modes exclude each other
                mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
                fcntl.flock(lockfile.fileno(), mode | fcntl.LOCK_NB)
            except BlockingIOError:
                lockfile.close()
                raise LockedError(self._locked_message(path)) from None
            try:
                same = os.stat(path).st_ino == os.fstat(lockfile.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lockfile = lockfile
                return
            lockfile.close()  # we locked a file its last holder had just removed

    def _locked_message(self, path: str) -> str:
        state, count = lock_state(path)
        if self.sharing is not None:
            return (
                f"{self.where()} is open for writing by a single-writer Store (lock file "
                f"{path}); shared mode cannot join it: close that Store, or open it with "
                "shared=True too"
            )
        if state == "shared":
            writers = "" if count is None else f" ({count} attached)"
            return (
                f"{self.where()} is open by shared-mode writers{writers} (lock file "
                f"{path}); open this one with shared=True too, or read_only=True"
            )
        return (
            f"{self.where()} is already open for writing (lock file {path}); "
            "close the other Store first, or open this one with read_only=True"
        )

    @property
    def lock_path(self) -> str:
        """The writer's lock file: one per file and table however they are spelled
        (symlinks resolved, table names compared ASCII case-insensitively, as SQLite
        does)."""
        return f"{os.path.realpath(self.database)}-{self.table.lower()}.lock"

    def _release_lock(self) -> None:
        lockfile, self._lockfile = self._lockfile, None
        if lockfile is not None:
            # Only a single writer removes it (shared writers may still hold it), and
            # only the file this driver locked: if it was removed, another writer may
            # have created (and hold) a new one under the same name.
            if self.sharing is None and file_id(lockfile.name) == open_file_id(lockfile):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lockfile.name)
            lockfile.close()  # closing releases the flock

    def _opened(self) -> None:
        if self._in_memory:
            return
        database = file_id(self.database)
        lockfile = self._lockfile
        if database is not None:
            self._opened_as = (database, None if lockfile is None else open_file_id(lockfile))

    def _check_still_ours(self) -> None:
        """The database file and the lock file must be the ones opened: a file removed
        or replaced while open would take the rows with it, a lock file removed lets a
        second writer in.  Two ``stat`` calls per batch."""
        expected = self._opened_as
        if expected is None:
            return
        database, lock = expected
        if file_id(self.database) != database:
            self._refuse(
                WriteError,
                f"the database file {self.database!r} was removed or replaced while "
                f"{self.where()} was open for writing; nothing more is written to it. "
                "The queued rows stay in memory, and close() saves them to a recovery file",
            )
        lockfile = self._lockfile
        if lock is not None and lockfile is not None and file_id(lockfile.name) != lock:
            self._refuse(
                LockedError,
                f"the lock file {lockfile.name} of {self.where()} was removed or replaced "
                "while open, so another writer may have opened the table; this one refuses "
                "to write on. Close it (the queued rows go to a recovery file) and reopen",
            )

    def _abandon(self) -> list[object]:
        conn, self._conn = self._conn, None
        lockfile, self._lockfile = self._lockfile, None
        if lockfile is not None:
            # Closing this descriptor leaves the parent's flock (held through its own
            # descriptor) in place; the file itself is not touched.
            lockfile.close()
        return [conn]

    if TYPE_CHECKING:  # the driver's own
        database: str
        table: str
        sharing: Engine | None
        _quoted: str
        _conn: sqlite3.Connection | None
        _lockfile: IO[bytes] | None
        _created: bool
        _wal: bool
        _opened_as: tuple[tuple[int, int], tuple[int, int] | None] | None

        @property
        def _in_memory(self) -> bool: ...

        def where(self) -> str: ...

        def _refuse(self, kind: type[Exception], message: str) -> None: ...
