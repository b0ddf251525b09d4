"""Where a context held: per-value runs of one field and their intersections.

A context ``{f1: v1, ...}`` holds at a point of the log when every ``fi`` is
available with a value equal to ``vi``.  For one field and one value, the stretches
where it holds are the *runs* of consecutive writes equal to that value, each lasting
until the next write of the field.  :class:`ValueRuns` keeps, per distinct value, the
positions where its runs start and end; it is built the first time a field is used
in a context and then kept current on every append, so no query scans the history.

=====================================  ======================================
operation                              cost (n entries, r runs of the value)
=====================================  ======================================
keep the index current on append       O(1)
most recent stretch, one field         O(1)
most recent stretch, k fields          O(k log r) per step, usually one step
every stretch, k fields                O(total runs)
=====================================  ======================================

Values that cannot be hashed (lists, dicts) are not indexed; a query for such a
value compares every entry of that one field (older entries decoded from their stored
bytes, through a small cache of recently decoded entries).
"""

from __future__ import annotations

import sys
from typing import Any

from .fieldlog import GONE, FieldLog, Packed

__all__ = ["END", "Cond", "ValueRuns", "all_stretches", "latest_stretch", "runs_of"]

#: seq bound of a stretch that still holds now
END = sys.maxsize

#: one context field: its log and the flat run list [start0, end0, start1, end1, ...]
Cond = tuple[FieldLog, list[int]]


class ValueRuns:
    """value -> flat list ``[start0, end0, start1, end1, ...]`` of positions (inclusive)."""

    __slots__ = ("by_value",)

    def __init__(self) -> None:
        self.by_value: dict[Any, list[int]] = {}

    @classmethod
    def build(cls, log: FieldLog) -> ValueRuns:
        """Index every entry of ``log``.  O(n)."""
        runs = cls()
        for position in range(len(log)):
            runs.add(log, position)
        return runs

    def add(self, log: FieldLog, position: int) -> None:
        """Account for the entry just appended at ``position``.  O(1)."""
        data = log.items[2 * position]
        if data is GONE:
            return  # a tombstone ends every run
        if data.__class__ is Packed:
            data = log.data_at(position)
        try:
            flat = self.by_value.get(data)
        except TypeError:
            return  # unhashable: found by scanning instead
        if flat is None:
            self.by_value[data] = [position, position]
        elif flat[-1] == position - 1:
            flat[-1] = position  # the previous write had an equal value: same run
        else:
            flat.append(position)
            flat.append(position)


def runs_of(log: FieldLog, value: Any) -> list[int]:
    """The runs of ``log`` whose value equals ``value``, as a flat position list."""
    runs = log.runs
    if runs is None:
        runs = log.runs = ValueRuns.build(log)
    try:
        return runs.by_value.get(value, [])
    except TypeError:
        return _scan(log, value)


def _scan(log: FieldLog, value: Any) -> list[int]:
    flat: list[int] = []
    data_at = log.data_at
    for position in range(len(log)):
        data = data_at(position)
        if data is not GONE and _equal(data, value):
            if flat and flat[-1] == position - 1:
                flat[-1] = position
            else:
                flat.append(position)
                flat.append(position)
    return flat


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _bounds(log: FieldLog, flat: list[int], run: int) -> tuple[int, int]:
    """Seq interval ``[start, end)`` of run number ``run``."""
    seqs = log.seqs
    after = flat[2 * run + 1] + 1
    return seqs[flat[2 * run]], (seqs[after] if after < len(seqs) else END)


def _last_run_starting_before(log: FieldLog, flat: list[int], hi_run: int, seq: int) -> int:
    """Largest run number <= hi_run whose start seq is below ``seq``; -1 if none."""
    seqs = log.seqs
    lo, hi = 0, hi_run + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if seqs[flat[2 * mid]] < seq:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


def latest_stretch(conds: list[Cond]) -> tuple[int, int] | None:
    """Seq interval ``[start, end)`` of the most recent stretch where all conds hold.

    ``None`` if they never held together.  An empty context holds everywhere.
    """
    if not conds:
        return 0, END
    current = [len(flat) // 2 - 1 for _, flat in conds]
    while True:
        lo, hi = 0, END
        bounds: list[tuple[int, int]] = []
        for (log, flat), run in zip(conds, current, strict=True):
            if run < 0:
                return None
            a, b = _bounds(log, flat, run)
            bounds.append((a, b))
            lo = max(lo, a)
            hi = min(hi, b)
        if lo < hi:
            return lo, hi
        # Runs starting at or after the earliest end cannot meet it: step them back.
        for i, (a, _) in enumerate(bounds):
            if a >= hi:
                log, flat = conds[i]
                current[i] = _last_run_starting_before(log, flat, current[i], hi)


def all_stretches(conds: list[Cond]) -> list[tuple[int, int]]:
    """Every stretch where all conds hold, oldest first.  O(total runs)."""
    if not conds:
        return [(0, END)]
    result: list[tuple[int, int]] | None = None
    for log, flat in conds:
        intervals = [_bounds(log, flat, run) for run in range(len(flat) // 2)]
        result = intervals if result is None else _intersect(result, intervals)
        if not result:
            return []
    return result or []


def _intersect(xs: list[tuple[int, int]], ys: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        lo = max(xs[i][0], ys[j][0])
        hi = min(xs[i][1], ys[j][1])
        if lo < hi:
            out.append((lo, hi))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out
