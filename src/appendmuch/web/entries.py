"""One entry of the log as the web view shows it: its value as text (folded when long),
its type, and its JSON form for the API.

Values are the Store's decoded objects; those of a type the default codec does not
know come as :class:`~appendmuch.rendering.Opaque` (the server opens logs with a
:class:`~appendmuch.rendering.LenientCodec`), so showing a value never fails.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson

from ..fieldlog import GONE
from ..rendering import Opaque, iso_time, json_value, type_name, value_text
from .index import FieldRef

__all__ = ["FOLD", "Entry", "entry_at", "human_time", "type_label"]

#: characters of a value shown before it is folded
FOLD = 120
#: characters of a value's full text a page holds at most (exports have it all)
FULL_TEXT = 100_000


def type_label(value: Any) -> str:
    """``int``, ``list``, ``Decimal``; ``type 20`` for a custom type; ``malformed int``."""
    if isinstance(value, Opaque):
        if value.malformed:
            return f"malformed {type_name(value.type_id)}"
        return f"type {value.type_id}"
    if value is None:
        return "None"
    return type(value).__name__


def human_time(created_at: float | None) -> str:
    """``2024-05-01 10:00:00.208`` (UTC), or ``-`` when the entry has no time."""
    if created_at is None or created_at != created_at:  # noqa: PLR0124 - NaN: none
        return "-"
    moment = _dt.datetime.fromtimestamp(created_at, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


@dataclass(frozen=True)
class Entry:
    """One entry: a value or a tombstone (``unavailable``, value None)."""

    seq: int
    time: float | None
    namespace: str
    field: str
    value: Any
    unavailable: bool
    context: str

    @property
    def type(self) -> str:
        """The value's type for people (empty for a tombstone)."""
        return "" if self.unavailable else type_label(self.value)

    @cached_property
    def text(self) -> str:
        """The whole value on one line (``<deleted>`` for a tombstone), cut at
        :data:`FULL_TEXT` characters (computed once: a page asks for it several times)."""
        if self.unavailable:
            return "<deleted>"
        return value_text(self.value, limit=FULL_TEXT)

    @property
    def short(self) -> str:
        """The value cut to :data:`FOLD` characters."""
        text = self.text
        return text if len(text) <= FOLD else text[: FOLD - 1] + "…"

    @property
    def folded(self) -> bool:
        """The value is longer than :data:`FOLD` characters (shown folded)."""
        return len(self.text) > FOLD

    @property
    def pretty(self) -> str:
        """The value laid out on several lines (lists and dicts indented)."""
        if self.unavailable:
            return "<deleted>"
        value = self.value
        if isinstance(value, list | dict | tuple):
            try:
                text = orjson.dumps(
                    orjson.loads(json_value(value)), option=orjson.OPT_INDENT_2
                ).decode()
            except (TypeError, orjson.JSONDecodeError):
                return self.text
            return text if len(text) <= FULL_TEXT else text[: FULL_TEXT - 1] + "…"
        return self.text

    @property
    def iso(self) -> str | None:
        """The time as ISO 8601 in UTC (None when the entry has none)."""
        return iso_time(self.time)

    @property
    def human(self) -> str:
        """The time for people (UTC)."""
        return human_time(self.time)

    def to_json(self) -> dict[str, Any]:
        """The API's form: the value as its JSON form (see :mod:`appendmuch.rendering`)."""
        return {
            "seq": self.seq,
            "time": self.iso,
            "namespace": self.namespace,
            "field": self.field,
            "value": None if self.unavailable else json_fragment(self.value),
            "type": self.type or None,
            "unavailable": self.unavailable,
            "context": self.context,
        }


def json_fragment(value: Any) -> orjson.Fragment:
    """A decoded value's JSON form, ready to embed in an orjson document."""
    try:
        return orjson.Fragment(json_value(value))
    except TypeError:
        return orjson.Fragment(orjson.dumps(value_text(value)))


def entry_at(ref: FieldRef, position: int) -> Entry:
    """The entry at ``position`` of a field's log (its data a private copy)."""
    log = ref.log
    stamp: float | None = log.times[position]
    if stamp != stamp:  # noqa: PLR0124 - NaN: the entry has no time
        stamp = None
    data = log.value_at(position)
    gone = data is GONE
    return Entry(
        seq=log.seqs[position],
        time=stamp,
        namespace=ref.dbns,
        field=ref.name,
        value=None if gone else data,
        unavailable=gone,
        context=log.items[2 * position + 1],
    )
