"""The in-memory history of one field, stored column-wise.

A :class:`FieldLog` is what ``store.cache[...][field]`` holds: a read-only sequence of
:class:`~appendmuch.value.Value` sorted by ``seq``.  Internally it keeps parallel
columns (``seqs`` and ``times`` as C arrays, data and context interleaved in one
list) instead of one object per entry: about 32 bytes per entry plus the data, and
``Value`` objects are only built when someone asks for them.

Latest-value reads, appends and ``seq`` lookups never walk the history:

========================  ==========
operation                 cost
========================  ==========
``append``                O(1) amortised
latest data               O(1)
``log[i]``                O(1)
position before a seq     O(log n)
========================  ==========
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from .copying import safe_deepcopy
from .value import Value, make_value

if TYPE_CHECKING:
    from .timeline import ValueRuns

__all__ = ["GONE", "FieldLog"]


class _Gone:
    """Marker stored in place of the data of a tombstone."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "GONE"


#: The data slot of a tombstone (deleted field).
GONE: Any = _Gone()
_NAN = math.nan
_SCALARS = frozenset({int, float, str, bool, type(None), bytes})


class FieldLog(Sequence[Value]):
    """All entries of one field of one namespace, oldest first.

    Supports ``len``, iteration, indexing, slicing (a list of Values) and
    ``bisect`` with ``key=``.  Values carry copies of mutable data, so changing them
    never changes the log.

    >>> log = FieldLog()
    >>> log.append(1, 1700000000.0, 10, "__main__.<module>:1")
    >>> log.append(4, 1700000001.0, GONE, "__main__.<module>:2")
    >>> len(log), log[0].data, log[-1].unavailable
    (2, 10, True)
    >>> import bisect
    >>> bisect.bisect_left(log, 4, key=lambda v: v.seq)
    1
    """

    __slots__ = ("items", "runs", "seqs", "times")

    def __init__(self) -> None:
        self.seqs = array("q")
        self.times = array("d")
        #: data and context interleaved: [data0, ctx0, data1, ctx1, ...]
        self.items: list[Any] = []
        #: per-value run index for temporal queries, built on first use
        self.runs: ValueRuns | None = None

    # ------------------------------------------------------------------ writing

    def append(self, seq: int, time: float | None, data: Any, context: str) -> None:
        """Add an entry (``data`` is :data:`GONE` for a tombstone).  O(1) amortised."""
        self.seqs.append(seq)
        self.times.append(_NAN if time is None else time)
        items = self.items
        items.append(data)
        items.append(context)
        runs = self.runs
        if runs is not None:
            runs.add(self, len(self.seqs) - 1)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self.seqs)

    @overload
    def __getitem__(self, index: int) -> Value: ...

    @overload
    def __getitem__(self, index: slice) -> list[Value]: ...

    def __getitem__(self, index: int | slice) -> Value | list[Value]:
        if isinstance(index, slice):
            return [self._value(i) for i in range(*index.indices(len(self.seqs)))]
        n = len(self.seqs)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("FieldLog index out of range")
        return self._value(index)

    def __iter__(self) -> Iterator[Value]:
        for i in range(len(self.seqs)):
            yield self._value(i)

    def __reversed__(self) -> Iterator[Value]:
        for i in range(len(self.seqs) - 1, -1, -1):
            yield self._value(i)

    def __repr__(self) -> str:
        return f"FieldLog({list(self)!r})"

    def _value(self, i: int) -> Value:
        t: float | None = self.times[i]
        if t != t:  # noqa: PLR0124 - NaN stands for a missing time
            t = None
        data = self.items[2 * i]
        if data is GONE:
            return make_value(t, True, None, self.items[2 * i + 1], self.seqs[i])
        if type(data) not in _SCALARS:
            data = safe_deepcopy(data)  # a Value handed out never aliases the log
        return make_value(t, False, data, self.items[2 * i + 1], self.seqs[i])

    def values_until(self, seq: int) -> tuple[Value, ...]:
        """The entries with ``seq <= seq`` as a tuple (a history snapshot).  O(k + log n)."""
        return tuple(self._value(i) for i in range(bisect_left(self.seqs, seq + 1)))

    @property
    def latest(self) -> Any:
        """Data of the newest entry (:data:`GONE` when it is a tombstone).  O(1)."""
        return self.items[-2]

    @property
    def latest_seq(self) -> int:
        """``seq`` of the newest entry.  O(1)."""
        return self.seqs[-1]

    def data_at(self, position: int) -> Any:
        """Data of the entry at ``position`` (GONE for tombstones)."""
        return self.items[2 * position]

    def position_before(self, seq: int) -> int:
        """Position of the newest entry with a seq below ``seq``; -1 if none.  O(log n)."""
        return bisect_left(self.seqs, seq) - 1
