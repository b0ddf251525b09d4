"""What a ``with storage:`` block keeps: working copies of mutable values, what it
read, and (shared mode) the writes it keeps until it ends.

State is kept per thread and namespace, not per Storage object: every Storage object
of a namespace (and nested blocks on any of them) sees the same working copy within
one thread, and no mutation is lost between them; another thread's blocks have their
own copies.

A block is serializable (SPEC section 11): every write it makes is based on the
current values of everything it read, or it raises ``ConflictError`` and stores
nothing.  So it notes the *version* of each field it read (the seq of the field's
latest entry then; 0 for a field never written) and, before its first write (single
writer) or at its end (shared mode), checks that none of them changed.
"""

from __future__ import annotations

import inspect
from types import FrameType
from typing import Any

__all__ = [
    "ABSENT",
    "NOT_NOTED",
    "STAGED",
    "Block",
    "Mark",
    "Staged",
    "Working",
    "restore",
    "running",
]

#: the version a block notes for a field that has no entry at all
ABSENT = 0
#: the seq of a working copy whose latest state is a write the block keeps (shared mode)
STAGED = -1
#: Store._read_in_block: the read was only noted, the ordinary read goes on
NOT_NOTED: Any = object()


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


class Staged:
    """A write a shared-mode block keeps until it ends (an assignment, a ``del``, or a
    changed working copy at a nested block's end): the entry as the log will hold it."""

    __slots__ = ("context", "data", "exact", "field", "raw", "time")

    def __init__(
        self, field: str, data: Any, raw: bytes | None, exact: bool, time: float, context: str
    ) -> None:
        self.field = field
        #: the object the log keeps (GONE for a deletion), never shared with the caller
        self.data = data
        #: its stored bytes (None for a deletion)
        self.raw = raw
        #: whether ``raw`` decodes back to ``data`` exactly (see Codec.finish)
        self.exact = exact
        self.time = time
        self.context = context


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
    copies, one mark per nested level (``len(marks) == depth - 1``), what was read,
    and the writes kept for the end (shared mode)."""

    __slots__ = ("depth", "frames", "marks", "reads", "staged", "working")

    def __init__(self, frame: FrameType | None = None) -> None:
        self.depth = 1
        #: per level, the frame running its ``with`` statement (see leaked())
        self.frames: list[FrameType | None] = [frame]
        self.working: dict[str, Working] = {}
        #: per nested level: the working copies as they were, and len(staged) then
        self.marks: list[tuple[dict[str, Mark], int]] = []
        #: field -> version when first read in the block (a write of its own updates it)
        self.reads: dict[str, int] = {}
        #: shared mode: writes kept until the outermost end, in order
        self.staged: list[Staged] = []

    def staged_value(self, field: str) -> Staged | None:
        """The newest write of ``field`` this block kept, if any.  O(staged)."""
        for staged in reversed(self.staged):
            if staged.field == field:
                return staged
        return None


#: code flags of frames that may be suspended (generators, coroutines): never taken
#: for gone while off the stack
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def running(frame: FrameType | None, top: FrameType | None) -> bool:
    """Whether ``frame`` (a ``with`` statement's) is on the stack whose top is ``top``,
    or may be suspended.  A block whose statement's frame is neither was left without
    its ``__exit__`` running (an interrupt as it began): it is closed as failed.
    O(stack depth)."""
    if frame is None or frame.f_code.co_flags & _SUSPENDABLE:
        return True
    while top is not None:
        if top is frame:
            return True
        top = top.f_back
    return False


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
