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

import dis
import inspect
from collections.abc import Iterator
from functools import lru_cache
from types import CodeType, FrameType
from typing import Any

__all__ = [
    "ABSENT",
    "NOT_NOTED",
    "STAGED",
    "Block",
    "BlockPart",
    "Level",
    "Mark",
    "Staged",
    "Working",
    "level_at",
    "restore",
    "running",
]

#: the version a block notes for a field that has no entry at all
ABSENT = 0
#: the seq of a working copy whose latest state is a write the block keeps (shared mode)
STAGED = -1
#: Store.read_in_block: the read was only noted, the ordinary read goes on
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
    copies, one mark per nested level (``len(marks) == depth - 1``; shared mode: a
    block whose writes are kept for an enclosing block on another namespace has depth
    0 until its namespace is entered again, then a mark per level), what was read,
    and the writes kept for the end (shared mode)."""

    __slots__ = ("depth", "frames", "marks", "reads", "staged", "working")

    def __init__(self, level: Level | None = None) -> None:
        self.depth = 1
        #: per level, where its ``with`` statement runs (see running())
        self.frames: list[Level | None] = [level]
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


#: shared mode: one namespace's share of a thread's blocks committed together
#: (namespace, dbns, the block, the writes it kept)
BlockPart = tuple[tuple[str, ...], str, Block, list[Staged]]

#: code flags of frames that may be suspended (generators, coroutines): never taken
#: for gone while off the stack
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_BEFORE_WITH = dis.opmap.get("BEFORE_WITH", -1)

#: a level's ``with`` statement: the frame running it and the bytecode offsets of its
#: body
Level = tuple[FrameType, frozenset[int]]


def level_at(frame: FrameType | None) -> Level | None:
    """Where a block opened by ``frame`` (the caller of ``__enter__``) runs."""
    if frame is None:
        return None
    code, at = frame.f_code, frame.f_lasti
    if code.co_code[at : at + 1] != bytes((_BEFORE_WITH,)):
        return None  # (entered by hand or by an ExitStack: open until __exit__)
    body = _with_body(code, at)
    return (frame, body) if body is not None else None


def running(level: Level | None, top: FrameType | None) -> bool:
    """Whether ``level``'s ``with`` statement is still running: its frame is on the
    stack whose top is ``top`` (or may be suspended), and is inside the body.  One
    that is not was left without its ``__exit__`` closing it (an interrupt as it began
    or ended): it is closed as failed.  O(stack depth)."""
    if level is None:
        return True
    frame, body = level
    if frame.f_lasti not in body:
        return False
    if frame.f_code.co_flags & _SUSPENDABLE:
        return True
    while top is not None:
        if top is frame:
            return True
        top = top.f_back
    return False


@lru_cache(maxsize=1024)
def _with_body(code: CodeType, before_with: int) -> frozenset[int] | None:
    """The offsets of the body of the ``with`` statement at ``before_with``: what its
    exception handler protects, and the handlers of the statements inside it, which it
    protects in turn (CPython's exception table).  None if it cannot be told."""
    ranges = list(_exception_table(code.co_exceptiontable))
    handler = next((target for start, _, target in ranges if start == before_with + 2), None)
    if handler is None:
        return None
    body: set[int] = set()
    targets = {handler}
    grew = True
    while grew:
        grew = False
        for start, end, target in ranges:
            if target in targets and start not in body:
                body.update(range(start, end, 2))
                grew = True
        targets |= {target for _, _, target in ranges if target in body}
    return frozenset(body)


def _exception_table(table: bytes) -> Iterator[tuple[int, int, int]]:
    """(start, end, handler) byte offsets of each entry of a code object's exception
    table: varints of 6-bit groups, most significant first, 0x40 continuing and 0x80
    marking an entry's first byte; in code units."""
    at = 0

    def varint() -> int:
        nonlocal at
        byte = table[at]
        at += 1
        value = byte & 63
        while byte & 64:
            byte = table[at]
            at += 1
            value = (value << 6) | (byte & 63)
        return value

    while at < len(table):
        start = varint() * 2
        end = start + varint() * 2
        target = varint() * 2
        varint()  # (stack depth and lasti flag)
        yield start, end, target


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
