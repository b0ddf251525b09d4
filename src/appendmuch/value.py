"""The :class:`Value` record: one entry of a field's history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Value"]


@dataclass(frozen=True, slots=True)
class Value:
    """One log entry: when it was written, whether it is a tombstone, the data, where from.

    ``time`` is informational (wall clock); ordering is by ``seq``.  Tombstones have
    ``unavailable=True`` and ``data=None``.  Construction validates the field types.

    >>> v = Value(1.5, False, 10, "__main__.<module>:3", seq=7)
    >>> v.data, v.seq
    (10, 7)
    >>> Value(seq="x")
    Traceback (most recent call last):
    ...
    TypeError: Value.seq must be an int, got 'x' (str)
    """

    time: float | None = None
    unavailable: bool = True
    data: Any = None
    context: str = ""
    seq: int = 0

    def __post_init__(self) -> None:
        t = self.time
        if t is not None and (type(t) is bool or not isinstance(t, int | float)):
            raise TypeError(f"Value.time must be a float or None, got {_show(t)}")
        if type(self.unavailable) is not bool:
            raise TypeError(f"Value.unavailable must be a bool, got {_show(self.unavailable)}")
        if not isinstance(self.context, str):
            raise TypeError(f"Value.context must be a str, got {_show(self.context)}")
        if type(self.seq) is bool or not isinstance(self.seq, int):
            raise TypeError(f"Value.seq must be an int, got {_show(self.seq)}")


def _show(x: object) -> str:
    return f"{x!r} ({type(x).__name__})"


_new = object.__new__
# The slot descriptors' setters bypass the frozen __setattr__ (and validation).
_slots = vars(Value)
_set_time = _slots["time"].__set__
_set_unavailable = _slots["unavailable"].__set__
_set_data = _slots["data"].__set__
_set_context = _slots["context"].__set__
_set_seq = _slots["seq"].__set__


def make_value(time: float | None, unavailable: bool, data: Any, context: str, seq: int) -> Value:
    """Build a Value from fields already known to be valid, skipping validation.

    The log materialises Values on demand; this keeps that path cheap.
    """
    v: Value = _new(Value)
    _set_time(v, time)
    _set_unavailable(v, unavailable)
    _set_data(v, data)
    _set_context(v, context)
    _set_seq(v, seq)
    return v
