"""The typed codec: one type-id byte followed by an orjson document.

Built-in type ids (SPEC section 9; ids >= 128 are mutable types)::

    int 0, float 1, str 2, tuple 3, bytes 4, bool 5, complex 6, None 7, Decimal 8,
    frozenset 9, date 10, time 11, datetime 12, UUID 13,
    list 128, dict 129, bytearray 130, set 131, random.Random 133

Encoding is deterministic for equal values: dict keys are sorted and set members are
ordered by their JSON encoding.  In vigilant mode (the default) every encoded value is
decoded again and compared with the original, so a value that would come back different
(``math.inf``, a tuple nested in a list, a dict with non-str keys) is refused before
anything is stored.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .builtintypes import (
    BUILTINS,
    CONTAINER_BASES,
    FAST_ENCODERS,
    NO_ITEM,
    PLAIN_ENCODERS,
    PLAIN_IDS,
    Decoder,
    Encoder,
    Registration,
    fixed_offset,
    numpy_item,
    qualname,
    subclass_refusal,
    zoned,
)
from .copying import ATOM_TYPES
from .copying import safe_deepcopy as _deepcopy
from .errors import DecodeError, RoundTripError, UnknownTypeIdError, UnsupportedTypeError

__all__ = ["Codec", "Decoder", "Encoded", "Encoder"]

_CONTAINERS_OF_VALUES = (tuple, frozenset)
#: read without consulting the codec, so no registration may make them mutable
_NEVER_MUTABLE: frozenset[type] = frozenset({int, float, str, bool, type(None)})


@dataclass(slots=True)
class Encoded:
    """A value's stored bytes before the round-trip check (see :meth:`Codec.finish`)."""

    data: bytes
    value: Any
    entry: Registration
    #: encoded with the plain options: the decoded document is an exact copy
    plain: bool
    mutable: bool


class Codec:
    """Turns values into ``bytes([type_id]) + json`` and back.

    Every Store has one (``store.codec``); register extra types on it before writing
    values of those types.

    >>> codec = Codec()
    >>> codec.encode({"b": 1, "a": [1.5, None]})
    b'\\x81{"a":[1.5,null],"b":1}'
    >>> codec.decode(b'\\x00' + b'42')
    42
    """

    def __init__(
        self, *, vigilant: bool = True, vigilant_skip: Callable[[Any], bool] | None = None
    ) -> None:
        #: decode every encoded value again and compare it with the original
        self.vigilant = vigilant
        #: a predicate; when it returns true for a value, the round-trip check is skipped
        self.vigilant_skip = vigilant_skip
        self._by_id: dict[int, Registration] = {}
        self._by_type: dict[type, Registration] = {}
        self._conditional: dict[type, list[Registration]] = {}
        self._resolved: dict[type, tuple[list[Registration], Registration | None]] = {}
        self._atoms: frozenset[type] = ATOM_TYPES
        #: exact scalar type -> encoder of the stored bytes, for types with no variants
        #: (package-internal: the Store's write path looks values up here directly)
        self.fast_encoders: dict[type, Callable[[Any], bytes]] = dict(FAST_ENCODERS)
        for entry in BUILTINS:
            self._add(entry)

    # ------------------------------------------------------------------ registration

    def register(
        self,
        cls: type,
        type_id: int,
        encoder: Encoder,
        decoder: Decoder,
        *,
        mutable: bool = False,
        predicate: Callable[[Any], bool] | None = None,
    ) -> None:
        """Add a type: ``encoder(value) -> JSON bytes``, ``decoder(JSON bytes) -> value``.

        ``type_id`` is the byte stored before the JSON (0-255, not yet used; by
        convention ids >= 128 are mutable types).  Registering an already registered
        class (a built-in one too) under a new id adds a decoder for that id; values
        are still encoded with the class's existing id.  ``mutable=True`` makes values of
        the type need ``with storage:`` to be read.  With a ``predicate`` the
        registration is used only for values it accepts; others of the same class
        keep their previous encoding.  An exact type match wins over a registered
        base class.

        >>> from fractions import Fraction
        >>> c = Codec()
        >>> c.register(Fraction, 20, lambda f: f'"{f}"'.encode(),
        ...            lambda raw: Fraction(raw.decode().strip('"')))
        >>> c.decode(c.encode(Fraction(1, 3)))
        Fraction(1, 3)
        """
        if not isinstance(cls, type):
            raise TypeError(f"register() needs a class, got {cls!r}")
        if type(type_id) is not int or not 0 <= type_id <= 255:
            raise ValueError(f"type_id must be an int in 0..255, got {type_id!r}")
        if type_id in self._by_id:
            taken = self._by_id[type_id].cls
            raise ValueError(
                f"Type ID {type_id} already registered (for {taken.__qualname__}); "
                f"choose a free id for {cls.__qualname__}"
            )
        if not callable(encoder) or not callable(decoder):
            raise TypeError("encoder and decoder must be callable")
        if predicate is not None and not callable(predicate):
            raise TypeError("predicate must be callable")
        if mutable and cls in _NEVER_MUTABLE:
            raise ValueError(f"{cls.__qualname__} values are always immutable")
        entry = Registration(cls, type_id, encoder, decoder, bool(mutable), predicate)
        if predicate is None and cls in self._by_type:
            # already registered: the new id is one more decoder (say, for values an
            # older application stored under it); encoding keeps the existing id
            self._by_id[type_id] = entry
            return
        self._add(entry)

    def _add(self, entry: Registration) -> None:
        self._by_id[entry.type_id] = entry
        if entry.predicate is None:
            self._by_type[entry.cls] = entry
        else:
            # newest registration is tried first
            self._conditional.setdefault(entry.cls, []).insert(0, entry)
            self._atoms = self._atoms - {entry.cls}
            self.fast_encoders.pop(entry.cls, None)
        self._resolved.clear()

    def type_map(self) -> dict[type, int]:
        """Class -> type id of every registration made without a predicate."""
        return {cls: e.type_id for cls, e in self._by_type.items()}

    def immutable_types(self) -> tuple[type, ...]:
        """Registered classes whose values are immutable (tuple/frozenset only if shallow)."""
        return tuple(dict.fromkeys(e.cls for e in self._by_id.values() if not e.mutable))

    def mutable_types(self) -> tuple[type, ...]:
        """Registered classes whose values need ``with storage:`` to be read."""
        return tuple(dict.fromkeys(e.cls for e in self._by_id.values() if e.mutable))

    # ------------------------------------------------------------------ dispatch

    def _lookup(self, cls: type) -> tuple[list[Registration], Registration | None]:
        found = self._resolved.get(cls)
        if found is None:
            conditional: list[Registration] = []
            plain: Registration | None = None
            for base in cls.__mro__:
                conditional.extend(self._conditional.get(base, ()))
                if plain is None:
                    plain = self._by_type.get(base)
            found = self._resolved[cls] = (conditional, plain)
        return found

    def _resolve(self, value: Any) -> tuple[Registration, Any]:
        """The registration that encodes ``value``, and the value it encodes.

        The exact class's registration wins.  Otherwise a numpy scalar becomes its
        plain Python value (``float64`` -> float); a subclass of a built-in container
        is refused; any other subclass uses its nearest registered base (a subclass
        of a built-in scalar is then kept as the plain value: see :meth:`finish`).
        """
        cls = type(value)
        conditional, plain = self._lookup(cls)
        for entry in conditional:
            if entry.predicate(value):  # type: ignore[misc]
                return entry, value
        if plain is not None and plain.cls is cls:
            if cls is _dt.datetime and zoned(value):
                value = fixed_offset(value)
            return plain, value
        item = numpy_item(value)
        if item is not NO_ITEM:
            return self._resolve(item)
        if isinstance(value, _dt.datetime) and zoned(value):
            return self._resolve(fixed_offset(value))
        if plain is None:
            raise UnsupportedTypeError(
                f"cannot encode a value of type {qualname(value)}: no codec is registered "
                "for it (see Codec.register)"
            )
        if plain.builtin and isinstance(value, CONTAINER_BASES):
            raise UnsupportedTypeError(
                f"cannot encode a value of type {qualname(value)}: {subclass_refusal(value)}"
            )
        return plain, value

    # ------------------------------------------------------------------ encode/decode

    def encode_raw(self, value: Any) -> tuple[int, bytes]:
        """Return ``(type_id, json_bytes)`` for ``value``; raises if it cannot round-trip."""
        entry, value = self._resolve(value)
        return entry.type_id, self._encode_with(entry, value, self.vigilant)

    def encode(self, value: Any) -> bytes:
        """Return the stored form of ``value``: its type-id byte followed by JSON.

        Raises :class:`~appendmuch.errors.UnsupportedTypeError` (a TypeError) when the
        value cannot be encoded and :class:`~appendmuch.errors.RoundTripError` (a
        ValueError) when, in vigilant mode, it would not decode to an equal value.
        """
        entry, value = self._resolve(value)
        return bytes((entry.type_id,)) + self._encode_with(entry, value, self.vigilant)

    def prepare(self, value: Any) -> tuple[bytes, bool, Any, bool]:
        """Encode ``value`` for storing: ``(stored bytes, mutable, object to keep,
        exact)``.

        The object to keep is what a reopen would decode: in vigilant mode the object
        the round-trip check decoded; without the check ``value`` itself when immutable
        (a subclass of a built-in scalar decoded to the plain value), else a deep copy.
        ``exact`` says whether decoding the stored bytes gives back that object again
        (see :meth:`finish`).  Raises like :meth:`encode`.
        """
        fast = self.fast_encoders.get(type(value))
        if fast is not None:
            try:
                return fast(value), False, value, True
            except (TypeError, ValueError) as exc:
                raise UnsupportedTypeError(
                    f"cannot encode a value of type {qualname(value)}: {exc}"
                ) from exc
        encoded = self.encode_unverified(value)
        kept, exact = self.finish(encoded)
        return encoded.data, encoded.mutable, kept, exact

    def encode_unverified(self, value: Any) -> Encoded:
        """First half of :meth:`prepare`: the encoding, without the round-trip check.

        Used to compare a working copy with its stored encoding before paying for the
        check; :meth:`finish` completes it.
        """
        entry, value = self._resolve(value)
        raw: bytes | None = None
        plain = False
        if entry.type_id in PLAIN_IDS and entry.cls is type(value):
            try:
                raw = PLAIN_ENCODERS[entry.cls](value)
                plain = True
            except TypeError:
                raw = None
        if raw is None:
            raw = self._encode_with(entry, value, False)
        mutable = entry.mutable or (
            isinstance(value, _CONTAINERS_OF_VALUES) and self.is_mutable(value)
        )
        return Encoded(bytes((entry.type_id,)) + raw, value, entry, plain, mutable)

    def finish(self, encoded: Encoded) -> tuple[Any, bool]:
        """Second half of :meth:`prepare`: run the round-trip check (vigilant mode) and
        return the object to keep in the cache, and whether it is *exact*: decoding
        the stored bytes gives back an identical object (same types at every depth).

        A value the check skipped (``vigilant=False``, ``vigilant_skip``) is kept as
        assigned, so it may not be: a UUID inside a list comes back as its string.
        The log keeps an older version of such a value as the object, never as bytes,
        so that every version of a field reads back alike within a session.
        """
        value, entry = encoded.value, encoded.entry
        raw = encoded.data[1:]
        if _exact_by_construction(entry, value):
            return (_deepcopy(value) if encoded.mutable else value), True
        if self.vigilant and not self._skipped(value):
            # keep what was decoded: exactly what a reopened Store will read
            return self._round_trip(entry, value, raw), True
        if entry.builtin and type(value) is not entry.cls:
            # a subclass of a built-in scalar (str enum, IntEnum, ...): keep the plain value
            try:
                return entry.decoder(raw), True
            except Exception as exc:
                raise RoundTripError(
                    f"a value of type {qualname(value)} does not survive the round trip: "
                    f"its encoding cannot be decoded ({exc})"
                ) from exc
        kept = _deepcopy(value) if encoded.mutable else value
        try:
            back = entry.decoder(raw)
        except Exception:
            return kept, False
        return kept, identical(back, kept)

    def _encode_with(self, entry: Registration, value: Any, verify: bool) -> bytes:
        try:
            raw = entry.encoder(value)
        except (TypeError, ValueError, OverflowError) as exc:
            # orjson reports what its ``default`` (_member) refused as the cause
            detail = exc.__cause__ if isinstance(exc.__cause__, TypeError) else exc
            raise UnsupportedTypeError(
                f"cannot encode a value of type {qualname(value)}: {detail}"
            ) from exc
        if not isinstance(raw, bytes):
            raise TypeError(
                f"the encoder for {entry.cls.__qualname__} returned {type(raw).__name__}, not bytes"
            )
        if verify:
            self._check_round_trip(entry, value, raw)
        return raw

    def _check_round_trip(self, entry: Registration, value: Any, raw: bytes) -> None:
        if self._needs_check(entry, value):
            self._round_trip(entry, value, raw)

    def _needs_check(self, entry: Registration, value: Any) -> bool:
        """Whether the vigilant round-trip check can tell anything about ``value``."""
        return not _exact_by_construction(entry, value) and not self._skipped(value)

    def _skipped(self, value: Any) -> bool:
        """Whether ``vigilant_skip`` exempts ``value`` from the round-trip check."""
        skip = self.vigilant_skip
        return skip is not None and bool(skip(value))

    def _round_trip(self, entry: Registration, value: Any, raw: bytes) -> Any:
        """Decode ``raw`` and compare with ``value``; return the decoded object."""
        try:
            back = entry.decoder(raw)
        except Exception as exc:
            raise RoundTripError(
                f"a value of type {qualname(value)} does not survive the round trip: "
                f"its encoding cannot be decoded ({exc})"
            ) from exc
        same = entry.equal(back, value) if entry.equal else _equal(back, value)
        if not same:
            hint = ""
            if type(value).__eq__ is object.__eq__:  # type: ignore[comparison-overlap]
                hint = " (the type defines no __eq__; define one or set Codec.vigilant_skip)"
            raise RoundTripError(
                f"a value of type {qualname(value)} does not survive the round trip: "
                f"{_difference(value, back)}{hint}"
            )
        return back

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode stored bytes (type-id byte + JSON) back into a value.

        Raises :class:`~appendmuch.errors.DecodeError` (a ValueError) for an empty
        value, an unknown type id or a document that does not fit its type.
        """
        if not data:
            raise DecodeError("cannot decode an empty value (no type-id byte)")
        entry = self._by_id.get(data[0])
        if entry is None:
            raise UnknownTypeIdError(
                f"unknown type id {data[0]}: no codec registration decodes it (see Codec.register)"
            )
        try:
            return entry.decoder(bytes(data[1:]))
        except Exception as exc:
            raise DecodeError(
                f"malformed {entry.cls.__qualname__} (type id {entry.type_id}): {exc}"
            ) from exc

    # ------------------------------------------------------------------ mutability

    def is_mutable(self, value: Any) -> bool:
        """True when reading ``value`` from a Storage needs ``with storage:``.

        Tuples and frozensets count as mutable when any member is.
        """
        cls = type(value)
        if cls in self._atoms:
            return False
        if isinstance(value, _CONTAINERS_OF_VALUES):
            conditional, _ = self._lookup(cls)
            for entry in conditional:
                if entry.predicate(value):  # type: ignore[misc]
                    return entry.mutable
            return any(self.is_mutable(member) for member in value)
        conditional, plain = self._lookup(cls)
        for entry in conditional:
            if entry.predicate(value):  # type: ignore[misc]
                return entry.mutable
        return plain.mutable if plain is not None else True

    def knows(self, type_id: int) -> bool:
        """True if values stored with ``type_id`` can be decoded by this codec."""
        return type_id in self._by_id

    def decodes_builtin_scalars(self) -> bool:
        """True while type ids 0 (int) and 2 (str) decode as the built-in types."""
        return self._by_id.get(0) is BUILTINS[0] and self._by_id.get(2) is BUILTINS[2]


def _exact_by_construction(entry: Registration, value: Any) -> bool:
    """Whether ``value`` decodes back identically whatever it holds: a type whose
    round trip is exact, or a float (finite: the encoder refuses others)."""
    return (entry.exact and type(value) is entry.cls) or type(value) is float


def identical(a: Any, b: Any) -> bool:
    """``a == b`` with the same types at every depth (a list member that is a UUID
    in one and a str in the other, or an IntEnum and an int, differ).  O(size).

    >>> identical([1, {"a": (2, 3)}], [1, {"a": (2, 3)}]), identical([1], [True])
    (True, False)
    """
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(map(identical, a, b))
    if kind is dict:
        if len(a) != len(b):
            return False
        for key, value in a.items():
            if key not in b:
                return False
            other_key = next(k for k in b if k == key) if type(key) is not str else key
            if not identical(key, other_key) or not identical(value, b[key]):
                return False
        return True
    if kind is set or kind is frozenset:
        if len(a) != len(b):
            return False
        members = {member: member for member in b}
        return all(member in members and identical(member, members[member]) for member in a)
    return _equal(a, b)


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _difference(value: Any, back: Any) -> str:
    """Say where ``back`` (the decoded value) first differs from ``value``."""
    path, a, b = _first_difference(value, back, "")
    where = f"at {path}, " if path else ""
    return f"{where}{_around(a, b)} would be read back as {_around(b, a)}"


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any]:
    """The path (``[1]['k']``) and the two parts where ``a`` and ``b`` first differ."""
    if type(a) is type(b):
        if isinstance(a, list | tuple) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                if not _equal(x, y):
                    return _first_difference(x, y, f"{path}[{i}]")
        elif isinstance(a, dict) and a.keys() == b.keys():
            for key in a:
                if not _equal(a[key], b[key]):
                    return _first_difference(a[key], b[key], f"{path}[{key!r}]")
    return path, a, b


def _around(value: Any, other: Any) -> str:
    """``repr(value)`` with its type, cut around where it differs from ``repr(other)``."""
    text, versus = repr(value), repr(other)
    if len(text) > 120:
        start = 0
        while start < min(len(text), len(versus)) and text[start] == versus[start]:
            start += 1
        begin = max(0, start - 40)
        end = begin + 100
        text = ("..." if begin else "") + text[begin:end] + ("..." if end < len(text) else "")
    return f"{text} ({type(value).__name__})"
