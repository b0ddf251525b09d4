"""Opening a log for inspection, and what the inspection commands compute from it.

A log is named by a :class:`Target`: a SQLite path or a ``postgresql://`` URL, plus
the table prefix and extra part.  :func:`open_log` opens it read-only by default: a
missing SQLite file is an error (never a new empty database), nothing is locked or
written, and a writer may keep working meanwhile.

The summaries stream the rows (``driver.load_rows()``, in seq order) and keep only
what their answer needs, so they work on logs of any length; :func:`within_value`
loads the log into a :class:`~appendmuch.Store` (temporal queries need the index).
Values are decoded leniently (see :mod:`appendmuch.rendering`): a custom type the
default codec does not know never stops an inspection.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .codec import Codec
from .drivers.base import DBDriver, Row
from .drivers.layout import TableNames
from .drivers.postgresql import PostgreSQL
from .drivers.sqlite import Sqlite3
from .drivers.sqlite_files import writer_lock_held
from .errors import AppendmuchError, DatabaseError, InvalidNameError, one_line
from .fieldlog import FieldLog
from .names import dbns2tuple, is_valid_dbns, is_valid_field
from .rendering import BUILTIN_TYPE_IDS, LenientCodec, Opaque, decode_lenient
from .store import Store
from .within import within

__all__ = [
    "Entry",
    "FieldState",
    "LogInfo",
    "NamespaceEntry",
    "NamespaceState",
    "NotInLogError",
    "Problem",
    "Target",
    "VerifyReport",
    "history",
    "in_prefix",
    "log_info",
    "namespace_key",
    "namespace_state",
    "namespace_tree",
    "open_log",
    "parse_namespace",
    "stream_rows",
    "verify_log",
    "within_value",
]

#: called with the seq reached, now and then, while rows stream
ProgressFn = Callable[[int], None]
_PG_SCHEMES = ("postgresql://", "postgres://")
_MISSING: Any = object()


class NotInLogError(AppendmuchError, LookupError):
    """A namespace or field named by the user is not in the log."""


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """Where a log is: ``db`` (SQLite path or ``postgresql://`` URL) and its table."""

    db: str
    table_prefix: str = "appendmuch"
    tblextra: str = ""

    def __post_init__(self) -> None:
        TableNames(self.table_prefix, self.tblextra, None)  # raises InvalidNameError

    @property
    def is_postgres(self) -> bool:
        """True for a ``postgresql://`` (or ``postgres://``) URL."""
        return self.db.startswith(_PG_SCHEMES)

    @property
    def table(self) -> str:
        """The table name, ``{table_prefix}{tblextra}_values``."""
        return f"{self.table_prefix}{self.tblextra}_values"

    @property
    def display(self) -> str:
        """The database for messages: the path, or the URL without its password."""
        if not self.is_postgres:
            return self.db
        parts = urlsplit(self.db)
        if parts.password is None:
            return self.db
        user = quote(parts.username or "", safe="")
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def open_log(
    target: Target, *, read_only: bool = True, timeout: float = 10.0, replaying: bool = False
) -> DBDriver:
    """A driver on ``target``'s table, connected and checked (:meth:`~DBDriver.ensure`).

    Read-only (the default): a missing SQLite file or table raises
    :class:`~appendmuch.errors.DatabaseError` and nothing is created.  Writable: the
    file and table are created when missing (for restore and replay).  Errors are
    :class:`~appendmuch.errors.DatabaseError` with a one-line message.  ``replaying``:
    opened to replay a recovery file, which waiting recovery files must not prevent.
    """
    driver: DBDriver
    if target.is_postgres:
        _probe_postgres(target, timeout)
        driver = PostgreSQL(
            target.db,
            table_prefix=target.table_prefix,
            tblextra=target.tblextra,
            min_size=0,
            max_size=3,
            read_only=read_only,
            timeout=timeout,
        )
    else:
        path = target.db
        if read_only and not os.path.exists(path):
            raise DatabaseError(
                f"no such file: {path!r} (inspection commands never create a database)"
            )
        if os.path.isdir(path):
            raise DatabaseError(f"{path!r} is a directory, not a SQLite database")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise DatabaseError(f"no such directory: {directory!r} (for {path!r})")
        driver = Sqlite3(
            path,
            table_prefix=target.table_prefix,
            tblextra=target.tblextra,
            read_only=read_only,
            timeout=timeout,
        )
    driver.replaying = replaying
    try:
        driver.ensure()
    except DatabaseError as exc:
        driver.close()
        if "no table" in str(exc):
            raise DatabaseError(f"{exc}; {_table_hint(target)}") from exc
        raise
    except sqlite3.Error as exc:
        driver.close()
        raise DatabaseError(f"cannot open {target.db!r} as a SQLite database: {exc}") from exc
    except BaseException:
        driver.close()
        raise
    return driver


def _probe_postgres(target: Target, timeout: float) -> None:
    """Connect once, so an unreachable server fails at once with the server's reason
    (the pool would retry until its timeout)."""
    try:
        import psycopg
    except ImportError as exc:
        raise DatabaseError(
            "PostgreSQL needs psycopg 3, which comes with the 'pg' extra: "
            "pip install 'appendmuch[pg]'"
        ) from exc
    try:
        conn = psycopg.connect(target.db, connect_timeout=max(1, math.ceil(timeout)))
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to {target.display}: {one_line(exc)}") from exc
    conn.close()


def _table_hint(target: Target) -> str:
    """Which appendmuch-looking tables the database holds, for a missing-table error."""
    try:
        tables = _value_tables(target)
    except Exception:  # a hint only: never hide the real error
        return "choose the table with --table-prefix and --tblextra"
    if not tables:
        return "the database holds no table named *_values"
    listed = ", ".join(tables[:10]) + (", ..." if len(tables) > 10 else "")
    return f"tables there: {listed} (choose one with --table-prefix and --tblextra)"


def _value_tables(target: Target) -> list[str]:
    if target.is_postgres:
        import psycopg

        with psycopg.connect(target.db, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename LIKE %s ORDER BY tablename",
                ("%\\_values",),
            ).fetchall()
        return [str(name) for (name,) in rows]
    # immutable: reads the file as it is, creating no -wal/-shm files
    uri = f"file:{quote(os.path.abspath(target.db))}?mode=ro&immutable=1"
    lite = sqlite3.connect(uri, uri=True)
    try:
        rows = lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%\\_values' "
            "ESCAPE '\\' ORDER BY name"
        ).fetchall()
    finally:
        lite.close()
    return [str(name) for (name,) in rows]


# --------------------------------------------------------------------------- namespaces


def parse_namespace(text: str) -> str:
    """``"game/player1"`` as stored; raises InvalidNameError when it cannot be one."""
    dbns = text.strip("/")
    if not dbns or not is_valid_dbns(dbns):
        raise InvalidNameError(
            f"{text!r} is not a namespace: tokens of A-Z a-z 0-9 - . _ joined by /"
        )
    return dbns


def in_prefix(dbns: str, prefix: str | None) -> bool:
    """True when ``dbns`` is ``prefix`` or below it (token-wise: ``game`` holds
    ``game/p1``, not ``games``).  Every namespace is in the prefix None."""
    return prefix is None or dbns == prefix or dbns.startswith(prefix + "/")


_DIGITS = re.compile(r"(\d+)")


def namespace_key(dbns: str) -> tuple[tuple[Any, ...], ...]:
    """Sort key putting ``p2`` before ``p10`` (numbers inside tokens compare as numbers)."""
    return tuple(
        (
            tuple(int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(token))),
            token,
        )
        for token in dbns2tuple(dbns)
    )


def stream_rows(driver: DBDriver, progress: ProgressFn | None = None) -> Iterator[Row]:
    """The driver's rows in seq order, telling ``progress`` the seq reached."""
    if progress is None:
        yield from driver.load_rows()
        return
    for count, row in enumerate(driver.load_rows(), start=1):
        yield row
        if not count & 255 and type(row[0]) is int:
            progress(row[0])
    progress(driver.last_seq)


# --------------------------------------------------------------------------- info


@dataclass
class LogInfo:
    """What ``appendmuch info`` reports about a log."""

    database: str
    backend: str
    table: str
    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    #: earliest and latest ``created_at`` (seconds since the epoch)
    first_time: float | None = None
    last_time: float | None = None
    namespaces: int = 0
    #: distinct (namespace, field) pairs ever written
    fields: int = 0
    #: fields whose latest entry is a tombstone
    deleted_fields: int = 0
    tombstones: int = 0
    #: bytes used, as the driver reports it (SQLite: the database file's pages)
    size: int | None = None
    #: type id -> how many values have it, for ids the default codec does not know
    custom_types: dict[int, int] = field(default_factory=dict)
    #: SQLite: whether a writer holds the table's lock (a lock file left behind by a
    #: killed writer does not count); None for PostgreSQL
    writer_open: bool | None = None
    #: who has the table open for writing: "none", "single" or "shared" (None: unknown)
    writer_mode: str | None = None
    #: how many writers have it open (shared mode: None where the system cannot say)
    writers: int | None = None

    @property
    def current_fields(self) -> int:
        """Fields whose latest entry is a value."""
        return self.fields - self.deleted_fields


def log_info(driver: DBDriver, target: Target, progress: ProgressFn | None = None) -> LogInfo:
    """Counts, seq and time ranges, custom type ids and size of the log.  One pass."""
    info = LogInfo(
        database=target.display,
        backend="postgresql" if target.is_postgres else "sqlite",
        table=target.table,
    )
    deleted: dict[tuple[str, str], bool] = {}
    namespaces: set[str] = set()
    custom: dict[int, int] = {}
    first_time = math.inf
    last_time = -math.inf
    rows = tombstones = 0
    first_seq: int | None = None
    seq: Any = None
    for seq, dbns, name, value, created_at, _context in stream_rows(driver, progress):
        if first_seq is None:
            first_seq = seq
        rows += 1
        namespaces.add(dbns)
        deleted[(dbns, name)] = value is None
        if value is None:
            tombstones += 1
        elif value and value[0] not in BUILTIN_TYPE_IDS:
            custom[value[0]] = custom.get(value[0], 0) + 1
        if isinstance(created_at, int | float):
            first_time = min(first_time, created_at)
            last_time = max(last_time, created_at)
    info.rows = rows
    info.first_seq, info.last_seq = first_seq, seq
    if rows and math.isfinite(first_time):
        info.first_time, info.last_time = first_time, last_time
    info.namespaces = len(namespaces)
    info.fields = len(deleted)
    info.deleted_fields = sum(deleted.values())
    info.tombstones = tombstones
    info.custom_types = dict(sorted(custom.items()))
    info.size = driver.size()
    holders = getattr(driver, "lock_holders", None)
    if holders is not None:
        info.writer_mode, info.writers = holders()
    if isinstance(driver, Sqlite3):
        info.writer_open = writer_lock_held(driver.lock_path)
    return info


# --------------------------------------------------------------------------- ls


@dataclass
class NamespaceEntry:
    """One namespace of the tree: its own fields (not those below it)."""

    namespace: str
    #: fields with a current value
    fields: int = 0
    #: fields whose latest entry is a tombstone
    deleted: int = 0
    #: rows written in this namespace
    entries: int = 0

    @property
    def depth(self) -> int:
        """0 for a top-level namespace."""
        return self.namespace.count("/")

    @property
    def name(self) -> str:
        """The last token."""
        return self.namespace.rsplit("/", 1)[-1]


def namespace_tree(driver: DBDriver, prefix: str | None = None) -> list[NamespaceEntry]:
    """Every namespace at or below ``prefix`` (parents included), sorted as a tree.

    Raises :class:`NotInLogError` when ``prefix`` is given and nothing is at or
    below it.
    """
    latest: dict[str, dict[str, bool]] = {}
    entries: dict[str, int] = {}
    for _seq, dbns, name, value, _created_at, _context in driver.load_rows():
        if in_prefix(dbns, prefix):
            latest.setdefault(dbns, {})[name] = value is None
            entries[dbns] = entries.get(dbns, 0) + 1
    if prefix is not None and not latest:
        raise NotInLogError(f"there is no namespace {prefix!r} in the log")
    tree: dict[str, NamespaceEntry] = {}
    for dbns, fields in latest.items():
        tokens = dbns2tuple(dbns)
        for depth in range(1, len(tokens) + 1):
            parent = "/".join(tokens[:depth])
            if in_prefix(parent, prefix) and parent not in tree:
                tree[parent] = NamespaceEntry(parent)
        node = tree[dbns]
        node.deleted = sum(fields.values())
        node.fields = len(fields) - node.deleted
        node.entries = entries[dbns]
    return [tree[key] for key in sorted(tree, key=namespace_key)]


# --------------------------------------------------------------------------- show / history


@dataclass
class FieldState:
    """The latest entry of a field."""

    field: str
    seq: int
    time: float | None
    value: Any
    type_id: int | None
    context: str


@dataclass
class NamespaceState:
    """What ``appendmuch show`` prints: current fields in order of first write."""

    namespace: str
    fields: list[FieldState]
    #: fields whose latest entry is a tombstone
    deleted: list[str]
    #: next tokens of the namespaces directly below
    children: list[str]


def _type_id(value: object) -> int | None:
    if isinstance(value, bytes | bytearray | memoryview) and len(value):
        return int(value[0])
    return None


def namespace_state(driver: DBDriver, namespace: str, codec: Codec | None = None) -> NamespaceState:
    """The current fields of ``namespace``; :class:`NotInLogError` if the log has
    nothing at or below it."""
    codec = codec or Codec()
    latest: dict[str, Row] = {}
    children: set[str] = set()
    depth = namespace.count("/") + 1
    for row in driver.load_rows():
        dbns = row[1]
        if dbns == namespace:
            latest[row[2]] = row  # a dict keeps the order of first write
        elif in_prefix(dbns, namespace):
            children.add(dbns2tuple(dbns)[depth])
    if not latest and not children:
        raise NotInLogError(f"there is no namespace {namespace!r} in the log")
    fields: list[FieldState] = []
    deleted: list[str] = []
    for name, (seq, _dbns, _field, value, created_at, context) in latest.items():
        if value is None:
            deleted.append(name)
        else:
            fields.append(
                FieldState(
                    name, seq, created_at, decode_lenient(codec, value), _type_id(value), context
                )
            )
    return NamespaceState(namespace, fields, deleted, sorted(children, key=namespace_key))


@dataclass
class Entry:
    """One entry of a field's history."""

    seq: int
    time: float | None
    namespace: str
    field: str
    value: Any
    unavailable: bool
    context: str
    type_id: int | None


def history(
    driver: DBDriver, namespace: str, field_name: str | None = None, codec: Codec | None = None
) -> list[Entry]:
    """Every entry of ``namespace`` (of one field if given) in seq order, tombstones
    included.  :class:`NotInLogError` if the namespace or field is not in the log."""
    codec = codec or Codec()
    out: list[Entry] = []
    below = False
    fields_seen: set[str] = set()
    for seq, dbns, name, value, created_at, context in driver.load_rows():
        if dbns != namespace:
            below = below or in_prefix(dbns, namespace)
            continue
        fields_seen.add(name)
        if field_name is not None and name != field_name:
            continue
        data = None if value is None else decode_lenient(codec, value)
        out.append(
            Entry(seq, created_at, dbns, name, data, value is None, context, _type_id(value))
        )
    if not fields_seen and not below:
        raise NotInLogError(f"there is no namespace {namespace!r} in the log")
    if field_name is not None and field_name not in fields_seen:
        raise NotInLogError(f"namespace {namespace!r} has no field {field_name!r}")
    return out


# --------------------------------------------------------------------------- within


def within_value(
    driver: DBDriver,
    namespace: str,
    field_name: str,
    where: dict[str, Any],
    *,
    strict: bool = False,
) -> tuple[bool, Any]:
    """``within(storage, **where).field`` (``within.strict`` with ``strict``) on the
    log: ``(True, value)``, or ``(False, None)`` when it has no value there.

    Loads the log into a Store with a :class:`~appendmuch.rendering.LenientCodec`;
    closes the driver.  :class:`NotInLogError` if the namespace, the field or a
    context field is not in the log.
    """
    store = Store(driver, codec=LenientCodec())
    try:
        tokens = dbns2tuple(namespace)
        node = store.get_namespace(tokens)
        if node is None:
            raise NotInLogError(f"there is no namespace {namespace!r} in the log")
        for name in (field_name, *where):
            if type(node.get(name)) is not FieldLog:
                raise NotInLogError(f"namespace {namespace!r} has no field {name!r}")
        query = within.strict if strict else within
        value = query(store.storage(*tokens), **where).get(field_name, _MISSING)
    finally:
        store.close()
    if value is _MISSING:
        return False, None
    return True, value


# --------------------------------------------------------------------------- verify


@dataclass
class Problem:
    """Something wrong with a stored row (or, with ``seq`` None, with the log)."""

    seq: Any
    namespace: Any
    field: Any
    message: str


@dataclass
class VerifyReport:
    """What ``appendmuch verify`` found."""

    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    #: the first problems found (at most ``max_problems``)
    problems: list[Problem] = field(default_factory=list)
    #: problems found beyond those listed
    more_problems: int = 0
    #: type id -> values with that id, for ids the default codec does not know
    unknown_types: dict[int, int] = field(default_factory=dict)
    #: unknown type ids counted as problems
    strict: bool = False

    @property
    def problem_count(self) -> int:
        """All problems found, listed or not."""
        return len(self.problems) + self.more_problems

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return self.problem_count == 0


def verify_log(
    driver: DBDriver,
    *,
    strict: bool = False,
    progress: ProgressFn | None = None,
    max_problems: int = 1000,
) -> VerifyReport:
    """Check every row: it decodes, its seq is a unique positive int, its namespace and
    field are valid names, its time and context have the right types, and no name is
    both a field and a namespace token.

    Values whose type id the default codec does not know (custom types) are counted in
    ``unknown_types`` and are problems only when ``strict``.
    """
    report = VerifyReport(strict=strict)
    codec = Codec()

    def problem(seq: Any, dbns: Any, name: Any, message: str) -> None:
        if len(report.problems) < max_problems:
            report.problems.append(Problem(seq, dbns, name, message))
        else:
            report.more_problems += 1

    previous: int | None = None
    fields: dict[str, set[str]] = {}
    for seq, dbns, name, value, created_at, context in stream_rows(driver, progress):
        report.rows += 1
        if type(seq) is not int or seq < 1:
            problem(seq, dbns, name, f"seq {seq!r} is not a positive integer")
        else:
            if report.first_seq is None:
                report.first_seq = seq
            report.last_seq = seq
            if previous is not None and seq == previous:
                problem(seq, dbns, name, f"seq {seq} appears more than once")
            elif previous is not None and seq < previous:
                problem(seq, dbns, name, f"seq {seq} comes after seq {previous}")
            previous = seq
        valid_ns = isinstance(dbns, str) and is_valid_dbns(dbns)
        if not valid_ns:
            problem(seq, dbns, name, f"invalid namespace {dbns!r}")
        if not is_valid_field(name):
            problem(seq, dbns, name, f"invalid field name {name!r}")
        elif valid_ns:
            fields.setdefault(dbns, set()).add(name)
        if value is not None:
            decoded = decode_lenient(codec, value)
            if isinstance(decoded, Opaque):
                if decoded.problem is not None:
                    problem(seq, dbns, name, f"value does not decode: {decoded.problem}")
                else:
                    type_id = int(decoded.type_id or 0)
                    report.unknown_types[type_id] = report.unknown_types.get(type_id, 0) + 1
                    if strict:
                        problem(
                            seq, dbns, name, f"type id {type_id} is unknown to the default codec"
                        )
        if type(created_at) not in (int, float) or not math.isfinite(created_at):
            problem(seq, dbns, name, f"created_at {created_at!r} is not a finite number")
        if not isinstance(context, str):
            problem(seq, dbns, name, f"context {context!r} is not a string")
    collisions: set[tuple[str, str]] = set()
    for dbns in fields:
        tokens = dbns2tuple(dbns)
        for depth in range(1, len(tokens)):
            parent = "/".join(tokens[:depth])
            if (
                tokens[depth] in fields.get(parent, ())
                and (parent, tokens[depth]) not in collisions
            ):
                collisions.add((parent, tokens[depth]))
                problem(
                    None,
                    parent,
                    tokens[depth],
                    f"{tokens[depth]!r} is both a field of {parent!r} and a namespace token "
                    f"of {dbns!r}",
                )
    report.unknown_types = dict(sorted(report.unknown_types.items()))
    return report
