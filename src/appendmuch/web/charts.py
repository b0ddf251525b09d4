"""Charts drawn on the server as SVG: no JavaScript library, nothing fetched, and every
label escaped here (the SVG goes into the page as markup).

Both charts take at most a few thousand shapes whatever the data: a line chart keeps,
per pixel column, the first, lowest, highest and last point (so spikes survive), and
the bar chart has one bar per bucket.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from markupsafe import Markup

from .entries import human_time

__all__ = ["Point", "bar_chart", "line_chart"]

_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 14, 12, 30
#: points drawn with a marker (and a tooltip) when there are at most this many
_MARKERS = 300


@dataclass(frozen=True, slots=True)
class Point:
    """One numeric version of a field: ``x`` (time or seq), ``y``, its seq."""

    x: float
    y: float
    seq: int


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _number(value: float) -> str:
    """A short label for an axis value."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:,.4g}"


def _x_label(value: float, time_axis: bool) -> str:
    return human_time(value) if time_axis else f"seq {int(value):,}"


def _thin(points: list[Point], columns: int, x0: float, x1: float) -> list[Point]:
    """At most four points per pixel column: first, lowest, highest, last."""
    if len(points) <= 4 * columns:
        return points
    scale = (columns - 1) / (x1 - x0) if x1 > x0 else 0.0
    kept: list[Point] = []
    column: list[Point] = []
    current = -1
    for point in points:
        slot = int((point.x - x0) * scale)
        if slot != current and column:
            kept.extend(_column_extremes(column))
            column = []
        current = slot
        column.append(point)
    if column:
        kept.extend(_column_extremes(column))
    return kept


def _column_extremes(column: list[Point]) -> list[Point]:
    low = min(column, key=lambda p: p.y)
    high = max(column, key=lambda p: p.y)
    chosen = {id(p): p for p in (column[0], low, high, column[-1])}
    return sorted(chosen.values(), key=lambda p: (p.x, p.seq))


def line_chart(
    points: list[Point],
    *,
    time_axis: bool,
    label: str,
    deletions: tuple[float, ...] = (),
    width: int = 760,
    height: int = 240,
) -> Markup:
    """An SVG line chart of ``points`` (sorted by seq); ``deletions``: x positions of
    tombstones, marked under the axis.  O(points)."""
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    xs = [p.x for p in points] + list(deletions)
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:
        x0, x1 = x0 - 1, x1 + 1
    y0 = min(p.y for p in points)
    y1 = max(p.y for p in points)
    if y1 <= y0:
        y0, y1 = y0 - 1, y1 + 1

    def sx(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return _TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    drawn = _thin(sorted(points, key=lambda p: (p.x, p.seq)), plot_w, x0, x1)
    path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in drawn)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_e(label)}</title>",
        f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = y0 + (y1 - y0) * fraction
        y = sy(value)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(_number(value))}</text>"
        )
    bottom = _TOP + plot_h + 18
    parts.append(
        f'<text class="axis" x="{_LEFT}" y="{bottom}" text-anchor="start">'
        f"{_e(_x_label(x0, time_axis))}</text>"
    )
    parts.append(
        f'<text class="axis" x="{_LEFT + plot_w}" y="{bottom}" text-anchor="end">'
        f"{_e(_x_label(x1, time_axis))}</text>"
    )
    parts.append(f'<polyline class="line" points="{path}"/>')
    if len(points) <= _MARKERS:
        for p in points:
            tip = f"seq {p.seq}: {_number(p.y)}"
            if time_axis:
                tip += f" at {human_time(p.x)}"
            parts.append(
                f'<circle class="dot" cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="3">'
                f"<title>{_e(tip)}</title></circle>"
            )
    for x in deletions[:_MARKERS]:
        parts.append(
            f'<line class="deleted" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{_TOP + plot_h}" '
            f'y2="{_TOP + plot_h + 6}"><title>deleted</title></line>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    buckets: list[tuple[float, float, int]],
    *,
    label: str,
    width: int = 760,
    height: int = 180,
) -> Markup:
    """An SVG bar chart of ``(start time, end time, rows)`` buckets.  O(buckets)."""
    plot_w = width - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    top = max((count for _, _, count in buckets), default=0)
    scale = plot_h / top if top > 0 else 0.0
    bar_w = plot_w / max(len(buckets), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_e(label)}</title>",
        f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"/>',
        f'<text class="axis" x="{_LEFT - 6}" y="{_TOP + 10}" text-anchor="end">'
        f"{_e(_number(math.ceil(top)))}</text>",
        f'<text class="axis" x="{_LEFT - 6}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for i, (start, end, count) in enumerate(buckets):
        h = count * scale
        x = _LEFT + i * bar_w
        tip = f"{count:,} writes, {human_time(start)} to {human_time(end)} UTC"
        parts.append(
            f'<rect class="bar" x="{x + 0.5:.1f}" y="{_TOP + plot_h - h:.1f}" '
            f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}"><title>{_e(tip)}</title></rect>'
        )
    if buckets:
        bottom = _TOP + plot_h + 18
        parts.append(
            f'<text class="axis" x="{_LEFT}" y="{bottom}" text-anchor="start">'
            f"{_e(human_time(buckets[0][0]))}</text>"
        )
        parts.append(
            f'<text class="axis" x="{_LEFT + plot_w}" y="{bottom}" text-anchor="end">'
            f"{_e(human_time(buckets[-1][1]))} UTC</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
