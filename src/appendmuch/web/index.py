"""The web view's indexes over a loaded Store: built once at open, kept current as rows arrive.

The Store holds every entry already (``store.cache``: namespace dicts ending in
FieldLogs, whose ``seqs`` and ``times`` columns are C arrays).  What the pages need
beyond that, and this module keeps:

- every field numbered (its *fid*) with its namespace, name and FieldLog;
- the whole log in seq order as two parallel arrays, ``seqs`` and ``fids`` (12 bytes a
  row), so that the log page reads a page of entries without walking the tree;
- per block of :data:`BLOCK` positions of that order, the earliest and latest time, to
  skip blocks outside a time filter and to draw the writes-over-time chart;
- the namespace tree with counts per node, the namespaces in sorted order (prefix
  search) and the fields by name.

Rows that arrive later (a read-only Store that follows its writers calls
``on_change`` for each) are added by :meth:`LogIndex.note`, in O(depth of the
namespace) per row.  Readers take :attr:`LogIndex.lock` only to copy what they need;
the arrays only grow, and a FieldLog publishes an entry's seq last, so reading below a
length read earlier is safe without it.
"""

from __future__ import annotations

import heapq
import math
import threading
from array import array
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..fieldlog import GONE, FieldLog
from ..inspection import namespace_key
from ..names import dbns2tuple, tuple2dbns
from ..store import Store
from ..value import Value

__all__ = ["BLOCK", "FieldRef", "LogIndex", "TreeNode"]

#: positions of the seq-ordered log summarised together (times, for filters and charts)
BLOCK = 256
_SHIFT = 8  # BLOCK == 1 << _SHIFT
_NAN = math.nan
_INF = math.inf


class FieldRef:
    """One field of one namespace: its number, names, FieldLog and indexed length."""

    __slots__ = ("count", "dbns", "deleted", "fid", "log", "name")

    def __init__(self, fid: int, dbns: str, name: str, log: FieldLog) -> None:
        self.fid = fid
        self.dbns = dbns
        self.name = name
        self.log = log
        #: entries of ``log`` the index holds (the log may briefly hold more)
        self.count = 0
        #: its latest indexed entry is a tombstone
        self.deleted = False


class TreeNode:
    """A namespace or a prefix of one, with counts of everything at or below it."""

    __slots__ = ("_sorted", "children", "entries", "last_seq", "namespaces", "own")

    def __init__(self) -> None:
        #: next tokens below (insertion ordered)
        self.children: dict[str, None] = {}
        #: rows written at or below
        self.entries = 0
        #: namespaces with fields of their own at or below (this one included)
        self.namespaces = 0
        #: largest seq written at or below (0: none)
        self.last_seq = 0
        #: it has fields of its own
        self.own = False
        self._sorted: list[str] | None = None

    def add_child(self, token: str) -> None:
        """Note a new child token."""
        self.children[token] = None
        self._sorted = None

    def sorted_children(self) -> list[str]:
        """The child tokens, ``p2`` before ``p10``; cached until a child is added."""
        cached = self._sorted
        if cached is None:
            cached = self._sorted = sorted(self.children, key=namespace_key)
        return cached


@dataclass(frozen=True)
class Counts:
    """The log's totals at one moment (what the overview and the event stream show)."""

    rows: int
    first_seq: int | None
    last_seq: int | None
    first_time: float | None
    last_time: float | None
    namespaces: int
    fields: int
    deleted_fields: int
    tombstones: int
    version: int


class LogIndex:
    """Indexes of one Store for the web view (see the module docstring).

    Make it, give :meth:`note` to the Store as ``on_change`` (rows arriving before
    :meth:`build` are held back), then call :meth:`build` once.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.store: Store | None = None
        #: fid -> field
        self.fields: list[FieldRef] = []
        #: dbns -> field name -> fid, in order of first write
        self.by_ns: dict[str, dict[str, int]] = {}
        #: field name -> fids of the fields of that name
        self.by_name: dict[str, list[int]] = {}
        #: every namespace with fields of its own, sorted as strings (for prefix search)
        self.namespaces: list[str] = []
        #: "" (the root) and every namespace and prefix of one -> its node
        self.nodes: dict[str, TreeNode] = {"": TreeNode()}
        #: dbns -> rows written in that namespace itself
        self.own_entries: dict[str, int] = {}
        #: dbns -> the nodes from the root down to it (what a new row counts in)
        self._chains: dict[str, tuple[TreeNode, ...]] = {}
        #: the log in seq order
        self.seqs = array("q")
        self.fids = array("I")
        #: per block of BLOCK positions: earliest and latest time (inf/-inf: none)
        self.block_min = array("d")
        self.block_max = array("d")
        self.tombstones = 0
        self.deleted_fields = 0
        #: bumped whenever rows are added
        self.version = 0
        self._ready = False
        self._pending: list[tuple[str, str, int, float, bool]] = []
        #: replaced, never changed in place: the follower reads it without the lock
        self._listeners: tuple[Callable[[], None], ...] = ()

    # ------------------------------------------------------------------ building

    def build(self, store: Store) -> None:
        """Index everything ``store`` holds.  O(rows) time; 12 bytes a row kept, plus
        a few per field and namespace.

        Held under :attr:`lock`: rows the Store's follower delivers meanwhile wait in
        :meth:`note`, and are indexed once the build is done (those the walk found
        already are not indexed twice).
        """
        with self.lock:
            self.store = store
            walked: list[tuple[FieldRef, int]] = []
            for dbns, name, log in _walk(store.cache, ()):
                ref = self._new_field(dbns, name, log, building=True)
                count = len(log.seqs)
                walked.append((ref, count))
            self.namespaces.sort()
            self._build_order(walked)
            for ref, count in walked:
                ref.count = count
                if count:
                    items = ref.log.items
                    ref.deleted = items[2 * count - 2] is GONE
                    self.deleted_fields += ref.deleted
                    self.tombstones += items[0 : 2 * count : 2].count(GONE)
                    self._count_rows(ref.dbns, count, ref.log.seqs[count - 1])
            self._ready = True
            pending, self._pending = self._pending, []
            for row in pending:
                self._add(*row)
            self.version += 1
        self._tell()

    def _build_order(self, walked: list[tuple[FieldRef, int]]) -> None:
        """Fill ``seqs``, ``fids`` and the time blocks from every field's columns."""
        total = sum(count for _, count in walked)
        if not total:
            return
        low = min(ref.log.seqs[0] for ref, count in walked if count)
        high = max(ref.log.seqs[count - 1] for ref, count in walked if count)
        span = high - low + 1
        times = array("d")
        if span <= 2 * total + 1024:
            # seqs are nearly dense (the usual log): place each entry in a slot per seq
            slot = array("i", [-1]) * span
            when = array("d", [_NAN]) * span
            for ref, count in walked:
                fid, seqs, stamps = ref.fid, ref.log.seqs, ref.log.times
                for i in range(count):
                    k = seqs[i] - low
                    slot[k] = fid
                    when[k] = stamps[i]
            seqs_out, fids_out = self.seqs, self.fids
            for k, fid in enumerate(slot):
                if fid >= 0:
                    seqs_out.append(low + k)
                    fids_out.append(fid)
                    times.append(when[k])
        else:
            # sparse seqs (restored dumps, say): sort them instead
            entries = sorted(
                (ref.log.seqs[i], ref.fid, ref.log.times[i])
                for ref, count in walked
                for i in range(count)
            )
            for seq, fid, stamp in entries:
                self.seqs.append(seq)
                self.fids.append(fid)
                times.append(stamp)
        for start in range(0, len(times), BLOCK):
            chunk = [t for t in times[start : start + BLOCK] if not math.isnan(t)]
            self.block_min.append(min(chunk) if chunk else _INF)
            self.block_max.append(max(chunk) if chunk else -_INF)

    def _new_field(
        self, dbns: str, name: str, log: FieldLog, *, building: bool = False
    ) -> FieldRef:
        ref = FieldRef(len(self.fields), dbns, name, log)
        self.fields.append(ref)
        fields = self.by_ns.get(dbns)
        if fields is None:
            fields = self.by_ns[dbns] = {}
            if building:
                self.namespaces.append(dbns)  # sorted once the walk is done
            else:
                insort(self.namespaces, dbns)
            self.own_entries[dbns] = 0
            tokens = dbns2tuple(dbns)
            parent = self.nodes[""]
            parent.namespaces += 1
            chain = [parent]
            for depth in range(1, len(tokens) + 1):
                prefix = tuple2dbns(tokens[:depth])
                node = self.nodes.get(prefix)
                if node is None:
                    node = self.nodes[prefix] = TreeNode()
                    parent.add_child(tokens[depth - 1])
                node.namespaces += 1
                chain.append(node)
                parent = node
            parent.own = True
            self._chains[dbns] = tuple(chain)
        fields[name] = ref.fid
        self.by_name.setdefault(name, []).append(ref.fid)
        return ref

    def _count_rows(self, dbns: str, rows: int, last_seq: int) -> None:
        """Add ``rows`` rows (the last one ``last_seq``) to the namespace and its ancestors."""
        self.own_entries[dbns] += rows
        for node in self._chains[dbns]:
            node.entries += rows
            node.last_seq = max(node.last_seq, last_seq)

    # ------------------------------------------------------------------ live rows

    def note(self, namespace: tuple[str, ...], field: str, value: Value) -> None:
        """``on_change`` of the Store: index a row another process committed.

        Runs in the Store's follower thread; the listeners (the event stream) are told.
        """
        time = _NAN if value.time is None else value.time
        row = (tuple2dbns(namespace), field, value.seq, time, value.unavailable)
        with self.lock:
            if not self._ready:
                self._pending.append(row)
                return
            added = self._add(*row)
            if added:
                self.version += 1
        if added:
            self._tell()

    def _add(self, dbns: str, name: str, seq: int, time: float, unavailable: bool) -> bool:
        fields = self.by_ns.get(dbns)
        fid = fields.get(name) if fields is not None else None
        if fid is None:
            store = self.store
            node = store.get_namespace(dbns2tuple(dbns)) if store is not None else None
            log = node.get(name) if node is not None else None
            if type(log) is not FieldLog:
                return False  # not in the Store (it refused the row)
            ref = self._new_field(dbns, name, log)
        else:
            ref = self.fields[fid]
            if ref.count and ref.log.seqs[ref.count - 1] >= seq:
                return False  # indexed already (the build found it)
        ref.count += 1
        was_deleted, ref.deleted = ref.deleted, unavailable
        self.deleted_fields += ref.deleted - was_deleted
        self.tombstones += unavailable
        seqs = self.seqs
        position = len(seqs)
        if position and seqs[-1] > seq:  # out of order: should not happen; stay correct
            position = bisect_left(seqs, seq)
            seqs.insert(position, seq)
            self.fids.insert(position, ref.fid)
            self._rebuild_blocks()
        else:
            seqs.append(seq)
            self.fids.append(ref.fid)
            self._block_add(position, time)
        self._count_rows(dbns, 1, seq)
        return True

    def _block_add(self, position: int, time: float) -> None:
        block = position >> _SHIFT
        if block == len(self.block_min):
            self.block_min.append(_INF)
            self.block_max.append(-_INF)
        if not math.isnan(time):
            self.block_min[block] = min(self.block_min[block], time)
            self.block_max[block] = max(self.block_max[block], time)

    def _rebuild_blocks(self) -> None:
        self.block_min = array("d")
        self.block_max = array("d")
        for position in range(len(self.seqs)):
            self._block_add(position, self.time_at(position))

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the thread that added them) after rows are added.
        It must be quick: it runs once per row the follower brings in."""
        with self.lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        with self.lock:
            self._listeners = tuple(item for item in self._listeners if item is not listener)

    def _tell(self) -> None:
        for listener in self._listeners:
            listener()

    # ------------------------------------------------------------------ reading

    def counts(self) -> Counts:
        """The totals now.  O(1) (the time span: O(blocks))."""
        with self.lock:
            rows = len(self.seqs)
            first = min(self.block_min, default=_INF)
            last = max(self.block_max, default=-_INF)
            return Counts(
                rows=rows,
                first_seq=self.seqs[0] if rows else None,
                last_seq=self.seqs[-1] if rows else None,
                first_time=first if first != _INF else None,
                last_time=last if last != -_INF else None,
                namespaces=len(self.by_ns),
                fields=len(self.fields),
                deleted_fields=self.deleted_fields,
                tombstones=self.tombstones,
                version=self.version,
            )

    def row(self, position: int) -> tuple[int, FieldRef, int]:
        """``(seq, field, position in its FieldLog)`` of a position of the seq order.
        O(log n) in the field's length."""
        seq = self.seqs[position]
        ref = self.fields[self.fids[position]]
        return seq, ref, bisect_left(ref.log.seqs, seq)

    def time_at(self, position: int) -> float:
        """``created_at`` of the entry at a position of the seq order (NaN: none)."""
        _seq, ref, at = self.row(position)
        return ref.log.times[at]

    def position(self, seq: int) -> int:
        """The first position whose seq is ``seq`` or more.  O(log rows)."""
        return bisect_left(self.seqs, seq)

    def field(self, dbns: str, name: str) -> FieldRef | None:
        """The field ``name`` of namespace ``dbns``, or None."""
        with self.lock:
            fields = self.by_ns.get(dbns)
            fid = fields.get(name) if fields is not None else None
            return None if fid is None else self.fields[fid]

    def namespace_fields(self, dbns: str) -> list[FieldRef]:
        """The fields of ``dbns`` in order of first write (empty if none)."""
        with self.lock:
            fields = self.by_ns.get(dbns, {})
            return [self.fields[fid] for fid in fields.values()]

    def node(self, dbns: str) -> TreeNode | None:
        """The tree node of a namespace or prefix (``""``: the root), or None."""
        return self.nodes.get(dbns)

    def children(self, dbns: str) -> list[str]:
        """The child tokens of a node, sorted (``p2`` before ``p10``)."""
        with self.lock:
            node = self.nodes.get(dbns)
            return [] if node is None else list(node.sorted_children())

    def namespaces_with_prefix(self, text: str) -> Iterator[str]:
        """Namespaces (with fields of their own) whose name starts with ``text`` as a
        string, in sorted order.  O(log n) to the first."""
        with self.lock:
            names = self.namespaces
            start = bisect_left(names, text)
            end = bisect_left(names, text + "\U0010ffff", start)
            found = names[start:end]
        yield from found

    def namespaces_below(self, prefix: str) -> list[str]:
        """``prefix`` (if it has fields) and the namespaces below it, token-wise."""
        with self.lock:
            names = self.namespaces
            found = [prefix] if prefix in self.by_ns else []
            below = prefix + "/"
            start = bisect_left(names, below)
            end = bisect_left(names, prefix + "0", start)  # "0" follows "/"
            found.extend(names[start:end])
            return found

    def busiest(self, count: int) -> list[tuple[str, int]]:
        """The ``count`` namespaces with the most rows of their own.  O(namespaces)."""
        with self.lock:
            items = list(self.own_entries.items())
        return heapq.nlargest(count, items, key=lambda item: item[1])

    def histogram(self, buckets: int) -> list[tuple[float, float, int]]:
        """Writes over time: ``(start, end, rows)`` per bucket, over the log's time span.

        Built from the time blocks: a block's rows are spread evenly over the time it
        spans, so a bucket is exact to within a block of :data:`BLOCK` rows; the counts
        are whole and add up to the rows that have a time.  O(blocks + buckets).
        """
        with self.lock:
            rows = len(self.seqs)
            mins = array("d", self.block_min)
            maxs = array("d", self.block_max)
        known = [(a, b) for a, b in zip(mins, maxs, strict=True) if a != _INF]
        if not known:
            return []
        start = min(a for a, _ in known)
        end = max(b for _, b in known)
        width = (end - start) / buckets if end > start else 1.0
        shares = [0.0] * buckets
        for block, (low, high) in enumerate(zip(mins, maxs, strict=True)):
            if low == _INF:
                continue
            size = min(BLOCK, rows - block * BLOCK)
            first = min(int((low - start) / width), buckets - 1)
            last = min(int((high - start) / width), buckets - 1)
            if first == last:
                shares[first] += size
                continue
            per_second = size / (high - low)
            for bucket in range(first, last + 1):
                left = max(low, start + bucket * width)
                right = min(high, start + (bucket + 1) * width)
                shares[bucket] += per_second * max(right - left, 0.0)
        counts = _whole(shares)
        return [(start + i * width, start + (i + 1) * width, counts[i]) for i in range(buckets)]


def _whole(shares: list[float]) -> list[int]:
    """Round shares to whole numbers that add up to their rounded total (the largest
    remainders get the units left over)."""
    counts = [int(share) for share in shares]
    left = round(sum(shares)) - sum(counts)
    order = sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])
    for i in order[: max(left, 0)]:
        counts[i] += 1
    return counts


def _walk(tree: dict[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[str, str, FieldLog]]:
    """``(dbns, field, log)`` for every field below ``tree``.  Each dict is copied
    before it is walked, so a follower adding namespaces meanwhile does no harm."""
    fields: list[tuple[str, FieldLog]] = []
    below: list[tuple[str, dict[str, Any]]] = []
    for name, child in list(tree.items()):
        if type(child) is FieldLog:
            fields.append((name, child))
        elif type(child) is dict:
            below.append((name, child))
    if fields:
        dbns = tuple2dbns(prefix)
        for name, log in fields:
            yield dbns, name, log
    for token, child in below:
        yield from _walk(child, (*prefix, token))
