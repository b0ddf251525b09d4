"""The log page: entries in seq order, filtered, a page at a time, without scanning the log.

Where the entries come from depends on the filters:

- no namespace or field filter: the index's seq-ordered arrays, from the cursor on;
- a namespace prefix and/or field that select at most :data:`MERGE_LIMIT` fields:
  those fields' own ``seqs`` columns, merged (a page costs O(fields x log n + page));
- more fields than that: the seq-ordered arrays again, skipping other fields' entries
  with a per-field mask.

Code location and time filters are checked entry by entry (time filters skip whole
blocks of the index whose times lie outside the range).  A page examines at most
``budget`` entries: when a rare filter has not filled the page by then, the page says
how far it searched and hands a cursor to go on from there, so no request scans the
whole log.  Pages are addressed by cursors (``after`` / ``before`` a seq), which stay
valid while rows are added.
"""

from __future__ import annotations

import heapq
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..rendering import iso_time
from .entries import Entry, entry_at
from .index import BLOCK, FieldRef, LogIndex
from .params import BadRequestError, NotFoundError

__all__ = ["MERGE_LIMIT", "SCAN_BUDGET", "LogFilter", "LogPage", "log_page", "matching_rows"]

#: at most this many fields selected: merge their columns instead of walking the log
#: (a page then costs a bisection per field: about 5 ms for 5,000 fields)
MERGE_LIMIT = 5000
#: entries a page examines at most before it returns what it found
SCAN_BUDGET = 200_000
_SHIFT = BLOCK.bit_length() - 1


@dataclass(frozen=True)
class LogFilter:
    """What the log page selects: a namespace and those below it, a field name, text
    in the code location, a time range (seconds since the epoch, both ends included)."""

    namespace: str | None = None
    field: str | None = None
    context: str | None = None
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise BadRequestError("the time range ends before it starts (from is after to)")

    @property
    def active(self) -> bool:
        """Anything is filtered."""
        return any(
            value is not None
            for value in (self.namespace, self.field, self.context, self.since, self.until)
        )

    def to_json(self) -> dict[str, Any]:
        """The filters as the API reports them."""
        return {
            "ns": self.namespace,
            "field": self.field,
            "context": self.context,
            "from": iso_time(self.since),
            "to": iso_time(self.until),
        }


class _Scan:
    """How far a walk got: entries examined, the last seq examined, the end reached."""

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.examined = 0
        self.last_seq: int | None = None
        self.ended = False

    def spent(self) -> bool:
        return self.budget is not None and self.examined >= self.budget


class _Selection:
    """The fields a filter's namespace and field name select (cached per filter)."""

    def __init__(self, fids: list[int] | None, size: int) -> None:
        self.fids = fids
        self.mask: bytearray | None = None
        if fids is not None and len(fids) > MERGE_LIMIT:
            self.mask = bytearray(size)
            for fid in fids:
                self.mask[fid] = 1


_cache: OrderedDict[tuple[int, str | None, str | None, int], _Selection] = OrderedDict()
_cache_lock = threading.Lock()


def _select(index: LogIndex, filt: LogFilter) -> _Selection:
    """The fields of the filter's namespace prefix and field name (all: ``fids`` None).
    O(fields selected); cached until a field is added to the log."""
    if filt.namespace is None and filt.field is None:
        return _Selection(None, 0)
    size = len(index.fields)
    key = (id(index), filt.namespace, filt.field, size)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    with index.lock:
        if filt.namespace is None:
            fids = list(index.by_name.get(filt.field or "", ()))
            if not fids:
                raise NotFoundError(f"no namespace has a field {filt.field!r}")
        else:
            names = index.namespaces_below(filt.namespace)
            if not names and filt.namespace not in index.nodes:
                raise NotFoundError(f"there is no namespace {filt.namespace!r} in the log")
            fids = []
            for dbns in names:
                fields = index.by_ns[dbns]
                if filt.field is None:
                    fids.extend(fields.values())
                elif filt.field in fields:
                    fids.append(fields[filt.field])
        selection = _Selection(sorted(fids), size)
    with _cache_lock:
        _cache[key] = selection
        while len(_cache) > 8:
            _cache.popitem(last=False)
    return selection


def _accept(filt: LogFilter, ref: FieldRef, position: int) -> bool:
    log = ref.log
    if filt.context is not None and filt.context not in log.items[2 * position + 1]:
        return False
    if filt.since is not None or filt.until is not None:
        stamp = log.times[position]
        if stamp != stamp:  # noqa: PLR0124 - an entry without a time
            return False
        if filt.since is not None and stamp < filt.since:
            return False
        if filt.until is not None and stamp > filt.until:
            return False
    return True


def _walk(
    index: LogIndex, filt: LogFilter, selection: _Selection, start: int, forward: bool, scan: _Scan
) -> Iterator[tuple[FieldRef, int]]:
    """Entries through the seq-ordered arrays from position ``start`` on (or back)."""
    seqs, fids, _fields = index.seqs, index.fids, index.fields
    end = len(seqs)
    mask = selection.mask
    timed = filt.since is not None or filt.until is not None
    since = -float("inf") if filt.since is None else filt.since
    until = float("inf") if filt.until is None else filt.until
    step = 1 if forward else -1
    position = start
    while 0 <= position < end:
        if scan.spent():
            return
        if timed:
            block = position >> _SHIFT
            if index.block_max[block] < since or index.block_min[block] > until:
                # the whole block is outside the time range
                position = (block + 1) * BLOCK if forward else block * BLOCK - 1
                scan.examined += 1
                continue
        fid = fids[position]
        scan.examined += 1
        scan.last_seq = seqs[position]
        if mask is None or mask[fid]:
            _seq, ref, at = index.row(position)
            if _accept(filt, ref, at):
                yield ref, at
        position += step
    scan.ended = True


def _merge(
    filt: LogFilter, refs: list[FieldRef], bound: int | None, forward: bool, scan: _Scan
) -> Iterator[tuple[FieldRef, int]]:
    """Entries of a few fields in seq order, after (or before) ``bound``, by merging
    their ``seqs`` columns."""
    heap: list[tuple[int, int, int]] = []
    for k, ref in enumerate(refs):
        seqs = ref.log.seqs
        count = len(seqs)
        if forward:
            at = 0 if bound is None else bisect_right(seqs, bound, 0, count)
            if at < count:
                heap.append((seqs[at], k, at))
        else:
            at = count - 1 if bound is None else bisect_left(seqs, bound, 0, count) - 1
            if at >= 0:
                heap.append((-seqs[at], k, at))
    heapq.heapify(heap)
    limits = [len(ref.log.seqs) for ref in refs]
    while heap:
        if scan.spent():
            return
        key, k, at = heap[0]
        ref = refs[k]
        scan.examined += 1
        scan.last_seq = abs(key)
        nxt = at + 1 if forward else at - 1
        if 0 <= nxt < limits[k]:
            seq = ref.log.seqs[nxt]
            heapq.heapreplace(heap, (seq if forward else -seq, k, nxt))
        else:
            heapq.heappop(heap)
        if _accept(filt, ref, at):
            yield ref, at
    scan.ended = True


def matching_rows(
    index: LogIndex,
    filt: LogFilter,
    *,
    after: int | None = None,
    before: int | None = None,
    forward: bool = True,
    scan: _Scan | None = None,
) -> Iterator[tuple[FieldRef, int]]:
    """``(field, position)`` of every entry the filter selects, in seq order from just
    after ``after`` (``forward``), or backwards from just before ``before``."""
    scan = scan or _Scan(None)
    selection = _select(index, filt)
    fids = selection.fids
    if fids is not None and selection.mask is None:
        refs = [index.fields[fid] for fid in fids]
        yield from _merge(filt, refs, after if forward else before, forward, scan)
        return
    if forward:
        start = 0 if after is None else index.position(after + 1)
    else:
        start = len(index.seqs) - 1 if before is None else index.position(before) - 1
    yield from _walk(index, filt, selection, start, forward, scan)


@dataclass
class LogPage:
    """A page of the log page: entries in seq order and cursors to go on from."""

    entries: list[Entry]
    filters: LogFilter
    limit: int
    #: ``before`` cursor for the page of older entries (None: none older)
    older: int | None
    #: ``after`` cursor for newer entries (None: this page ends at the end of the log)
    newer: int | None
    #: the search stopped at its budget before the page was full: how far it got
    searched_to: int | None
    #: the page ends at the end of the log: new entries belong after it
    tail: bool
    #: the seq jumped to (highlighted)
    highlight: int | None = None
    #: every entry up to this seq was examined: a page going on (the live log page
    #: asking for new entries) starts after it; None for a page of older entries
    follow_from: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "entries": [entry.to_json() for entry in self.entries],
            "filters": self.filters.to_json(),
            "limit": self.limit,
            "older": self.older,
            "newer": self.newer,
            "tail": self.tail,
            "searched_to": self.searched_to,
            "follow_from": self.follow_from,
        }


def log_page(
    index: LogIndex,
    filt: LogFilter,
    *,
    after: int | None = None,
    before: int | None = None,
    limit: int = 100,
    budget: int = SCAN_BUDGET,
    highlight: int | None = None,
) -> LogPage:
    """The ``limit`` entries just after ``after`` or just before ``before`` (the last
    ones when neither is given).  Examines at most ``budget`` entries."""
    if after is not None and before is not None:
        raise BadRequestError("give after or before, not both")
    forward = after is not None
    scan = _Scan(budget)
    end_seq = index.seqs[-1] if len(index.seqs) else 0  # (a walk starts at the end seen now)
    found: list[tuple[FieldRef, int]] = []
    for match in matching_rows(index, filt, after=after, before=before, forward=forward, scan=scan):
        found.append(match)
        if len(found) > limit:
            break
    more = len(found) > limit  # a further match exists in this direction
    spent = not more and not scan.ended  # stopped by the budget, not by the log's end
    found = found[:limit]
    if not forward:
        found.reverse()
    entries = [entry_at(ref, at) for ref, at in found]
    searched_to = scan.last_seq if spent else None
    first_seq = index.seqs[0] if len(index.seqs) else None
    if forward:
        assert after is not None
        newer = entries[-1].seq if more else searched_to
        lowest = entries[0].seq if entries else after + 1
        older = lowest if first_seq is not None and first_seq < lowest else None
        tail = newer is None
        # every entry up to here was examined (but a further match found is not shown)
        follow: int | None = (
            entries[-1].seq
            if more
            else max(after, scan.last_seq or 0, *(e.seq for e in entries[-1:]))
        )
    else:
        older = entries[0].seq if more else searched_to
        newer = None if before is None else (entries[-1].seq if entries else before - 1)
        tail = before is None
        follow = end_seq if tail else None
    return LogPage(entries, filt, limit, older, newer, searched_to, tail, highlight, follow)
