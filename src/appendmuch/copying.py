"""Deep copies that never share mutable state with the original."""

from __future__ import annotations

import copy
import datetime as _dt
import pickle
import uuid
from decimal import Decimal
from typing import Any, TypeVar, cast

__all__ = ["ATOM_TYPES", "safe_deepcopy"]

T = TypeVar("T")

#: Immutable built-ins that hold no other values: returned as they are, never copied.
ATOM_TYPES: frozenset[type] = frozenset(
    {
        int,
        float,
        str,
        bytes,
        bool,
        complex,
        type(None),
        Decimal,
        _dt.date,
        _dt.time,
        _dt.datetime,
        uuid.UUID,
    }
)
#: containers at least this long are copied by pickling, which runs in C
_PICKLE_FROM = 48


def safe_deepcopy(value: T) -> T:
    """Return a deep copy of ``value`` that shares no mutable object with it.

    Immutable leaves (numbers, strings, bytes, dates, UUIDs, and tuples/frozensets of
    them) are returned as they are.  Large containers are copied through pickle (C
    speed, exact types kept); anything pickle refuses falls back to ``copy.deepcopy``.

    >>> a = {"k": [1, 2]}
    >>> b = safe_deepcopy(a)
    >>> b == a, b["k"] is a["k"]
    (True, False)
    """
    return cast(T, _copy(value))


def _copy(value: Any) -> Any:
    cls = type(value)
    if cls in ATOM_TYPES:
        return value
    if cls is list:
        if len(value) < _PICKLE_FROM:
            return [v if type(v) in ATOM_TYPES else _copy(v) for v in value]
    elif cls is dict:
        if len(value) < _PICKLE_FROM:
            return {k: (v if type(v) in ATOM_TYPES else _copy(v)) for k, v in value.items()}
    elif cls is tuple or cls is frozenset:
        copied = [v if type(v) in ATOM_TYPES else _copy(v) for v in value]
        if all(a is b for a, b in zip(copied, value, strict=True)):
            return value
        return cls(copied)
    elif cls is set:
        return set(value)  # members are hashable JSON scalars here
    elif cls is bytearray:
        return bytearray(value)
    try:
        return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return copy.deepcopy(value)
