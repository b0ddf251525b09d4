"""The in-memory history of one field, stored column-wise.

A :class:`FieldLog` is what ``store.cache[...][field]`` holds: a read-only sequence of
:class:`~appendmuch.value.Value` sorted by ``seq``.  Internally it keeps parallel
columns (``seqs`` and ``times`` as C arrays, data and context interleaved in one
list) instead of one object per entry: about 32 bytes per entry plus the data, and
``Value`` objects are only built when someone asks for them.

Numbers, strings, bytes, dates and the other atoms are kept as objects in every
entry.  Any other value (a list, dict, set, tuple, a registered type) is kept as an
object only while it is the field's latest entry; when a newer entry arrives it is
replaced by its stored bytes (:class:`Packed`) and decoded again whenever an older
entry is read.  Decoding gives a fresh object, equal in type and value to what a
reopen gives, so nothing handed out is shared with the log.

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
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from .copying import ATOM_TYPES, safe_deepcopy
from .value import Value, make_value

if TYPE_CHECKING:
    from .timeline import ValueRuns

__all__ = ["GONE", "KEPT_DECODED", "PROVISIONAL", "FieldLog", "Packed", "Unreadable"]

Decode = Callable[[bytes], Any]


class _Gone:
    """Marker stored in place of the data of a tombstone."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "GONE"


#: The data slot of a tombstone (deleted field).
GONE: Any = _Gone()
_NAN = math.nan
_SCALARS = frozenset({int, float, str, bool, type(None), bytes})
#: types kept as objects in every entry: immutable atoms, about as small as their bytes
KEPT_DECODED: frozenset[type] = ATOM_TYPES


class Packed(bytes):
    """The stored bytes (type-id byte + JSON) of an older entry, decoded on demand."""

    __slots__ = ()


class Unreadable(bytes):
    """The stored bytes of a value whose type id this process's codec does not know
    (another writer registered the type): kept as they are, so that the rest of the
    log reads on; reading the value itself decodes them and raises the codec's
    ``UnknownTypeIdError``."""

    __slots__ = ()


#: seqs from here on are *provisional*: an own shared-mode write not committed yet,
#: at the end of its field's log until its final seq replaces it (no table holds one)
PROVISIONAL = 1 << 62


_default_decode: Decode | None = None


def _decoder() -> Decode:
    """``Codec().decode``, for logs made without a Store (built-in types only)."""
    global _default_decode
    if _default_decode is None:
        from .codec import Codec

        _default_decode = Codec().decode
    return _default_decode


class _Recent:
    """A small cache of decoded packed entries, for queries that compare the same old
    entries again and again (contexts on lists or dicts).  Its objects are compared,
    never handed out.  Emptied whenever the bytes it holds would pass ``LIMIT``
    (simpler than LRU, and safe when several threads read)."""

    __slots__ = ("decoded", "size")

    LIMIT = 1 << 20

    def __init__(self) -> None:
        self.decoded: dict[tuple[Decode, bytes], Any] = {}
        self.size = 0

    def get(self, packed: Packed, decode: Decode) -> Any:
        decoded = self.decoded
        key = (decode, packed)  # one codec's bytes may mean another thing to another
        data = decoded.get(key, decoded)
        if data is decoded:
            data = decode(packed)
            if self.size + len(packed) > self.LIMIT:
                decoded.clear()
                self.size = 0
            if len(packed) <= self.LIMIT // 4:
                decoded[key] = data
                self.size += len(packed)
        return data


_recent = _Recent()


class FieldLog(Sequence[Value]):
    """All entries of one field of one namespace, oldest first.

    Supports ``len``, iteration, indexing, slicing (a list of Values) and
    ``bisect`` with ``key=``.  Values carry copies of mutable data, so changing them
    never changes the log.  ``decode`` turns the stored bytes of older entries back
    into values (the Store passes its codec's).

    >>> log = FieldLog()
    >>> log.append(1, 1700000000.0, 10, "__main__.<module>:1")
    >>> log.append(4, 1700000001.0, GONE, "__main__.<module>:2")
    >>> len(log), log[0].data, log[-1].unavailable
    (2, 10, True)
    >>> import bisect
    >>> bisect.bisect_left(log, 4, key=lambda v: v.seq)
    1
    """

    __slots__ = ("decode", "items", "raw", "runs", "seqs", "times")

    def __init__(self, decode: Decode | None = None) -> None:
        self.seqs = array("q")
        self.times = array("d")
        #: data and context interleaved: [data0, ctx0, data1, ctx1, ...]; the data of
        #: an entry older than the latest is a Packed unless its type is KEPT_DECODED
        self.items: list[Any] = []
        #: per-value run index for temporal queries, built on first use
        self.runs: ValueRuns | None = None
        #: stored bytes of the latest entry while it must be packed when superseded
        self.raw: bytes | None = None
        self.decode: Decode = decode if decode is not None else _decoder()

    # ------------------------------------------------------------------ writing

    def append(
        self, seq: int, time: float | None, data: Any, context: str, raw: bytes | None = None
    ) -> None:
        """Add an entry (``data`` is :data:`GONE` for a tombstone).  O(1) amortised.

        ``data`` becomes the log's own object (the caller must not keep it); ``raw``
        is its stored bytes, which replace it once a newer entry arrives (without
        them a value that is not :data:`KEPT_DECODED` stays an object for good).
        """
        # data first, with its context in one step, the seq last: cut short anywhere,
        # no seq is ever paired with another entry's data (see repair())
        items = self.items
        items.extend((data, context))
        self.times.append(_NAN if time is None else time)
        self.seqs.append(seq)
        if self.raw is not None:
            # after the append, so that the latest entry is never seen packed
            items[-4] = Packed(self.raw)
        self.raw = raw if data.__class__ not in KEPT_DECODED and data is not GONE else None
        runs = self.runs
        if runs is not None:
            runs.add(self, len(self.seqs) - 1)

    def extend(
        self,
        seqs: Sequence[int],
        times: Sequence[float],
        data: Sequence[Any],
        contexts: Sequence[str],
        raws: Sequence[bytes | None],
    ) -> None:
        """Add several entries (parallel columns, seqs increasing, times never None),
        as that many :meth:`append` calls would.  O(k) amortised, in a few C-level
        steps rather than one call per entry: the follower of a shared-mode Store
        takes in every other process's rows this way.

        A reader that does not lock never sees a new seq paired with old data (the
        data column grows first) nor the latest entry packed.

        >>> log = FieldLog()
        >>> log.extend([1, 2], [1700000000.0, 1700000001.0], [[1], [2]], ["a:1", "a:1"],
        ...            [b"\\x80[1]", b"\\x80[2]"])
        >>> [v.data for v in log], type(log.items[0]).__name__
        ([[1], [2]], 'Packed')
        """
        count = len(seqs)
        if not count:
            return
        # the columns are checked (built) before the log changes: a bad time or seq
        # raises with the log as it was
        new_seqs = array("q", seqs)
        new_times = array("d", times)
        if not len(new_times) == len(data) == len(contexts) == len(raws) == count:
            raise ValueError("FieldLog.extend: columns of different lengths")
        items = self.items
        start = len(self.seqs)
        grown: list[Any] = [None] * (2 * count)
        grown[0::2] = data
        grown[1::2] = contexts
        items.extend(grown)
        self.times.extend(new_times)
        self.seqs.extend(new_seqs)
        # superseded entries that are not kept decoded become their stored bytes
        # (after the append, as in append())
        if self.raw is not None:
            items[2 * start - 2] = Packed(self.raw)
        kept = KEPT_DECODED
        for i in range(count - 1):
            value = data[i]
            if value.__class__ not in kept and value is not GONE:
                raw = raws[i]
                if raw is not None:
                    items[2 * (start + i)] = Packed(raw)
        last = data[-1]
        self.raw = raws[-1] if last.__class__ not in kept and last is not GONE else None
        runs = self.runs
        if runs is not None:
            for position in range(start, start + count):
                runs.add(self, position)

    def repair(self) -> int:
        """Cut the columns back to the entries complete in all of them (an append cut
        short leaves the data column, at most, one entry longer); the count.  O(1)."""
        count = min(len(self.items) // 2, len(self.times), len(self.seqs))
        del self.items[2 * count :]
        del self.times[count:]
        del self.seqs[count:]
        self.runs = None  # (rebuilt on next use)
        return count

    def insert_committed(
        self, seq: int, time: float | None, data: Any, context: str, raw: bytes | None
    ) -> None:
        """Add an entry committed by another writer.  It goes before this process's
        provisional entries (own writes not committed yet, which will be committed
        after it), else at the end.  O(1), or O(provisional entries) before them.

        >>> log = FieldLog()
        >>> log.append(PROVISIONAL + 1, 2.0, "mine", "a:1")
        >>> log.insert_committed(7, 1.0, "theirs", "b:1", None)
        >>> [v.data for v in log], log.latest
        (['theirs', 'mine'], 'mine')
        """
        seqs = self.seqs
        if not seqs or seqs[-1] < PROVISIONAL:
            self.append(seq, time, data, context, raw)
            return
        at = bisect_left(seqs, PROVISIONAL)
        kept = data
        if data.__class__ not in KEPT_DECODED and data is not GONE and raw is not None:
            kept = Packed(raw)  # never the latest entry: kept as its stored bytes
        # One slice assignment: a reader of the latest entry (items[-2]) never sees
        # the list shifted by half an entry.
        self.items[2 * at : 2 * at] = [kept, context]
        self.times.insert(at, _NAN if time is None else time)
        seqs.insert(at, seq)
        self.runs = None  # positions moved (rebuilt on next use)

    def settle(self, provisional: int, final: int) -> None:
        """A provisional entry was committed under ``final`` (larger than every
        committed seq in the log, smaller than the provisional ones).  O(log n)."""
        seqs = self.seqs
        at = bisect_left(seqs, provisional)
        if at < len(seqs) and seqs[at] == provisional:
            seqs[at] = final

    @property
    def committed_seq(self) -> int | None:
        """The seq of the newest committed entry (None if only provisional ones).
        O(1), or O(log n) with provisional entries."""
        seqs = self.seqs
        if not seqs:
            return None
        if seqs[-1] < PROVISIONAL:
            return seqs[-1]
        at = bisect_left(seqs, PROVISIONAL)
        return seqs[at - 1] if at else None

    def mend(
        self, seq: int, time: float | None, data: Any, context: str, raw: bytes | None
    ) -> None:
        """End the log with this entry after an :meth:`append` of it was cut short
        anywhere (an interrupt): columns of different lengths are cut back to the
        entries complete in all of them, and the entry is appended unless it is there.
        Idempotent.  O(1) amortised (the temporal index is rebuilt on next use)."""
        count = self.repair()
        if count and self.seqs[count - 1] == seq:
            self.raw = raw if data.__class__ not in KEPT_DECODED and data is not GONE else None
        else:
            self.append(seq, time, data, context, raw)

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
            data = self._private(data)
        return make_value(t, False, data, self.items[2 * i + 1], self.seqs[i])

    def _private(self, data: Any) -> Any:
        """A copy of an entry's data that shares nothing with the log."""
        if data.__class__ is Packed or data.__class__ is Unreadable:
            return self.decode(data)  # decoding makes a new object (or raises)
        return safe_deepcopy(data)

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
        """Data of the entry at ``position`` (GONE for tombstones), for comparing only:
        it may be the log's own object or a cached one, so never hand it out."""
        data = self.items[2 * position]
        if data.__class__ is Packed:
            return _recent.get(data, self.decode)
        return data

    def value_at(self, position: int) -> Any:
        """Data of the entry at ``position`` as a private copy (GONE for tombstones)."""
        data = self.items[2 * position]
        if data.__class__ in _SCALARS or data is GONE:
            return data
        return self._private(data)

    def position_before(self, seq: int) -> int:
        """Position of the newest entry with a seq below ``seq``; -1 if none.  O(log n)."""
        return bisect_left(self.seqs, seq) - 1
