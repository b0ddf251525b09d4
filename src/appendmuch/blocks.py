"""Working copies of mutable values inside ``with storage:`` blocks.

State is kept per namespace, not per Storage object, so every Storage object of a
namespace (and nested blocks on any of them) sees the same working copy and no
mutation is lost between them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Block", "Working"]


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


class Block:
    """Open ``with`` blocks of one namespace: how deep, and the working copies."""

    __slots__ = ("depth", "working")

    def __init__(self) -> None:
        self.depth = 0
        self.working: dict[str, Working] = {}
