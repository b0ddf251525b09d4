"""What the namespace tree, the search and the namespace page show, computed from the index.

A namespace's *changes* are the seqs of its own fields' entries: the union of their
``seqs`` columns.  :class:`Steps` numbers them (rank and select by binary search), so
the time scrubber moves over them without the union ever being built: a page costs
O(fields x log(entries)) whatever the namespace's history.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from ..inspection import namespace_key
from ..names import dbns2tuple
from .entries import Entry, entry_at
from .index import FieldRef, LogIndex
from .params import BadRequestError, NotFoundError

__all__ = [
    "Child",
    "FieldState",
    "NamespacePage",
    "SearchPage",
    "Steps",
    "TreePage",
    "namespace_page",
    "search_page",
    "tree_page",
]


# --------------------------------------------------------------------------- tree


@dataclass
class Child:
    """A node below another: a namespace, or a prefix of deeper ones."""

    token: str
    namespace: str
    #: namespaces with fields of their own at or below it
    namespaces: int
    #: rows at or below it
    entries: int
    #: fields of its own (0 for a bare prefix)
    fields: int
    #: largest seq at or below it
    last_seq: int
    #: it has namespaces below it
    has_children: bool

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "token": self.token,
            "namespace": self.namespace,
            "namespaces": self.namespaces,
            "entries": self.entries,
            "fields": self.fields,
            "last_seq": self.last_seq or None,
            "has_children": self.has_children,
        }


def _children(index: LogIndex, prefix: str, offset: int, limit: int) -> tuple[list[Child], int]:
    tokens = index.children(prefix)
    out: list[Child] = []
    with index.lock:
        for token in tokens[offset : offset + limit]:
            dbns = f"{prefix}/{token}" if prefix else token
            node = index.nodes[dbns]
            out.append(
                Child(
                    token=token,
                    namespace=dbns,
                    namespaces=node.namespaces,
                    entries=node.entries,
                    fields=len(index.by_ns.get(dbns, ())),
                    last_seq=node.last_seq,
                    has_children=bool(node.children),
                )
            )
    return out, len(tokens)


@dataclass
class TreePage:
    """One level of the namespace tree: a node and a page of its children."""

    prefix: str
    namespaces: int
    entries: int
    children: list[Child]
    total: int
    offset: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "prefix": self.prefix or None,
            "namespaces": self.namespaces,
            "entries": self.entries,
            "children": [child.to_json() for child in self.children],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
        }


def tree_page(index: LogIndex, prefix: str | None, offset: int, limit: int) -> TreePage:
    """The children of ``prefix`` (the top level when None), a page of them.
    O(log children + limit); the first call after a child appeared sorts the children."""
    key = prefix or ""
    node = index.node(key)
    if node is None:
        raise NotFoundError(f"there is no namespace {prefix!r} in the log")
    children, total = _children(index, key, offset, limit)
    return TreePage(key, node.namespaces, node.entries, children, total, offset, limit)


# --------------------------------------------------------------------------- search


@dataclass
class SearchPage:
    """Namespaces whose name starts with ``q`` and (or) that have a field named ``field...``."""

    q: str | None
    field: str | None
    #: (namespace, its fields whose name matched)
    results: list[tuple[str, list[str]]]
    total: int
    offset: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "q": self.q,
            "field": self.field,
            "results": [{"namespace": ns, "fields": names} for ns, names in self.results],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
        }


def search_page(
    index: LogIndex, q: str | None, field_prefix: str | None, offset: int, limit: int
) -> SearchPage:
    """Namespaces starting with ``q`` (as text: ``session/s1/pl`` finds
    ``session/s1/player1``), having a field whose name starts with ``field_prefix``.
    O(matches + log namespaces); sorted as text."""
    if q is None and field_prefix is None:
        raise BadRequestError(
            "search needs q (the start of a namespace) or field (of a field name)"
        )
    if field_prefix is None:
        found = list(index.namespaces_with_prefix(q or ""))
        page: list[tuple[str, list[str]]] = [(ns, []) for ns in found[offset : offset + limit]]
        return SearchPage(q, None, page, len(found), offset, limit)
    with index.lock:
        names = sorted(name for name in index.by_name if name.startswith(field_prefix))
        matched: dict[str, list[str]] = {}
        for name in names:
            for fid in index.by_name[name]:
                dbns = index.fields[fid].dbns
                if q is None or dbns.startswith(q):
                    matched.setdefault(dbns, []).append(name)
    ordered = sorted(matched)
    page = [(dbns, matched[dbns]) for dbns in ordered[offset : offset + limit]]
    return SearchPage(q, field_prefix, page, len(ordered), offset, limit)


# --------------------------------------------------------------------------- namespace


class Steps:
    """The seqs where a namespace changed, numbered 0 .. count-1, without building them.

    ``rank`` and ``select`` cost O(fields x log entries) (select: times log of the seq
    range), so a namespace with any history answers at once.
    """

    def __init__(self, refs: list[FieldRef]) -> None:
        # each column read up to a length taken now: entries added later are not seen
        columns = [(ref.log.seqs, len(ref.log.seqs)) for ref in refs]
        self.columns = [(seqs, n) for seqs, n in columns if n]
        self.count = sum(n for _, n in self.columns)

    @property
    def first(self) -> int | None:
        """The first change's seq."""
        return min((seqs[0] for seqs, _ in self.columns), default=None)

    @property
    def last(self) -> int | None:
        """The last change's seq."""
        return max((seqs[n - 1] for seqs, n in self.columns), default=None)

    def rank(self, seq: int) -> int:
        """How many changes have a seq of ``seq`` or less."""
        return sum(bisect_right(seqs, seq, 0, n) for seqs, n in self.columns)

    def select(self, step: int) -> int:
        """The seq of change number ``step`` (0-based)."""
        if not 0 <= step < self.count:
            raise IndexError(step)
        low, high = self.first or 0, self.last or 0
        while low < high:  # the smallest seq with rank > step
            middle = (low + high) // 2
            if self.rank(middle) > step:
                high = middle
            else:
                low = middle + 1
        return low


@dataclass
class FieldState:
    """A field as of a moment: its entry then (None: not written yet), and its history."""

    name: str
    entry: Entry | None
    #: entries of the field up to the moment, and in all
    version: int
    versions: int
    #: written at the moment shown (the step the scrubber is on)
    changed: bool

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        out: dict[str, Any] = {"field": self.name, "version": self.version}
        out["versions"] = self.versions
        out["changed"] = self.changed
        if self.entry is not None:
            out.update(self.entry.to_json())
            out["field"] = self.name
        return out


@dataclass
class NamespacePage:
    """A namespace as of a seq: every field's value then, and where that is in time."""

    namespace: str
    #: the seq of the change shown (the last at or before the seq asked for); None
    #: before the namespace's first change
    at: int | None
    #: the page follows the latest state (no ``at`` was asked for)
    latest: bool
    #: number of the change shown (-1: before the first), and of all changes
    step: int
    steps: int
    first_seq: int | None
    last_seq: int | None
    prev_seq: int | None
    next_seq: int | None
    #: time of the change shown
    time: float | None
    fields: list[FieldState]
    #: fields first written after the moment shown
    later: list[str]
    children: list[Child]
    children_total: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> list[tuple[str, str]]:
        """``(token, namespace up to it)`` for the breadcrumb."""
        tokens = dbns2tuple(self.namespace)
        return [(token, "/".join(tokens[: i + 1])) for i, token in enumerate(tokens)]

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "namespace": self.namespace,
            "at": self.at,
            "latest": self.latest,
            "step": self.step,
            "steps": self.steps,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "prev_seq": self.prev_seq,
            "next_seq": self.next_seq,
            "fields": [state.to_json() for state in self.fields if state.entry is not None],
            "later": self.later,
            "children": [child.to_json() for child in self.children],
            "children_total": self.children_total,
        }


def _time_to_seq(refs: list[FieldRef], moment: float) -> int | None:
    """The last change at or before ``moment`` (times taken as rising with seq within
    a field, as one writer's clock gives them); None when every change is later."""
    best: int | None = None
    for ref in refs:
        log = ref.log
        count = len(log.seqs)
        position = bisect_right(log.times, moment, 0, count) - 1
        if position >= 0 and (best is None or log.seqs[position] > best):
            best = log.seqs[position]
    return best


def namespace_page(
    index: LogIndex,
    dbns: str,
    *,
    at: int | None = None,
    step: int | None = None,
    moment: float | None = None,
    children_limit: int = 200,
) -> NamespacePage:
    """The namespace ``dbns`` as of ``at`` (a seq), change number ``step``, or the time
    ``moment``; its latest state when none is given.  O(fields x log entries + children
    shown)."""
    node = index.node(dbns)
    if node is None:
        raise NotFoundError(f"there is no namespace {dbns!r} in the log")
    asked = [
        name for name, value in (("at", at), ("step", step), ("time", moment)) if value is not None
    ]
    if len(asked) > 1:
        raise BadRequestError(f"give one of at, step and time, not {' and '.join(asked)}")
    refs = index.namespace_fields(dbns)
    steps = Steps(refs)
    log_last = index.counts().last_seq or 0
    latest = at is None and step is None and moment is None
    if step is not None:
        if not 0 <= step < steps.count:
            raise NotFoundError(
                f"step {step} is out of range: {dbns!r} has {steps.count} changes "
                f"(steps 0 to {steps.count - 1})"
            )
        at = steps.select(step)
    elif moment is not None:
        at = _time_to_seq(refs, moment)
        if at is None:
            at = 0  # before the first change
    elif at is not None and at > log_last:
        raise NotFoundError(f"seq {at} is past the end of the log (its last seq is {log_last})")
    if at is None:
        at = steps.last
    # the change shown: the last one at or before the seq asked for
    found: list[tuple[FieldRef, int, int]] = []
    later: list[str] = []
    for ref in refs:
        count = len(ref.log.seqs)
        where = bisect_right(ref.log.seqs, at or 0, 0, count) - 1
        if where < 0:
            later.append(ref.name)
        else:
            found.append((ref, where, count))
    shown_at = max((ref.log.seqs[where] for ref, where, _ in found), default=None)
    position = steps.rank(shown_at) - 1 if shown_at is not None else -1
    fields: list[FieldState] = []
    time: float | None = None
    for ref, where, count in found:
        entry = entry_at(ref, where)
        changed = entry.seq == shown_at
        if changed:
            time = entry.time
        fields.append(FieldState(ref.name, entry, where + 1, count, changed))
    children, total = _children(index, dbns, 0, children_limit)
    return NamespacePage(
        namespace=dbns,
        at=shown_at,
        latest=latest,
        step=position,
        steps=steps.count,
        first_seq=steps.first,
        last_seq=steps.last,
        prev_seq=steps.select(position - 1) if position > 0 else None,
        next_seq=steps.select(position + 1) if position + 1 < steps.count else None,
        time=time,
        fields=fields,
        later=later,
        children=children,
        children_total=total,
    )


def sorted_namespaces(names: list[str]) -> list[str]:
    """``names`` sorted as a tree (``p2`` before ``p10``)."""
    return sorted(names, key=namespace_key)
