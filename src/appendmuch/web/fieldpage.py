"""The field page: every version of one field, a page at a time, with what changed in
lists, dicts and sets, and a chart of its numeric values over the whole history."""

from __future__ import annotations

import decimal
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from ..fieldlog import GONE
from .charts import Point, line_chart
from .diffs import Change, diff
from .entries import Entry, entry_at
from .index import FieldRef, LogIndex
from .params import BadRequestError, NotFoundError

__all__ = ["FieldPage", "Version", "field_page", "numeric_points"]

_NUMBERS = (int, float, decimal.Decimal)


@dataclass
class Version:
    """One entry of the field and what changed from the version before it."""

    entry: Entry
    #: 1 for the first version
    number: int
    changes: list[Change] | None
    #: changes in all (``changes`` holds the first few)
    change_count: int

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        out = self.entry.to_json()
        out["version"] = self.number
        if self.changes is not None:
            out["changes"] = [change.to_json() for change in self.changes]
            out["change_count"] = self.change_count
        return out


@dataclass
class FieldPage:
    """A page of a field's versions (in seq order) and the chart of all of them."""

    namespace: str
    field: str
    versions: list[Version]
    total: int
    older: int | None
    newer: int | None
    tail: bool
    limit: int
    #: numeric versions over the whole history, and the chart drawn from them
    numeric: int
    chart: Markup | None
    #: the chart's x axis is time (else seq)
    time_axis: bool = False
    #: tombstones in the whole history
    deletions: int = 0

    @property
    def latest(self) -> Version | None:
        """The newest version on this page."""
        return self.versions[-1] if self.versions else None

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {
            "namespace": self.namespace,
            "field": self.field,
            "versions": [version.to_json() for version in self.versions],
            "total": self.total,
            "older": self.older,
            "newer": self.newer,
            "tail": self.tail,
            "limit": self.limit,
            "numeric": self.numeric,
        }


def numeric_points(ref: FieldRef, count: int) -> tuple[list[Point], tuple[float, ...], bool]:
    """The field's numeric versions as chart points, the x of its deletions, and
    whether x is time (else seq: when times are missing or mostly equal).  O(count)."""
    log = ref.log
    items, seqs, times = log.items, log.seqs, log.times
    stamps = times[:count]
    # time on x when every entry has one and they are mostly distinct; bursts written
    # within the clock's resolution would stack up, so those are drawn over seq
    use_time = (
        count > 0
        and not any(math.isnan(stamp) for stamp in stamps)
        and max(stamps) > min(stamps)
        and len(set(stamps)) * 2 > count
    )
    points: list[Point] = []
    deletions: list[float] = []
    for i in range(count):
        data = items[2 * i]
        x = times[i] if use_time else float(seqs[i])
        if data is GONE:
            deletions.append(x)
        elif isinstance(data, _NUMBERS) and type(data) is not bool:
            y = float(data)
            if math.isfinite(y):
                points.append(Point(x, y, seqs[i]))
    return points, tuple(deletions), use_time


def field_page(
    index: LogIndex,
    dbns: str,
    name: str,
    *,
    after: int | None = None,
    before: int | None = None,
    limit: int = 500,
) -> FieldPage:
    """Versions of field ``name`` of ``dbns``: the ``limit`` just after ``after``, just
    before ``before``, or the last ones.  O(limit + versions) (the chart reads every
    version's number once; older lists and dicts are decoded only for the page)."""
    if after is not None and before is not None:
        raise BadRequestError("give after or before, not both")
    ref = index.field(dbns, name)
    if ref is None:
        if index.node(dbns) is None:
            raise NotFoundError(f"there is no namespace {dbns!r} in the log")
        raise NotFoundError(f"namespace {dbns!r} has no field {name!r}")
    log = ref.log
    count = len(log.seqs)
    last = index.counts().last_seq or 0
    for cursor in (after, before):
        if cursor is not None and cursor > last + 1:
            raise NotFoundError(f"seq {cursor} is past the end of the log (its last seq is {last})")
    if after is not None:
        start = bisect_right(log.seqs, after, 0, count)
        end = min(start + limit, count)
    else:
        end = count if before is None else bisect_left(log.seqs, before, 0, count)
        start = max(end - limit, 0)
    versions: list[Version] = []
    previous = entry_at(ref, start - 1) if start > 0 else None
    for position in range(start, end):
        entry = entry_at(ref, position)
        changes: list[Change] | None = None
        total = 0
        if previous is not None and not entry.unavailable and not previous.unavailable:
            found = diff(previous.value, entry.value)
            if found is not None:
                changes, total = found
        versions.append(Version(entry, position + 1, changes, total))
        previous = entry
    points, deletions, use_time = numeric_points(ref, count)
    chart = None
    if len(points) >= 2:
        chart = line_chart(
            points,
            time_axis=use_time,
            label=f"{name} of {dbns}: {len(points):,} numeric versions over "
            + ("time" if use_time else "seq"),
            deletions=deletions,
        )
    return FieldPage(
        namespace=dbns,
        field=name,
        versions=versions,
        total=count,
        older=log.seqs[start] if start > 0 else None,
        newer=(log.seqs[end - 1] if end else log.seqs[0] - 1) if end < count else None,
        tail=end == count,
        limit=limit,
        numeric=len(points),
        chart=chart,
        time_axis=use_time,
        deletions=len(deletions),
    )
