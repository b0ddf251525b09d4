"""Getting a log's data out: rows for Python, CSV and JSON Lines files, a pandas DataFrame.

Two shapes:

``log``
    one row per entry, in seq order, tombstones included:
    ``seq, time, namespace, field, value, unavailable, context``.
``latest``
    one row per namespace (sorted, ``p2`` before ``p10``), one column per field that
    has a current value somewhere: ``namespace`` then the fields in order of first
    write.  A field that is missing or deleted in a namespace is absent from its row.
    A field called ``namespace`` gets the column ``namespace_`` (with more underscores
    while that is a field too).

``namespace`` selects a namespace and everything below it (``"game"`` holds
``game/p1``, not ``games``).

In Python (:func:`export_rows`, :func:`to_dataframe`) values are decoded objects
(an :class:`~appendmuch.rendering.Opaque` for a type the codec does not know) and
``time`` is a UTC :class:`~datetime.datetime`.  In files (:func:`write_export`) values
take their JSON form (see :mod:`appendmuch.rendering`: bytes as base64, dates as ISO
strings, custom types as ``{"$type": id, "$json": document}``) and times are ISO 8601
strings in UTC.

CSV files are UTF-8 with a header row, ``\\n`` line endings and RFC 4180 quoting.  In
the ``log`` shape the ``value`` cell holds the value's JSON (so ``"Alice"`` keeps its
quotes and nothing is lost; empty for a tombstone) and ``unavailable`` is ``true`` or
``false``.  In the ``latest`` shape cells are meant for analysis: a value whose JSON
form is a string (str, Decimal, date and time, UUID, bytes in base64) is written as
that text, numbers as numbers, booleans as ``true`` / ``false``, ``None`` and missing
fields as an empty cell, anything else (lists, dicts, custom types) as its JSON.  JSON
Lines files hold one JSON object per line with the values as JSON (lossless in both
shapes).
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, Literal

import orjson

from .codec import Codec
from .drivers.base import DBDriver, Row
from .inspection import (
    NotInLogError,
    ProgressFn,
    in_prefix,
    namespace_key,
    parse_namespace,
    stream_rows,
)
from .names import check_namespace, tuple2dbns
from .rendering import decode_lenient, iso_time, json_value, stored_json
from .store import Store

__all__ = ["LOG_COLUMNS", "export_rows", "latest_columns", "to_dataframe", "write_export"]

Shape = Literal["log", "latest"]
Format = Literal["csv", "jsonl"]

#: the columns of the ``log`` shape, in order
LOG_COLUMNS: tuple[str, ...] = (
    "seq",
    "time",
    "namespace",
    "field",
    "value",
    "unavailable",
    "context",
)
_DEFAULT = Codec()


def _source(source: Store | DBDriver, codec: Codec | None) -> tuple[DBDriver, Codec]:
    if isinstance(source, Store):
        return source.driver, codec or source.codec
    if isinstance(source, DBDriver):
        return source, codec or Codec()
    raise TypeError(f"export needs a Store or a driver, got {type(source).__name__}")


def _prefix(namespace: str | Sequence[str] | None) -> str | None:
    if namespace is None:
        return None
    if isinstance(namespace, str):
        return parse_namespace(namespace)
    return tuple2dbns(check_namespace(tuple(namespace)))


def _check_shape(shape: str) -> None:
    if shape not in ("log", "latest"):
        raise ValueError(f"shape must be 'log' or 'latest', got {shape!r}")


def _utc(created_at: float | None) -> _dt.datetime | None:
    if created_at is None or created_at != created_at:  # noqa: PLR0124 - NaN: no time
        return None
    return _dt.datetime.fromtimestamp(created_at, tz=_dt.UTC)


class _Latest:
    """The current value of every field of every selected namespace (stored bytes)."""

    def __init__(self, rows: Iterable[Row], prefix: str | None) -> None:
        #: dbns -> field -> stored value, for fields whose latest entry is a value
        self.values: dict[str, dict[str, bytes]] = {}
        first_write: dict[str, None] = {}
        for _seq, dbns, name, value, _created_at, _context in rows:
            if not in_prefix(dbns, prefix):
                continue
            fields = self.values.setdefault(dbns, {})
            first_write.setdefault(name, None)
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = value
        current = set().union(*self.values.values()) if self.values else set()
        #: field -> column name, in order of first write
        self.columns: dict[str, str] = {}
        for name in first_write:
            if name in current:
                column = name
                while column == "namespace" or (column != name and column in first_write):
                    column += "_"
                self.columns[name] = column

    def namespaces(self) -> list[str]:
        return sorted(self.values, key=namespace_key)


def latest_columns(
    source: Store | DBDriver, namespace: str | Sequence[str] | None = None
) -> list[str]:
    """The columns of the ``latest`` shape: ``namespace`` and then the field columns."""
    driver, _codec = _source(source, None)
    latest = _Latest(driver.load_rows(), _prefix(namespace))
    return ["namespace", *latest.columns.values()]


def export_rows(
    source: Store | DBDriver,
    shape: Shape = "log",
    namespace: str | Sequence[str] | None = None,
    *,
    codec: Codec | None = None,
) -> Iterator[dict[str, Any]]:
    """The log as dicts, one per entry (``log``) or per namespace (``latest``).

    ``source`` is a Store (its driver and codec are used; queued rows are written
    first) or a driver.  ``namespace`` (``"game/p1"`` or ``("game", "p1")``) keeps that
    namespace and those below it.  ``codec`` decodes values (default: the Store's, or
    a new :class:`~appendmuch.Codec`); values it cannot decode come as
    :class:`~appendmuch.rendering.Opaque`.  The ``log`` shape streams; ``latest``
    reads the whole log before the first row.

    >>> from appendmuch import Memory, Store
    >>> store = Store(Memory())
    >>> p = store.storage("game", "p1")
    >>> p.score = 1
    >>> del p.score
    >>> [(r["seq"], r["field"], r["value"], r["unavailable"]) for r in export_rows(store)]
    [(1, 'score', 1, False), (2, 'score', None, True)]
    """
    _check_shape(shape)
    driver, codec = _source(source, codec)
    prefix = _prefix(namespace)
    if shape == "log":
        return _log_rows(driver, codec, prefix)
    return _latest_rows(_Latest(driver.load_rows(), prefix), codec)


def _log_rows(driver: DBDriver, codec: Codec, prefix: str | None) -> Iterator[dict[str, Any]]:
    for seq, dbns, name, value, created_at, context in driver.load_rows():
        if in_prefix(dbns, prefix):
            yield {
                "seq": seq,
                "time": _utc(created_at),
                "namespace": dbns,
                "field": name,
                "value": None if value is None else decode_lenient(codec, value),
                "unavailable": value is None,
                "context": context,
            }


def _latest_rows(latest: _Latest, codec: Codec) -> Iterator[dict[str, Any]]:
    for dbns in latest.namespaces():
        row: dict[str, Any] = {"namespace": dbns}
        fields = latest.values[dbns]
        for name, column in latest.columns.items():
            if name in fields:
                row[column] = decode_lenient(codec, fields[name])
        yield row


def to_dataframe(
    source: Store | DBDriver,
    shape: Shape = "log",
    namespace: str | Sequence[str] | None = None,
    *,
    codec: Codec | None = None,
) -> Any:
    """:func:`export_rows` as a ``pandas.DataFrame`` (pandas is imported only here).

    Columns as in the module docstring; missing cells of the ``latest`` shape are NaN.
    Raises ImportError naming pandas when it is not installed (pandas is not a
    dependency of appendmuch).
    """
    try:
        pandas = importlib.import_module("pandas")
    except ImportError as exc:
        raise ImportError(
            "to_dataframe() needs pandas, which is not installed (pip install pandas); "
            "export_rows() gives the same rows without it"
        ) from exc
    _check_shape(shape)
    driver, codec = _source(source, codec)
    prefix = _prefix(namespace)
    if shape == "log":
        columns = list(LOG_COLUMNS)
        rows = list(_log_rows(driver, codec, prefix))
    else:
        latest = _Latest(driver.load_rows(), prefix)
        columns = ["namespace", *latest.columns.values()]
        rows = list(_latest_rows(latest, codec))
    return pandas.DataFrame.from_records(rows, columns=columns)


# --------------------------------------------------------------------------- files


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def _latest_cell(raw: bytes) -> str:
    value = decode_lenient(_DEFAULT, raw)
    if value is None:
        return ""
    if type(value) is bool:
        return _bool(value)
    text = json_value(value)
    if text.startswith(b'"'):  # str, Decimal, dates, UUID, bytes: the text itself
        return str(orjson.loads(text))
    return text.decode()


def write_export(
    source: Store | DBDriver,
    out: IO[str],
    *,
    format: Format = "csv",
    shape: Shape = "log",
    namespace: str | Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> int:
    """Write the export to the text stream ``out`` (open it with ``newline=""`` and
    UTF-8); return the number of rows written (the CSV header not counted).

    ``progress(seq)`` is called now and then with the seq reached.  A ``namespace``
    that is not in the log raises :class:`~appendmuch.inspection.NotInLogError`
    before anything is written.
    """
    _check_shape(shape)
    if format not in ("csv", "jsonl"):
        raise ValueError(f"format must be 'csv' or 'jsonl', got {format!r}")
    driver, _codec = _source(source, None)
    prefix = _prefix(namespace)
    if prefix is not None:
        driver.ensure()
        driver.flush()  # queued rows count
        if not any(in_prefix(dbns, prefix) for dbns, _ in driver.stored_names()):
            raise NotInLogError(f"there is no namespace {prefix!r} in the log")
    rows = stream_rows(driver, progress)
    if shape == "log":
        return _write_log(rows, prefix, out, format)
    return _write_latest(_Latest(rows, prefix), out, format)


def _write_log(rows: Iterable[Row], prefix: str | None, out: IO[str], fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LOG_COLUMNS)
        for seq, dbns, name, value, created_at, context in rows:
            if in_prefix(dbns, prefix):
                writer.writerow(
                    (
                        seq,
                        iso_time(created_at) or "",
                        dbns,
                        name,
                        "" if value is None else stored_json(value).decode(),
                        _bool(value is None),
                        context,
                    )
                )
                count += 1
        return count
    dumps, fragment, write = orjson.dumps, orjson.Fragment, out.write
    for seq, dbns, name, value, created_at, context in rows:
        if in_prefix(dbns, prefix):
            line = {
                "seq": seq,
                "time": iso_time(created_at),
                "namespace": dbns,
                "field": name,
                "value": fragment(stored_json(value)),
                "unavailable": value is None,
                "context": context,
            }
            write(dumps(line).decode())
            write("\n")
            count += 1
    return count


def _write_latest(latest: _Latest, out: IO[str], fmt: str) -> int:
    namespaces = latest.namespaces()
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["namespace", *latest.columns.values()])
        for dbns in namespaces:
            fields = latest.values[dbns]
            writer.writerow(
                [dbns]
                + [_latest_cell(fields[name]) if name in fields else "" for name in latest.columns]
            )
        return len(namespaces)
    for dbns in namespaces:
        fields = latest.values[dbns]
        line: dict[str, Any] = {"namespace": dbns}
        for name, column in latest.columns.items():
            if name in fields:
                line[column] = orjson.Fragment(stored_json(fields[name]))
        out.write(orjson.dumps(line).decode())
        out.write("\n")
    return len(namespaces)
