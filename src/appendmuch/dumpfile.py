"""The dump format: a stream of msgpack maps, one per row, in seq order.

Each map has exactly the keys ``seq, namespace, field, value, created_at, context``
(in that order), with ``value`` as msgpack bin (``None`` for a tombstone) and
``created_at`` as a float64.  A dump made by any driver restores into any other,
byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgpack

from .errors import DumpFormatError
from .names import is_valid_dbns, is_valid_field, with_article

if TYPE_CHECKING:
    from .codec import Codec

__all__ = [
    "KEYS",
    "MAX_DUMP_VALUE_BYTES",
    "MAX_RESTORED_SEQ",
    "Row",
    "check_row",
    "check_tree",
    "pack_rows",
    "read_dump",
    "row_map",
    "unpack_maps",
]

#: (seq, namespace, field, value or None, created_at, context)
Row = tuple[int, str, str, bytes | None, float, str]

KEYS = ("seq", "namespace", "field", "value", "created_at", "context")
_KEYSET = frozenset(KEYS)
_CHUNK = 1 << 16
_MAX_SEQ = (1 << 63) - 1
#: the largest seq a dump (or recovery file) may hold: the log must be able to go on
#: from it, in either mode (shared mode numbers writes not yet committed from 2**62 on),
#: so 2**61 more seqs stay free
MAX_RESTORED_SEQ = 1 << 61
#: the largest value a dump can carry: a msgpack bin holds less than 4 GiB, and 1 MiB
#: is left for the rest of the row
MAX_DUMP_VALUE_BYTES = (1 << 32) - (1 << 20)
#: the reader accepts any row the writer can produce (a value of MAX_DUMP_VALUE_BYTES
#: plus the other columns); its buffer grows only as data arrives.  Dumps hold no
#: arrays and 6-key maps, so claimed lengths of those are kept small.
_READER_LIMITS = {
    "max_buffer_size": 1 << 33,
    "max_str_len": 1 << 33,
    "max_bin_len": 1 << 33,
    "max_ext_len": 1 << 33,
    "max_array_len": 1 << 10,
    "max_map_len": 1 << 10,
}


def pack_rows(rows: Iterable[Row]) -> Iterator[bytes]:
    """Encode rows as msgpack maps, one ``bytes`` per row."""
    pack = msgpack.Packer(use_bin_type=True).pack
    for row in rows:
        yield pack(row_map(row))


def row_map(row: Row) -> dict[str, Any]:
    """A row as the map a dump holds (keys in dump order, created_at a float64)."""
    seq, namespace, field, value, created_at, context = row
    return {
        "seq": seq,
        "namespace": namespace,
        "field": field,
        "value": value,
        "created_at": float(created_at),
        "context": context,
    }


def _chunks(stream: Any) -> Iterator[bytes]:
    if isinstance(stream, bytes | bytearray | memoryview):
        yield bytes(stream)
        return
    read = getattr(stream, "read", None)
    if callable(read):
        while True:
            chunk = read(_CHUNK)
            if not chunk:
                return
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise DumpFormatError(
                    f"restore needs a binary stream; read() returned {type(chunk).__name__}"
                )
            yield bytes(chunk)
    try:
        iterator = iter(stream)
    except TypeError:
        raise DumpFormatError(
            "restore takes a binary file object, bytes, or an iterable of bytes chunks; "
            f"got {type(stream).__name__}"
        ) from None
    for chunk in iterator:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise DumpFormatError(f"restore chunks must be bytes, got {type(chunk).__name__}")
        yield bytes(chunk)


def check_tree(rows: Iterable[Row], existing: Iterable[tuple[str, str]] = ()) -> None:
    """Raise DumpFormatError if a name would be both a field of a namespace and a token
    of a deeper namespace (a log with such rows cannot be opened).  O(rows)."""
    pairs: dict[tuple[str, str], int] = {pair: 0 for pair in existing}
    for row in rows:
        pairs.setdefault((row[1], row[2]), row[0])
    prefixes: set[str] = set()
    for namespace, _ in pairs:
        tokens = namespace.split("/")
        prefixes.update("/".join(tokens[: i + 1]) for i in range(len(tokens)))
    for (namespace, field), seq in pairs.items():
        if f"{namespace}/{field}" in prefixes:
            where = f"row seq {seq}" if seq else "a stored row"
            raise DumpFormatError(
                f"{where}: {field!r} is a field of namespace {namespace!r} and also a "
                f"namespace token of {namespace}/{field}/...; nothing was restored"
            )


def unpack_maps(stream: Any) -> Iterator[Any]:
    """The msgpack objects of a dump stream; raise DumpFormatError if it is not
    msgpack or ends in the middle of an object."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True, **_READER_LIMITS)
    fed = complete = count = 0
    try:
        for chunk in _chunks(stream):
            unpacker.feed(chunk)
            fed += len(chunk)
            for obj in unpacker:
                yield obj
                count += 1
                complete = unpacker.tell()
    except DumpFormatError:
        raise
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as exc:
        raise DumpFormatError(
            f"dump is not valid msgpack after {count} complete rows: {exc}"
        ) from exc
    if complete != fed:
        raise DumpFormatError(
            f"dump is truncated: its last {fed - complete} bytes do not form a complete "
            f"row (after {count} complete rows)"
        )


def read_dump(
    stream: Any, *, codec: Codec | None = None, max_value_bytes: int = MAX_DUMP_VALUE_BYTES
) -> list[Row]:
    """Parse and validate a whole dump; raise :class:`DumpFormatError` on any fault.

    Checks every map's keys and value types, namespace and field names, that no seq
    repeats or leaves no room to go on, that no value exceeds ``max_value_bytes`` (the
    target driver's limit), that the stream is not truncated, and (with ``codec``) that
    each value decodes.  Returns the rows in stream order.
    """
    rows: list[Row] = []
    seen: set[int] = set()
    for obj in unpack_maps(stream):
        rows.append(check_row(obj, len(rows), seen, codec, max_value_bytes))
    return rows


def check_row(
    obj: Any,
    index: int,
    seen: set[int],
    codec: Codec | None,
    max_value_bytes: int = MAX_DUMP_VALUE_BYTES,
) -> Row:
    """Validate one dump map (row number ``index``); return it as a Row."""
    where = f"dump row {index}"
    if not isinstance(obj, dict):
        raise DumpFormatError(f"{where} is {with_article(type(obj).__name__)}, not a map")
    if obj.keys() != _KEYSET:
        missing = sorted(_KEYSET - obj.keys())
        extra = sorted(map(str, obj.keys() - _KEYSET))
        raise DumpFormatError(f"{where} has missing keys {missing} / unknown keys {extra}")
    seq = obj["seq"]
    if type(seq) is not int or not 1 <= seq <= _MAX_SEQ:
        raise DumpFormatError(f"{where}: seq must be a positive 64-bit int, got {seq!r}")
    if seq > MAX_RESTORED_SEQ:
        raise DumpFormatError(
            f"{where}: seq {seq} leaves no room for later writes (seqs are 64-bit; a "
            f"restored seq may be at most 2**61 = {MAX_RESTORED_SEQ})"
        )
    where = f"dump row {index} (seq {seq})"
    if seq in seen:
        raise DumpFormatError(f"{where}: seq {seq} appears twice in the dump")
    seen.add(seq)
    namespace, field = obj["namespace"], obj["field"]
    if not isinstance(namespace, str) or not is_valid_dbns(namespace):
        raise DumpFormatError(f"{where}: invalid namespace {namespace!r}")
    where = f"dump row {index} (seq {seq}, namespace {namespace!r})"
    if not is_valid_field(field):
        raise DumpFormatError(f"{where}: invalid field name {field!r}")
    where = f"dump row {index} (seq {seq}, namespace {namespace!r}, field {field!r})"
    value = obj["value"]
    if value is not None and not isinstance(value, bytes):
        raise DumpFormatError(f"{where}: value must be bytes or nil, got {type(value).__name__}")
    if value == b"":
        raise DumpFormatError(f"{where}: value is empty (it needs at least a type-id byte)")
    if value is not None and len(value) > max_value_bytes:
        raise DumpFormatError(
            f"{where}: value is {len(value)} bytes, more than the {max_value_bytes} bytes "
            "this driver can store"
        )
    created_at = obj["created_at"]
    if type(created_at) not in (float, int) or not 0 <= created_at < math.inf:
        raise DumpFormatError(
            f"{where}: created_at must be a finite, non-negative time in seconds since the "
            f"epoch, got {created_at!r}"
        )
    context = obj["context"]
    if not isinstance(context, str) or "\x00" in context:
        raise DumpFormatError(
            f"{where}: context must be a string without NUL characters, got {context!r}"
        )
    if codec is not None and value is not None:
        try:
            codec.decode(value)
        except ValueError as exc:
            raise DumpFormatError(f"{where}: value does not decode: {exc}") from exc
    return seq, namespace, field, value, float(created_at), context
