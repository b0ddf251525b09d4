"""What changed between two versions of a list, tuple, dict or set, for the field page.

Shallow on purpose: top-level keys, positions or members, each shown as its JSON text
(cut to :data:`TEXT` characters).  Elements are compared by their JSON form, so ``1``
and ``True`` differ, as they do in the log.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ..rendering import json_value, value_text

__all__ = ["Change", "diff"]

#: characters of an element shown in a change
TEXT = 80
#: lists longer than this are compared by length and common ends only
_MATCH_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class Change:
    """One change: ``+`` added, ``-`` removed, ``~`` replaced, at a key or position."""

    op: str
    where: str
    old: str | None = None
    new: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's form."""
        return {"op": self.op, "at": self.where, "old": self.old, "new": self.new}


def _text(value: Any) -> str:
    return value_text(value, limit=TEXT)


def _key(value: Any) -> bytes:
    try:
        return json_value(value)
    except TypeError:
        return repr(value).encode()


def diff(old: Any, new: Any, limit: int = 50) -> tuple[list[Change], int] | None:
    """The changes from ``old`` to ``new`` (at most ``limit``) and how many there are in
    all; None when the two are not both dicts, both sequences or both sets."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = _dict_changes(old, new)
    elif isinstance(old, list | tuple) and isinstance(new, list | tuple):
        changes = _list_changes(list(old), list(new))
    elif isinstance(old, set | frozenset) and isinstance(new, set | frozenset):
        changes = _set_changes(old, new)
    else:
        return None
    return changes[:limit], len(changes)


def _dict_changes(old: dict[Any, Any], new: dict[Any, Any]) -> list[Change]:
    changes: list[Change] = []
    for key in sorted(set(old) | set(new), key=str):
        where = str(key)
        if key not in old:
            changes.append(Change("+", where, new=_text(new[key])))
        elif key not in new:
            changes.append(Change("-", where, old=_text(old[key])))
        elif _key(old[key]) != _key(new[key]):
            changes.append(Change("~", where, _text(old[key]), _text(new[key])))
    return changes


def _list_changes(old: list[Any], new: list[Any]) -> list[Change]:
    a = [_key(item) for item in old]
    b = [_key(item) for item in new]
    head = 0
    while head < len(a) and head < len(b) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < len(a) - head and tail < len(b) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    a_mid = a[head : len(a) - tail]
    b_mid = b[head : len(b) - tail]
    changes: list[Change] = []
    if len(a_mid) > _MATCH_LIMIT or len(b_mid) > _MATCH_LIMIT:
        for i in range(head, len(a) - tail):
            changes.append(Change("-", f"[{i}]", old=_text(old[i])))
        for j in range(head, len(b) - tail):
            changes.append(Change("+", f"[{j}]", new=_text(new[j])))
        return changes
    matcher = difflib.SequenceMatcher(a=a_mid, b=b_mid, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):
                i, j = head + i1 + k, head + j1 + k
                changes.append(Change("~", f"[{j}]", _text(old[i]), _text(new[j])))
            continue
        for i in range(i1, i2):
            changes.append(Change("-", f"[{head + i}]", old=_text(old[head + i])))
        for j in range(j1, j2):
            changes.append(Change("+", f"[{head + j}]", new=_text(new[head + j])))
    return changes


def _set_changes(old: set[Any] | frozenset[Any], new: set[Any] | frozenset[Any]) -> list[Change]:
    changes = [Change("-", "member", old=_text(item)) for item in sorted(old - new, key=_key)]
    changes.extend(Change("+", "member", new=_text(item)) for item in sorted(new - old, key=_key))
    return changes
