"""Stored values as JSON and as text for people, without failing on values that do not decode.

The command line and the export read logs written by applications whose codecs may know
more types than the default :class:`~appendmuch.codec.Codec`.  A value whose type id
the reading codec does not know is not corruption, and a value whose document does not
fit its type should be shown, not crash the reader.  Both are kept as :class:`Opaque`:
the type id and the stored JSON document.

JSON form of a value (exports, ``--json``), decided by the stored bytes alone:

- int, float, str, bool, None, list, dict: themselves;
- tuple, set, frozenset: arrays (sets in the order they are stored);
- bytes, bytearray: base64 strings (standard alphabet, padded), as stored;
- complex: ``[real, imag]``; Decimal: a string (no precision lost);
- date, time, datetime: ISO 8601 strings; UUID: the canonical ``8-4-4-4-12`` string;
- random.Random: its ``getstate()`` as an array;
- any other type id (custom types, whatever the reading codec knows):
  ``{"$type": id, "$json": document}``; a document that is not JSON gives
  ``{"$type": id, "$text": "..."}``, and a malformed built-in value adds
  ``"$error": "why"``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from .codec import Codec
from .errors import DecodeError
from .names import with_article

__all__ = [
    "BUILTIN_TYPE_IDS",
    "LenientCodec",
    "Opaque",
    "decode_lenient",
    "iso_time",
    "json_value",
    "stored_json",
    "type_name",
    "value_text",
]

_DEFAULT = Codec()
#: type ids the default codec decodes (SPEC section 9)
BUILTIN_TYPE_IDS: frozenset[int] = frozenset(_DEFAULT.type_map().values())
_TYPE_NAMES: dict[int, str] = {
    type_id: ("None" if cls is type(None) else cls.__name__)
    for cls, type_id in _DEFAULT.type_map().items()
}
#: types whose JSON form says what they are; others are shown as ``<type> json``
_PLAIN_JSON = frozenset({int, float, str, bool, type(None), list, dict})
_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


@dataclass(frozen=True, slots=True)
class Opaque:
    """A stored value that was not decoded: its type id and its stored document.

    ``problem`` is None when the reading codec does not know ``type_id`` (a custom
    type of the application that wrote the log: not an error), else why the value did
    not decode (a malformed document, an empty value, a value that is not bytes).
    """

    type_id: int | None
    document: bytes
    problem: str | None = None

    @property
    def malformed(self) -> bool:
        """True when the value is damaged, not merely of an unknown type."""
        return self.problem is not None

    def text(self) -> str:
        """The stored document as text (invalid UTF-8 replaced)."""
        return self.document.decode("utf-8", errors="replace")

    def __str__(self) -> str:
        if self.problem is None:
            return f"<type {self.type_id}> {self.text()}"
        name = type_name(self.type_id)
        return f"<malformed {name}> {self.text()}".rstrip()


def type_name(type_id: int | None) -> str:
    """``"int"``, ``"datetime"``, ... for built-in ids; ``"type 20"`` otherwise."""
    if type_id is None:
        return "value"
    return _TYPE_NAMES.get(type_id, f"type {type_id}")


def decode_lenient(codec: Codec, raw: object) -> Any:
    """``codec.decode(raw)``, or an :class:`Opaque` when that is not possible.

    Never raises.  ``raw`` is the stored value (bytes; tombstones are handled by the
    caller).
    """
    return _decode_or_opaque(codec, codec.decode, raw)


def _decode_or_opaque(codec: Codec, decode: Callable[[bytes], Any], raw: object) -> Any:
    if not isinstance(raw, bytes | bytearray | memoryview):
        kind = with_article(type(raw).__name__)
        return Opaque(None, str(raw).encode(), f"stored value is {kind}, not bytes")
    data = bytes(raw)
    if not data:
        return Opaque(None, b"", "empty value (no type-id byte)")
    try:
        return decode(data)
    except DecodeError as exc:
        # Codec has no public "knows this type id" test; its registry is the authority.
        known = codec.knows(data[0])
        return Opaque(data[0], data[1:], str(exc) if known else None)


class LenientCodec(Codec):
    """A :class:`Codec` whose :meth:`decode` returns :class:`Opaque` instead of raising.

    Give it to a read-only :class:`~appendmuch.Store` to load any log, whatever types
    its writer registered.  Do not write with it.
    """

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        return _decode_or_opaque(self, super().decode, data)


def _members(value: set[Any] | frozenset[Any]) -> list[Any]:
    return sorted(value, key=lambda member: orjson.dumps(member, default=_default, option=_OPTIONS))


def _opaque_json(value: Opaque) -> dict[str, Any]:
    out: dict[str, Any] = {"$type": value.type_id}
    try:
        out["$json"] = orjson.Fragment(orjson.dumps(orjson.loads(value.document)))
    except orjson.JSONDecodeError:
        out["$text"] = value.text()
    if value.problem is not None:
        out["$error"] = value.problem
    return out


def _default(value: Any) -> Any:
    if isinstance(value, Opaque):
        return _opaque_json(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, set | frozenset):
        return _members(value)
    if isinstance(value, _dt.date | _dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, random.Random):
        return value.getstate()
    raise TypeError


def json_value(value: Any, codec: Codec | None = None) -> bytes:
    """The JSON form (see the module docstring) of a decoded value or an Opaque.

    A value of a custom type is written as ``{"$type": id, "$json": document}`` using
    ``codec`` (which must know the type) to encode it.
    """

    def default(obj: Any) -> Any:
        try:
            return _default(obj)
        except TypeError:
            if codec is None:
                raise
        type_id, document = codec.encode_raw(obj)
        return _opaque_json(Opaque(type_id, document))

    try:
        return orjson.dumps(value, default=default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"no JSON form for a value of type {type(value).__name__}") from exc


def stored_json(raw: bytes | None) -> bytes:
    """The JSON form of a stored value (``null`` for a tombstone's missing value).

    Depends only on the bytes: built-in type ids are decoded, any other id is written
    as ``{"$type": id, "$json": document}``, whatever codec wrote it.
    """
    if raw is None:
        return b"null"
    # The default codec knows only the built-in ids: anything else comes back Opaque.
    return json_value(decode_lenient(_DEFAULT, raw))


def value_text(value: Any, *, limit: int | None = None) -> str:
    """A decoded value (or Opaque) as one line for people.

    JSON types are their JSON (``10``, ``"Alice"``, ``[1,2]``); other built-ins say
    their type (``<Decimal> "1.50"``, ``<datetime> "2024-05-01T10:00:00"``); values
    that did not decode show their stored document (``<type 20> "1/3"``).  With
    ``limit``, longer texts are cut and end in ``…``.
    """
    if isinstance(value, Opaque):
        text = str(value)
    else:
        try:
            body = json_value(value).decode()
        except TypeError:
            body = repr(value)
        kind = type(value)
        text = body if kind in _PLAIN_JSON else f"<{kind.__name__}> {body}"
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text


def iso_time(created_at: float | None, *, timespec: str = "microseconds") -> str | None:
    """A stored ``created_at`` (seconds since the epoch) as ISO 8601 in UTC."""
    if created_at is None or created_at != created_at:  # noqa: PLR0124 - NaN: no time
        return None
    moment = _dt.datetime.fromtimestamp(created_at, tz=_dt.UTC)
    return moment.isoformat(timespec=timespec)
