"""The codec's built-in types: how each is written as JSON and read back.

Package-internal (the public face is :class:`~appendmuch.codec.Codec`): the
registrations of the built-in type ids, the fast encoders of exact scalars and plain
containers, and the normalising of values found inside containers (numpy scalars,
subclasses of str/int/float, zoned datetimes).
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

__all__: list[str] = []

#: ``encoder(value) -> JSON bytes`` of a registered type
Encoder = Callable[[Any], bytes]
#: ``decoder(JSON bytes) -> value`` of a registered type
Decoder = Callable[[bytes], Any]

_dumps = orjson.dumps
_loads = orjson.loads
_SORT = orjson.OPT_SORT_KEYS


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered type: its class, id, encoder and decoder (package-internal)."""

    cls: type
    type_id: int
    encoder: Encoder
    decoder: Decoder
    mutable: bool
    predicate: Callable[[Any], bool] | None
    #: the round trip is exact by construction, the vigilant check can be skipped
    exact: bool = False
    #: equality used by the vigilant check (default ``==``)
    equal: Callable[[Any, Any], bool] | None = None
    #: one of the built-in registrations (whose subclasses are normalised or refused)
    builtin: bool = False


# --------------------------------------------------------------------------- built-ins


def _b64(data: bytes | bytearray) -> bytes:
    return b'"' + base64.b64encode(data) + b'"'


def _unb64(raw: bytes) -> bytes:
    text = _loads(raw)
    if not isinstance(text, str):
        raise ValueError(f"expected a base64 string, got {type(text).__name__}")
    return base64.b64decode(text, validate=True)


def _expect(raw: bytes, kind: type | tuple[type, ...], what: str) -> Any:
    value = _loads(raw)
    if type(value) is bool and kind is not bool:
        raise ValueError(f"expected {what}, got bool")
    if not isinstance(value, kind):
        raise ValueError(f"expected {what}, got {type(value).__name__}")
    return value


def _enc_members(value: set[Any] | frozenset[Any]) -> bytes:
    # members ordered by their own encoding: equal sets always encode the same
    return b"[" + b",".join(sorted([_json(m) for m in value])) + b"]"


def _enc_float(value: float) -> bytes:
    number = value if type(value) is float else float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number!r} has no JSON representation")
    return _dumps(number)


def _dec_float(raw: bytes) -> float:
    return float(_expect(raw, (int, float), "a number"))


def _dec_none(raw: bytes) -> None:
    if _loads(raw) is not None:
        raise ValueError("expected null")


def _enc_complex(value: complex) -> bytes:
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
        raise ValueError(f"{value!r} has no JSON representation")
    return _dumps([value.real, value.imag])


def _dec_complex(raw: bytes) -> complex:
    pair = _expect(raw, list, "a [real, imag] array")
    if len(pair) != 2 or not all(isinstance(x, int | float) and type(x) is not bool for x in pair):
        raise ValueError("expected a [real, imag] array of two numbers")
    return complex(pair[0], pair[1])


def _dec_decimal(raw: bytes) -> Decimal:
    try:
        return Decimal(_expect(raw, str, "a string"))
    except InvalidOperation:
        raise ValueError("not a decimal number") from None


def _iso(value: _dt.date | _dt.time) -> bytes:
    return _dumps(value.isoformat())


def _dec_date(raw: bytes) -> _dt.date:
    return _dt.date.fromisoformat(_expect(raw, str, "an ISO date string"))


def _dec_time(raw: bytes) -> _dt.time:
    return _dt.time.fromisoformat(_expect(raw, str, "an ISO time string"))


def _dec_datetime(raw: bytes) -> _dt.datetime:
    return _dt.datetime.fromisoformat(_expect(raw, str, "an ISO datetime string"))


def _enc_uuid(value: uuid.UUID) -> bytes:
    return _b64(value.bytes)


def _dec_uuid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=_unb64(raw))


def _enc_random(value: random.Random) -> bytes:
    return _dumps(value.getstate())


def _dec_random(raw: bytes) -> random.Random:
    state = _expect(raw, list, "a Random state array")
    if len(state) != 3 or not isinstance(state[1], list):
        raise ValueError("expected [version, [internal state...], gauss_next]")
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


def _same_random(a: Any, b: Any) -> bool:
    return (
        isinstance(a, random.Random)
        and isinstance(b, random.Random)
        and a.getstate() == b.getstate()
    )


_MEMBERS = _SORT | orjson.OPT_PASSTHROUGH_SUBCLASS


def _json(value: Any) -> bytes:
    try:
        return _dumps(value, default=_member, option=_MEMBERS)
    except TypeError:
        # with OPT_PASSTHROUGH_SUBCLASS orjson refuses str-subclass dict keys (str enum
        # members, ...): make them plain and try once more
        if not _subclass_keys(value):
            raise
        return _dumps(_plain_keys(value), default=_member, option=_MEMBERS)


def _subclass_keys(value: Any) -> bool:
    """True if a plain dict in ``value`` has a key of a str subclass."""
    cls = type(value)
    if cls is dict:
        return any(type(k) is not str and isinstance(k, str) for k in value) or any(
            map(_subclass_keys, value.values())
        )
    if cls is list or cls is tuple:
        return any(map(_subclass_keys, value))
    return False


def _plain_keys(value: Any) -> Any:
    """``value`` with the str-subclass keys of its plain dicts made plain str."""
    cls = type(value)
    if cls is dict:
        return {
            (str.__str__(k) if isinstance(k, str) else k): _plain_keys(v) for k, v in value.items()
        }
    if cls is list or cls is tuple:
        return [_plain_keys(v) for v in value]
    return value


#: what a numpy scalar's ``item()`` may give for it to be stored as that plain value
_ITEM_TYPES = frozenset({int, float, bool, complex, str, bytes})
#: class -> whether it is a numpy scalar type (subclass of ``numpy.generic``)
_numpy_scalar_types: dict[type, bool] = {}


def numpy_item(value: Any) -> Any:
    """The plain Python value of a numpy scalar (``float64`` -> float), else ``NO_ITEM``.

    Found without importing numpy: the class derives from ``numpy.generic``.
    Package-internal.
    """
    cls = type(value)
    known = _numpy_scalar_types.get(cls)
    if known is None:
        known = _numpy_scalar_types[cls] = any(
            base.__name__ == "generic" and base.__module__ == "numpy" for base in cls.__mro__
        )
    if known:
        # numpy.str_ / numpy.bytes_ are str / bytes already; item() would drop
        # trailing NUL characters
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, bytes):
            return bytes(value)
        try:
            item = value.item()
        except Exception:
            return NO_ITEM
        if type(item) in _ITEM_TYPES:
            return item
    return NO_ITEM


#: what :func:`numpy_item` returns for a value that is not a numpy scalar
NO_ITEM: Any = object()
#: built-in containers (and Random): a subclass of one is refused, not normalised
CONTAINER_BASES: tuple[type, ...] = (tuple, frozenset, list, dict, set, bytearray, random.Random)
#: how a subclass of a built-in scalar found inside a container becomes the plain value
_TO_PLAIN: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (str, str.__str__),
    (int, int.__int__),
    (float, float.__float__),
)


def _member(value: Any) -> Any:
    """orjson's ``default`` for values inside a container: the plain form of numpy
    scalars and of subclasses of str/int/float; container subclasses are refused."""
    item = numpy_item(value)
    if item is not NO_ITEM:
        return item
    for base, plain in _TO_PLAIN:
        if isinstance(value, base):
            return plain(value)
    if isinstance(value, CONTAINER_BASES):
        raise TypeError(subclass_refusal(value))
    raise TypeError(f"Type is not JSON serializable: {qualname(value)}")


def zoned(value: _dt.datetime) -> bool:
    """True for an aware datetime whose tzinfo is not a fixed offset (a ZoneInfo, ...).

    Package-internal.
    """
    return value.tzinfo is not None and type(value.tzinfo) is not _dt.timezone


def fixed_offset(value: _dt.datetime) -> _dt.datetime:
    """The same wall time with the fixed UTC offset in force for it (fold respected).

    The wire format keeps only the offset; this is what a reopen reads back.
    Package-internal.
    """
    offset = value.utcoffset()
    return _dt.datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        None if offset is None else _dt.timezone(offset),
    )


def subclass_refusal(value: Any) -> str:
    """Why a subclass of a built-in container is refused, and what to do (package-internal)."""
    cls = type(value)
    base = next(b for b in CONTAINER_BASES if isinstance(value, b))
    return (
        f"{qualname(value)} is a subclass of {base.__qualname__} and would be read back "
        f"as a plain {base.__qualname__}; store {base.__qualname__}(value) instead, or "
        f"register a codec for {cls.__qualname__} (Codec.register)"
    )


# Encoding with the passthrough options fails on anything but exact JSON types
# (subclasses of str/int/dict/list, dates, dataclasses), so success means the decoded
# document is an exact, independent copy of the value (enum members aside).
_PLAIN = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _plain_json(value: Any) -> bytes:
    return _dumps(value, option=_PLAIN)


def _plain_members(value: set[Any] | frozenset[Any]) -> bytes:
    return b"[" + b",".join(sorted([_dumps(m, option=_PLAIN) for m in value])) + b"]"


def _fast_int(value: int) -> bytes:
    return b"\x00" + _dumps(value)


def _fast_str(value: str) -> bytes:
    return b"\x02" + _dumps(value)


def _fast_float(value: float) -> bytes:
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no JSON representation")
    return b"\x01" + _dumps(value)


_fast_bool = {True: b"\x05true", False: b"\x05false"}.__getitem__


def _fast_none(value: None) -> bytes:
    return b"\x07null"


#: exact type -> encoder returning the stored bytes (id byte included); these values
#: always round-trip, so no vigilant check is needed
FAST_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    int: _fast_int,
    str: _fast_str,
    float: _fast_float,
    bool: _fast_bool,
    type(None): _fast_none,
}
#: built-in containers whose exact instances can be encoded with the plain options
PLAIN_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    list: _plain_json,
    dict: _plain_json,
    tuple: _plain_json,
    set: _plain_members,
    frozenset: _plain_members,
}


_DECLARED: tuple[Registration, ...] = (
    Registration(int, 0, _json, lambda r: _expect(r, int, "an integer"), False, None, exact=True),
    Registration(float, 1, _enc_float, _dec_float, False, None),
    Registration(str, 2, _json, lambda r: _expect(r, str, "a string"), False, None, exact=True),
    Registration(tuple, 3, _json, lambda r: tuple(_expect(r, list, "an array")), False, None),
    Registration(bytes, 4, _b64, _unb64, False, None, exact=True),
    Registration(
        bool,
        5,
        lambda v: b"true" if v else b"false",
        lambda r: _expect(r, bool, "true or false"),
        False,
        None,
        exact=True,
    ),
    Registration(complex, 6, _enc_complex, _dec_complex, False, None),
    Registration(type(None), 7, lambda v: b"null", _dec_none, False, None, exact=True),
    Registration(Decimal, 8, lambda v: _dumps(str(v)), _dec_decimal, False, None, exact=True),
    Registration(
        frozenset, 9, _enc_members, lambda r: frozenset(_expect(r, list, "an array")), False, None
    ),
    Registration(_dt.date, 10, _iso, _dec_date, False, None),
    Registration(_dt.time, 11, _iso, _dec_time, False, None),
    Registration(_dt.datetime, 12, _iso, _dec_datetime, False, None),
    Registration(uuid.UUID, 13, _enc_uuid, _dec_uuid, False, None, exact=True),
    Registration(list, 128, _json, lambda r: _expect(r, list, "an array"), True, None),
    Registration(dict, 129, _json, lambda r: _expect(r, dict, "an object"), True, None),
    Registration(bytearray, 130, _b64, lambda r: bytearray(_unb64(r)), True, None, exact=True),
    Registration(set, 131, _enc_members, lambda r: set(_expect(r, list, "an array")), True, None),
    Registration(random.Random, 133, _enc_random, _dec_random, True, None, equal=_same_random),
)

#: the built-in registrations, each marked ``builtin`` (package-internal)
BUILTINS: tuple[Registration, ...] = tuple(
    Registration(
        e.cls, e.type_id, e.encoder, e.decoder, e.mutable, e.predicate, e.exact, e.equal, True
    )
    for e in _DECLARED
)

#: type ids of the built-in containers that ``PLAIN_ENCODERS`` may encode
PLAIN_IDS = frozenset({3, 9, 128, 129, 131})


def qualname(value: Any) -> str:
    """The class name of ``value`` as errors show it (package-internal)."""
    cls = type(value)
    mod = cls.__module__
    return cls.__qualname__ if mod == "builtins" else f"{mod}.{cls.__qualname__}"
