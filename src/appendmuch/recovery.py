"""Recovery files: rows a driver could not write when it was closed.

A recovery file is a dump (see :mod:`appendmuch.dumpfile`) that starts with a header
map naming the database it belongs to, ``{"appendmuch_recovery": 2, "database":
{...}}``; its row maps may carry one more key, ``replaces``: the seq of the stored
row that the row overwrites (replace semantics).  After a replay, a marker map
``{"appendmuch_replayed": {...database...}, "at": time}`` is appended.

:func:`replay` writes such a file into a driver; the command line offers it as
``appendmuch replay FILE DB``.  The rules (docs/durability.md):

- A file is replayed only into the database it names (SQLite: the same file, by
  path, device and inode, and table; PostgreSQL: the same server, database, schema and
  table).  ``any_database=True`` overrides that, for a database moved, copied or
  restored from a backup, and for files without a header.
- Replayed rows get new seqs, after every row stored: they keep their namespace,
  field, value, original ``created_at`` and context.  So a replay can never collide
  with seqs handed out after the file was written.
- A row counts as already replayed when the table holds a row with the same
  namespace, field, value, ``created_at`` and context (each stored row matches one
  saved row): replaying twice writes nothing the second time, even when the first
  replay's marker was never written.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from .dumpfile import Row, check_row, row_map, unpack_maps
from .errors import ClosedError, DumpFormatError, ReadOnlyError, RecoveryMismatchError

if TYPE_CHECKING:
    from .drivers.base import DBDriver

__all__ = [
    "RecoveryFile",
    "list_recovery_files",
    "read_recovery_file",
    "recovery_file_name",
    "replay",
    "same_database",
    "unreplayed",
    "write_recovery_file",
]

#: (row, seq of the row it overwrites or None)
Entry = tuple[Row, int | None]
#: what a driver says about the database it writes to (see DBDriver.identity)
Identity = Mapping[str, Any]

_HEADER = "appendmuch_recovery"
_MARKER = "appendmuch_replayed"
_VERSION = 2
_SUFFIX = ".msgpack"
_INFIX = ".recovery-"


class RecoveryFile:
    """A recovery file read whole: its database, its entries, where it was replayed."""

    def __init__(
        self,
        path: str,
        database: Identity | None,
        entries: list[Entry],
        replayed_into: list[Identity],
    ) -> None:
        self.path = path
        #: the database the rows belong to (None: a file written without a header)
        self.database = database
        self.entries = entries
        #: databases a replay of this file completed into
        self.replayed_into = replayed_into


def recovery_file_name(directory: str, stem: str) -> str:
    """A new, unused file name for a recovery file in ``directory``.

    ``stem`` says whose rows they are (the driver's :meth:`recovery_stem`)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    base = os.path.join(directory, f"{stem}{_INFIX}{stamp}-{os.getpid()}")
    path, n = f"{base}{_SUFFIX}", 1
    while os.path.exists(path):
        path, n = f"{base}-{n}{_SUFFIX}", n + 1
    return path


def list_recovery_files(directory: str, database: Identity) -> list[str]:
    """Recovery files in ``directory`` that belong to ``database``, oldest first.

    Files of other databases, files without a header and unreadable files are left
    out."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        if _INFIX not in name or not name.endswith(_SUFFIX):
            continue
        path = os.path.join(directory, name)
        try:
            header = _read_header(path)
        except (OSError, DumpFormatError):
            continue
        if header is not None and same_database(header, database):
            found.append(path)
    return found


def same_database(saved: Identity, current: Identity) -> bool:
    """Whether a recovery file's database is ``current``.

    SQLite: the same file (absolute path, device and inode: a file at another path, or
    another file at the same path, is another database) and table.  PostgreSQL: the
    same database, schema and table on the same server (its system identifier when
    both sides know it, else host and port)."""
    if saved.get("backend") != current.get("backend"):
        return False
    backend = current.get("backend")
    if backend == "sqlite":
        keys: tuple[str, ...] = ("path", "dev", "ino", "table")
    elif backend == "postgresql":
        keys = ("database", "schema", "table")
        if saved.get("system") is not None and current.get("system") is not None:
            keys += ("system",)
        else:
            keys += ("server",)
    else:
        keys = ("id",)
    return all(saved.get(key) == current.get(key) and current.get(key) is not None for key in keys)


def describe(database: Identity | None) -> str:
    """A database identity for messages."""
    if database is None:
        return "an unknown database (the file has no header)"
    backend = database.get("backend")
    if backend == "sqlite":
        return f"table {database.get('table')!r} in {database.get('path')!r}"
    if backend == "postgresql":
        return (
            f"PostgreSQL table {database.get('schema')}.{database.get('table')} in "
            f"database {database.get('database')!r} on {database.get('server')}"
        )
    return f"a {backend} log"


def write_recovery_file(
    path: str,
    inserts: Iterable[Row],
    updates: Iterable[tuple[int, Row]],
    database: Identity | None = None,
) -> int:
    """Write rows (and overwrites) to ``path`` and fsync it; return how many.

    ``database`` (the driver's identity) goes into the header.  Nothing is left at
    ``path`` (nor a partial file beside it) when writing fails."""
    packer = msgpack.Packer(use_bin_type=True)
    count = 0
    partial = f"{path}.partial"
    try:
        with open(partial, "wb") as fh:
            if database is not None:
                fh.write(packer.pack({_HEADER: _VERSION, "database": dict(database)}))
            for row in inserts:
                fh.write(packer.pack(row_map(row)))
                count += 1
            for old_seq, row in updates:
                fh.write(packer.pack({**row_map(row), "replaces": old_seq}))
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return count


def _read_header(path: str) -> Identity | None:
    with open(path, "rb") as fh:
        first = next(iter(msgpack.Unpacker(fh, raw=False, strict_map_key=True)), None)
    if isinstance(first, dict) and _HEADER in first:
        database = first.get("database")
        return database if isinstance(database, dict) else None
    return None


def read_recovery(path: str | os.PathLike[str]) -> RecoveryFile:
    """A recovery file's header, entries (validated like a dump) and replay markers."""
    name = os.fspath(path)
    entries: list[Entry] = []
    seen: set[int] = set()
    database: Identity | None = None
    replayed: list[Identity] = []
    try:
        with open(name, "rb") as fh:
            for index, obj in enumerate(unpack_maps(fh)):
                if isinstance(obj, dict) and _HEADER in obj:
                    if index or not isinstance(obj.get("database"), dict):
                        raise DumpFormatError(f"object {index}: misplaced or malformed header")
                    database = obj["database"]
                    continue
                if isinstance(obj, dict) and _MARKER in obj:
                    if isinstance(obj[_MARKER], dict):
                        replayed.append(obj[_MARKER])
                    continue
                replaces = obj.pop("replaces", None) if isinstance(obj, dict) else None
                if replaces is not None and (type(replaces) is not int or replaces < 1):
                    raise DumpFormatError(
                        f"entry {len(entries)}: 'replaces' must be a positive int"
                    )
                entries.append((check_row(obj, len(entries), seen, None), replaces))
    except DumpFormatError as exc:
        raise DumpFormatError(f"recovery file {name}: {exc}") from exc
    return RecoveryFile(name, database, entries, replayed)


def read_recovery_file(path: str | os.PathLike[str]) -> list[Entry]:
    """The entries of a recovery file, validated like a dump."""
    return read_recovery(path).entries


def _content(row: Row) -> tuple[Any, ...]:
    """What identifies a saved row once it is stored under a new seq."""
    return row[1], row[2], row[3], row[4], row[5]


def unreplayed(entries: list[Entry], stored: Iterator[Row]) -> list[Entry]:
    """The entries whose rows ``stored`` does not hold yet (matched by content, each
    stored row accounting for one entry).  ``stored`` needs to cover only the rows
    whose ``created_at`` lies within the entries' times."""
    have = collections.Counter(_content(row) for row in stored)
    todo = []
    for entry in entries:
        key = _content(entry[0])
        if have[key]:
            have[key] -= 1
        else:
            todo.append(entry)
    return todo


def time_range(entries: list[Entry]) -> tuple[float, float] | None:
    """The smallest and largest ``created_at`` of the entries (None if none)."""
    times = [row[4] for row, _ in entries]
    return (min(times), max(times)) if times else None


def _mark_replayed(path: str, database: Identity) -> None:
    """Append the replay marker (best effort: the content check covers its absence)."""
    marker = msgpack.packb({_MARKER: dict(database), "at": time.time()}, use_bin_type=True)
    with contextlib.suppress(OSError), open(path, "ab") as fh:
        fh.write(marker)
        fh.flush()
        os.fsync(fh.fileno())


def replay(path: str | os.PathLike[str], driver: DBDriver, *, any_database: bool = False) -> int:
    """Write the rows of a recovery file into ``driver``; return how many were written.

    All or nothing, in one transaction on SQL drivers.  The rows get new seqs after
    every stored row and keep their original times and contexts.  Rows the table
    already holds (same content) are skipped, so replaying twice writes nothing the
    second time.  The file must belong to the driver's database
    (:class:`~appendmuch.errors.RecoveryMismatchError` otherwise) unless
    ``any_database``.  Once replayed, the file no longer keeps the table from being
    opened for writing (it may then be deleted).
    """
    if driver.retired:
        raise ClosedError(f"cannot replay a recovery file: {driver!r} was closed with its Store")
    if driver.read_only:
        raise ReadOnlyError(f"cannot replay a recovery file: {driver!r} is open read-only")
    recovery = read_recovery(path)
    driver.replaying = True
    try:
        driver.ensure()
        current = driver.identity()
        if not any_database:
            if recovery.database is None:
                raise RecoveryMismatchError(
                    f"recovery file {recovery.path} does not say which database its rows "
                    f"belong to; to write them into {describe(current)} anyway, replay with "
                    "any_database=True (command line: --any-database)"
                )
            if not same_database(recovery.database, current):
                raise RecoveryMismatchError(
                    f"recovery file {recovery.path} holds rows of "
                    f"{describe(recovery.database)}, not of {describe(current)}; nothing was "
                    "replayed (replay it into its own database, or pass any_database=True / "
                    "--any-database if this is a copy of it)"
                )
        if any(same_database(done, current) for done in recovery.replayed_into):
            return 0
        written = driver.apply_recovered(recovery.entries)
    finally:
        driver.replaying = False
    _mark_replayed(recovery.path, current)
    return written
