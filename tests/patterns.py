"""The read-modify-write patterns people write in ``with`` blocks, each one increment of
a counter kept in namespace ``hot`` (a web application counting something across
workers).  Under ``retry_on_conflict`` none may lose an increment, in threads or in
processes, whatever the mode (SPEC section 11).

========================  ============================================================
pattern                   the block
========================  ============================================================
``in_place``              ``p.d["n"] += 1`` (a dict changed in place)
``scalar``                ``p.i = p.i + 1`` (a scalar read, then assigned)
``new_object``            ``p.r = {"n": p.r["n"] + 1}`` (read, assign a new object)
``create_or_bump``        the counter found missing is created, else changed in place
========================  ============================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appendmuch import Storage, retry_on_conflict

__all__ = ["PATTERNS", "bump", "count", "prepare"]


def _in_place(p: Storage) -> None:
    with p:
        p.d["n"] += 1


def _scalar(p: Storage) -> None:
    with p:
        p.i = p.i + 1


def _new_object(p: Storage) -> None:
    with p:
        p.r = {"n": p.r["n"] + 1}


def _create_or_bump(p: Storage) -> None:
    with p:
        counter = getattr(p, "c", None)
        if counter is None:
            p.c = {"n": 1}
        else:
            counter["n"] += 1


#: pattern name -> one increment
PATTERNS: dict[str, Callable[[Storage], None]] = {
    "in_place": _in_place,
    "scalar": _scalar,
    "new_object": _new_object,
    "create_or_bump": _create_or_bump,
}


def prepare(p: Storage) -> None:
    """The counters' starting values (``c`` starts missing)."""
    p.i = 0
    p.d = {"n": 0}
    p.r = {"n": 0}


def bump(p: Storage, pattern: str, times: int) -> int:
    """``times`` increments, each retried until it commits; the conflicts met."""
    attempts = 0
    step = PATTERNS[pattern]

    @retry_on_conflict(attempts=100_000)
    def once() -> None:
        nonlocal attempts
        attempts += 1
        step(p)

    for _ in range(times):
        once()
    return attempts - times


def count(p: Storage, pattern: str) -> int:
    """The counter's value."""
    with p:
        value: Any = {"in_place": "d", "scalar": "i", "new_object": "r", "create_or_bump": "c"}[
            pattern
        ]
        held = p.get(value)
        if held is None:
            return 0
        return held if isinstance(held, int) else int(held["n"])
