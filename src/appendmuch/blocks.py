"""Working copies of mutable values inside ``with storage:`` blocks.

State is kept per thread and namespace, not per Storage object: every Storage object
of a namespace (and nested blocks on any of them) sees the same working copy within
one thread, and no mutation is lost between them; another thread's blocks have their
own copies.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Block", "Mark", "Working", "restore"]


class Working:
    """A value handed out inside a block, with what it looked like when stored."""

    __slots__ = ("baseline", "obj", "seq")

    def __init__(self, obj: Any, baseline: bytes, seq: int) -> None:
        #: the object the application holds and may mutate in place
        self.obj = obj
        #: its encoding when it was read or last written
        self.baseline = baseline
        #: seq of the stored entry it was read from; another write makes it stale
        self.seq = seq


class Mark:
    """A working copy as it was when a nested block began (what a failure rewinds to)."""

    __slots__ = ("encoding", "seq", "state")

    def __init__(self, seq: int, encoding: bytes | None, state: Any) -> None:
        self.seq = seq
        #: its encoding then (None if it could not be encoded)
        self.encoding = encoding
        #: a private deep copy of it then
        self.state = state


class Block:
    """Open ``with`` blocks of one thread on one namespace: how deep, the working
    copies, and one mark per nested level (``len(marks) == depth - 1``)."""

    __slots__ = ("depth", "marks", "working")

    def __init__(self) -> None:
        self.depth = 0
        self.working: dict[str, Working] = {}
        self.marks: list[dict[str, Mark]] = []


def restore(obj: Any, state: Any) -> Any:
    """Make ``obj`` hold ``state`` (a private copy): in place for lists, dicts, sets
    and bytearrays, so references to ``obj`` stay valid; otherwise return ``state``."""
    kind = type(obj)
    if kind is not type(state):
        return state
    if kind is list or kind is bytearray:
        obj[:] = state
        return obj
    if kind is dict or kind is set:
        obj.clear()
        obj.update(state)
        return obj
    return state
