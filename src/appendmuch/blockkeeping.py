"""``with`` blocks, kept by the Store: opening and closing them per thread and
namespace, rewinding a failed one, writing a block's changed working copies, and (in
single-writer mode) the write gate that keeps other threads out of a block's
namespaces.  :class:`BlockKeeping` is a part of :class:`~appendmuch.store.Store` (a
mixin): its methods run on the Store and use its state.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from .blocks import (
    ABSENT,
    STAGED,
    Block,
    BlockPart,
    Mark,
    Staged,
    Working,
    level_at,
    restore,
    running,
)
from .codec import Encoded
from .copying import safe_deepcopy
from .errors import ConflictError, RoundTripError
from .fieldlog import FieldLog
from .location import caller_context
from .logtree import cannot_store, show_ns, too_large
from .names import dbns2tuple

if TYPE_CHECKING:
    import _thread
    from collections.abc import Iterable

    from .codec import Codec
    from .drivers.base import DBDriver
    from .shared import SharedSide

__all__ = ["Appended", "BlockKeeping", "Done"]

_now = time.time
_getframe = sys._getframe
_get_ident = threading.get_ident
#: how often a write waiting for another thread's block looks again (it is also woken)
_GATE_POLL = 0.005

#: an entry appended whose callback is still to be called:
#: (namespace, field, data, created_at, context, seq)
Done = tuple[tuple[str, ...], str, Any, float, str, int]


class Appended:
    """Entries one operation appended, whose callbacks are still to be called, and
    whether a full batch is waiting for the driver."""

    __slots__ = ("due", "entries")

    def __init__(self) -> None:
        self.entries: list[Done] = []
        self.due = False


class BlockKeeping:
    """The Store's ``with``-block bookkeeping (see :mod:`appendmuch.blocks`)."""

    if TYPE_CHECKING:  # the Store's own, which these methods use
        driver: DBDriver
        codec: Codec
        by_dbns: dict[str, dict[str, Any]]
        blocks: dict[tuple[int, str], Block]
        _gate_owner: int | None
        _gate_turn: _thread.LockType
        lock: threading.RLock
        scalars: dict[str, dict[str, Any]]
        _shared_side: SharedSide | None

        def append_entry(
            self,
            namespace: tuple[str, ...],
            dbns: str,
            field: str,
            value: Any,
            data: Any = ...,
            raw: bytes | None = None,
            context: str = "",
            working: Any = None,
            appended: Appended | None = None,
            exact: bool = True,
        ) -> int: ...

        def _finish(self, entries: Iterable[Done], due: bool) -> None: ...

    def enter_block(self, dbns: str, frame: FrameType | None = None) -> bool:
        """Package-internal (not public API).

        Open (or nest) this thread's block on ``dbns`` (``frame``: the one running the
        ``with`` statement); True once it is open."""
        key = (_get_ident(), dbns)
        level = level_at(frame)
        block = self.current_block(dbns)
        if block is None:
            side = self._shared_side
            if side is not None and not self._encloses(key):
                side.begin_block()
            scalars = self.scalars.get(dbns)
            if scalars:
                scalars.clear()  # (reads of the namespace go through __getattr__, noted)
            # Published last, and nothing that could raise follows: a Ctrl-C in
            # __enter__ leaves no block open that __exit__ will never close.
            self.blocks[key] = Block(level)
        else:  # a nested block: note the working copies as they are, to rewind to
            mark = (self._mark(block), len(block.staged))
            block.marks = [*block.marks, mark]
            block.frames = [*block.frames, level]
            block.depth += 1
        return True

    def current_block(self, dbns: str) -> Block | None:
        """Package-internal (not public API).

        This thread's open block on ``dbns``, if any.  Levels whose ``with``
        statement is no longer running (an interrupt landed as it began or ended,
        where its ``__exit__`` could not close it) are closed first, as failed ones
        are: they must not keep later writes for an end that never comes."""
        if not self.blocks:
            return None
        key = (_get_ident(), dbns)
        block = self.blocks.get(key)
        while block is not None and block.depth and not running(block.frames[-1], _getframe(1)):
            if block.marks:  # (a nested level: it rewinds to its mark)
                mark = block.marks.pop()
                block.frames.pop()
                self._rewind(dbns, block, mark)
                block.depth -= 1
            else:
                self._close_block(key, block)
                block = None
        return block

    def exit_block(self, namespace: tuple[str, ...], dbns: str, ok: bool) -> None:
        """Package-internal: a ``with`` on ``dbns`` ends (``ok``: without an exception)."""
        key = (_get_ident(), dbns)
        block = self.blocks.get(key)
        if block is None or not block.depth:
            return
        if not block.marks:  # the namespace's outermost level
            if self._shared_side is not None and self._encloses(key):
                # Shared mode, inside a block of this thread on another namespace: its
                # writes are kept for that block's end, and committed with it.
                if ok:
                    block.staged.extend(self._changed_copies(dbns, block, caller_context()))
                    block.depth, block.frames = 0, []
                else:
                    self._close_block(key, block)
                return
            try:
                if ok:
                    self.flush_block(namespace, dbns, caller_context(), block=block)
            finally:  # (an interrupt in here leaves it to the next current_block() to close)
                self._close_block(key, block)
            return
        mark = block.marks.pop()
        block.frames.pop()
        try:
            if ok:
                self.flush_block(namespace, dbns, caller_context(), nested=True, block=block)
            else:
                self._rewind(dbns, block, mark)
        except BaseException:  # a nested exit that cannot save fails like a block
            if ok:
                self._rewind(dbns, block, mark)
            raise
        finally:
            block.depth -= 1

    def _encloses(self, key: tuple[int, str]) -> bool:
        """Whether the thread of ``key`` has a block open on another namespace (one the
        block of ``key`` is nested in).  O(open blocks)."""
        me = key[0]
        return any(
            other[0] == me and other != key and block.depth
            for other, block in self.blocks.copy().items()
        )

    def _kept_for(self, key: tuple[int, str]) -> list[tuple[tuple[int, str], Block]]:
        """Shared mode: the blocks of the thread of ``key`` that ended inside one of its
        blocks on another namespace, their writes kept for that block's end."""
        me = key[0]
        return [
            (other, block)
            for other, block in self.blocks.copy().items()
            if other[0] == me and not block.depth
        ]

    def _close_block(self, key: tuple[int, str], block: Block) -> None:
        """The outermost level of ``block`` ended: forget it (and its unsaved changes),
        and let another thread's blocked write go on.  When it was the thread's last
        open block, the blocks whose writes were kept for its end go with it."""
        block.working.clear()
        block.staged.clear()
        if self.blocks.get(key) is block:
            del self.blocks[key]
        if not self._encloses(key):
            for other, kept in self._kept_for(key):
                kept.working.clear()
                kept.staged.clear()
                if self.blocks.get(other) is kept:
                    del self.blocks[other]
            side = self._shared_side
            if side is not None and side.reserved:
                side.end_block()
        if self._gate_owner == key[0]:
            with contextlib.suppress(RuntimeError):  # (released already)
                self._gate_turn.release()

    def _mark(self, block: Block) -> dict[str, Mark]:
        """Each working copy's seq, encoding and state, at the start of a nested block."""
        marks: dict[str, Mark] = {}
        for field, working in block.working.items():
            try:
                encoding: bytes | None = self.codec.encode_unverified(working.obj).data
            except (TypeError, ValueError):  # it holds something unstorable: always rewind
                encoding = None
            marks[field] = Mark(working.seq, encoding, safe_deepcopy(working.obj))
        return marks

    def _rewind(self, dbns: str, block: Block, mark: tuple[dict[str, Mark], int]) -> None:
        """A nested block failed: undo the unsaved changes made during it, keep the
        enclosing block's.

        A working copy first read in the failed block is dropped; one the enclosing
        block held goes back to its state when the failed block began, or, if it was
        saved since (a deeper block's exit, ``flush()``, an assignment), to what was
        saved.  Lists, dicts, sets and bytearrays are restored in place, so the
        enclosing block's references to them stay valid.  (Shared mode: the writes the
        failed block kept are dropped.)
        """
        marks, staged = mark
        del block.staged[staged:]
        with self.lock:
            node = self.by_dbns.get(dbns) or {}
            for field, working in list(block.working.items()):
                mark_of = marks.get(field)
                log = node.get(field)
                current = working.seq == STAGED or (
                    type(log) is FieldLog and log.latest_seq == working.seq
                )
                if mark_of is None or not current:
                    del block.working[field]  # read in the failed block, or stale
                    continue
                if mark_of.seq == working.seq or self._shared_side is not None:
                    # (shared mode: nothing of the failed block was written, whatever
                    # its own inner blocks kept: back to the state when it began)
                    target, state = mark_of.encoding, mark_of.state
                else:
                    assert type(log) is FieldLog
                    target, state = working.baseline, safe_deepcopy(log.latest)
                try:
                    unchanged = self.codec.encode_unverified(working.obj).data == target
                except (TypeError, ValueError):
                    unchanged = False
                if not unchanged:
                    working.obj = restore(working.obj, state)

    def flush_block(
        self,
        namespace: tuple[str, ...],
        dbns: str,
        context: str,
        *,
        nested: bool = False,
        block: Block | None = None,
    ) -> None:
        """Package-internal (not public API).

        Save what this thread's block on ``dbns`` changed: every working copy changed
        since it was read or last written, all of them or (if one cannot be stored)
        none.  Single-writer mode: written at once, as assignments are.  Shared mode:
        kept with the block's other writes, and all of them committed together at the
        outermost end (or ``flush()``), or none and ConflictError.  (``block``: the one
        ``__exit__`` ends; its statement has left the body already.)"""
        if block is None:
            block = self.current_block(dbns)
        if block is None:
            return
        side = self._shared_side
        if side is None:
            self._write_block(namespace, dbns, context, block)
            return
        changed = self._changed_copies(dbns, block, context)
        if nested:
            block.staged.extend(changed)
            return
        key = (_get_ident(), dbns)
        kept = [(other, kept) for other, kept in self._kept_for(key) if other != key]
        parts: list[BlockPart] = [
            (dbns2tuple(other[1]), other[1], other_block, list(other_block.staged))
            for other, other_block in kept
        ]
        parts.append((namespace, dbns, block, [*block.staged, *changed]))
        if not any(staged for _, _, _, staged in parts):
            return
        try:
            side.commit_block(parts)
        except ConflictError:
            for _, _, failed, _ in parts:
                failed.working.clear()
                failed.staged.clear()
            raise
        for other, other_block in kept:  # (their with statements ended: committed now)
            if self.blocks.get(other) is other_block:
                del self.blocks[other]

    def _changed_copies(self, dbns: str, block: Block, context: str) -> list[Staged]:
        """Shared mode: the working copies changed since read or kept, as writes to
        keep (checked, all or none); their baselines move to what is kept."""
        codec = self.codec
        changed: list[tuple[str, Working, Encoded]] = []
        for field, working in block.working.items():
            encoded = codec.encode_unverified(working.obj)
            if encoded.data != working.baseline:
                changed.append((field, working, encoded))
        staged = []
        now = _now()
        for field, _, encoded in changed:
            try:
                keep, exact = codec.finish(encoded)
            except RoundTripError as exc:
                raise cannot_store(exc, dbns, field) from exc
            if len(encoded.data) > self.driver.max_value_bytes:
                raise too_large(dbns, field, len(encoded.data), self.driver)
            staged.append(Staged(field, keep, encoded.data, exact, now, context))
        for (_, working, encoded), _kept in zip(changed, staged, strict=True):
            working.baseline = encoded.data
            working.seq = STAGED
        return staged

    def _write_block(
        self, namespace: tuple[str, ...], dbns: str, context: str, block: Block
    ) -> None:
        codec = self.codec
        node = self.by_dbns.get(dbns) or {}
        changed: list[tuple[str, Working, Encoded]] = []
        for field, working in list(block.working.items()):
            log = node.get(field)
            if type(log) is not FieldLog or log.latest_seq != working.seq:
                del block.working[field]  # written meanwhile: the newer value wins
                continue
            encoded = codec.encode_unverified(working.obj)
            if encoded.data != working.baseline:
                changed.append((field, working, encoded))
        if not changed:
            return
        # All or none: check every changed copy before writing any, append them all
        # before a full batch goes to the driver or a callback runs (whose failure
        # must not stop the rest).
        kept = []
        for field, _, encoded in changed:
            try:
                kept.append(codec.finish(encoded))
            except RoundTripError as exc:
                raise cannot_store(exc, dbns, field) from exc
        driver = self.driver
        for field, _, encoded in changed:
            if len(encoded.data) > driver.max_value_bytes:
                raise too_large(dbns, field, len(encoded.data), driver)
        appended = Appended()
        while True:
            if self.blocks:
                self._await_gate(dbns)
            with self.lock:
                if self.blocks and self._must_wait(dbns):
                    continue
                node = self.by_dbns.get(dbns) or {}
                for (field, working, encoded), (keep, exact) in zip(changed, kept, strict=True):
                    log = node.get(field)
                    if type(log) is not FieldLog or log.latest_seq != working.seq:
                        del block.working[field]  # this thread wrote it just now: it wins
                        continue
                    self.append_entry(
                        namespace,
                        dbns,
                        field,
                        None,
                        keep,
                        encoded.data,
                        context,
                        working.obj if encoded.mutable else None,
                        appended,
                        exact,
                    )
            break
        self._finish(appended.entries, appended.due)

    def refresh_copies(self, dbns: str, fields: tuple[str, ...]) -> None:
        """Package-internal: ``Storage.refresh``: drop this thread's working copies on ``dbns``."""
        block = self.blocks.get((_get_ident(), dbns))
        if block is None:
            return
        if not fields:
            block.working.clear()
        for field in fields:
            block.working.pop(field, None)

    # ------------------------------------------------------------------ the write gate

    def _await_gate(self, dbns: str) -> None:
        """Single-writer mode, before a write of ``dbns`` by this thread: wait while
        another thread's block that writes covers ``dbns`` (or, for a block of this
        thread, while any other block writes), then take the gate for this thread's
        block (see :meth:`_must_wait`)."""
        while True:
            with self.lock:
                if not self._must_wait(dbns):
                    return
            self._gate_turn.acquire(timeout=_GATE_POLL)  # (released when a block ends)

    def _must_wait(self, dbns: str) -> bool:
        """Under the lock, before this thread writes ``dbns``: whether it must wait.

        One thread at a time has blocks that write (it *owns the gate*, for as long as
        it has blocks open); others' writes of the namespaces its blocks cover wait,
        so what those blocks read stays current.  A block's first write takes the gate
        after checking that nothing it read has changed (else ConflictError, nothing
        written).  The owner never waits for anyone, so no two threads wait for each
        other.  Shared mode keeps a block's writes until its end instead."""
        if self._shared_side is not None:
            return False
        me = _get_ident()
        owner = self._gate_owner
        blocks = self.blocks.copy()
        mine = (me, dbns) in self.blocks
        if owner is not None and owner != me and any(key[0] == owner for key in blocks):
            return mine or (owner, dbns) in self.blocks
        if mine and owner != me:
            self._gate_owner = me
            self._check_reads(me)
        return False

    def _check_reads(self, thread: int) -> None:
        """Raise ConflictError if a field a block of ``thread`` read has changed."""
        stale = []
        for (owner, dbns), block in self.blocks.copy().items():
            if owner != thread:
                continue
            node = self.by_dbns.get(dbns) or {}
            for field, version in block.reads.items():
                log = node.get(field)
                current = log.latest_seq if type(log) is FieldLog else ABSENT
                if current != version:
                    stale.append(
                        f"{field!r} of {show_ns(dbns)} (read at seq {version}, now {current})"
                    )
        if stale:
            raise ConflictError(
                f"the with block read {', '.join(stale)}, which another thread changed "
                "before the block's first write; nothing was written. Run the block again "
                "(appendmuch.retry_on_conflict does that)"
            )
