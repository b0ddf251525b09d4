"""Exports of what a page shows, in the files ``appendmuch export`` writes.

The rows a page selects (from the index, not from the database again) are handed to
:func:`appendmuch.export.write_export` through :class:`SelectedRows`, a read-only
driver whose ``load_rows()`` yields them; so the CSV and JSON Lines files are those of
the export module, column for column.  Log-shaped exports stream in chunks of
:data:`CHUNK` rows (the CSV header once), so an export of a large selection never
holds it in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Literal

import orjson

from ..codec import Codec
from ..drivers.base import DBDriver, Row
from ..errors import ReadOnlyError
from ..export import write_export
from ..fieldlog import GONE, Packed
from ..rendering import Opaque, value_text
from .index import FieldRef

__all__ = ["CHUNK", "SelectedRows", "export_chunks", "stored_row"]

#: rows written per chunk of a streamed export
CHUNK = 2000
_ENCODER = Codec()


def stored_row(ref: FieldRef, position: int) -> Row:
    """The entry at ``position`` of a field as the database stores it."""
    log = ref.log
    data = log.items[2 * position]
    raw: bytes | None
    if data is GONE:
        raw = None
    elif data.__class__ is Packed:
        raw = bytes(data)
    elif isinstance(data, Opaque):
        raw = bytes((data.type_id or 0,)) + data.document
    else:
        try:  # the wire format is canonical: encoding again gives the stored bytes
            raw = _ENCODER.encode(data)
        except (TypeError, ValueError):
            raw = b"\x02" + orjson.dumps(value_text(data))
    stamp = log.times[position]
    return (log.seqs[position], ref.dbns, ref.name, raw, stamp, log.items[2 * position + 1])


class SelectedRows(DBDriver):
    """A read-only driver over rows chosen by a page (in seq order), for the export
    module.  Every write raises :class:`~appendmuch.errors.ReadOnlyError`."""

    read_only = True

    def __init__(self, rows: Iterable[Row]) -> None:
        super().__init__()
        self._rows = rows

    def ensure(self) -> None:
        """Nothing to connect to."""

    def load_rows(self) -> Iterator[Row]:
        """The selected rows."""
        return iter(self._rows)

    def _iter_rows(self) -> Iterator[Row]:
        return iter(self._rows)

    def _refuse(self) -> ReadOnlyError:
        return ReadOnlyError("the rows of an export are read-only")

    def append(self, row: Row) -> bool:
        """Refused."""
        raise self._refuse()

    def replace(self, old_seq: int | None, row: Row) -> bool:
        """Refused."""
        raise self._refuse()

    def flush(self) -> None:
        """Nothing is ever queued."""

    def close(self) -> None:
        """Nothing to close."""

    def size(self) -> None:
        """No storage of its own."""

    def reset(self) -> None:
        """Refused."""
        raise self._refuse()

    def _insert_restored(self, rows: Iterable[Row]) -> None:
        raise self._refuse()

    def apply_recovered(self, entries: list[Any]) -> int:
        """Refused."""
        raise self._refuse()


def export_chunks(
    rows: Iterator[Row],
    *,
    format: Literal["csv", "jsonl"],
    shape: Literal["log", "latest"],
) -> Iterator[bytes]:
    """The export file of ``rows`` as UTF-8 chunks.  ``log``: streamed; ``latest``:
    one chunk (its columns depend on every row)."""
    if shape == "latest":
        yield _write(list(rows), format, shape).encode()
        return
    first = True
    while True:
        chunk = list(islice(rows, CHUNK))
        if not chunk and not first:
            return
        text = _write(chunk, format, shape)
        if not first and format == "csv":
            text = text.split("\n", 1)[1]  # the header line holds no newline
        first = False
        yield text.encode()
        if len(chunk) < CHUNK:
            return


def _write(
    rows: list[Row], format: Literal["csv", "jsonl"], shape: Literal["log", "latest"]
) -> str:
    out = io.StringIO(newline="")
    write_export(SelectedRows(rows), out, format=format, shape=shape)
    return out.getvalue()
