"""Rows waiting to be written by a SQL driver, kept in order until committed."""

from __future__ import annotations

from collections import deque
from contextlib import suppress
from itertools import islice
from operator import itemgetter
from typing import TypeVar

from .base import Row

__all__ = ["Pending", "snapshot"]

_T = TypeVar("_T")

_value = itemgetter(3)


def snapshot(items: deque[_T], start: int = 0, stop: int | None = None) -> list[_T]:
    """``items[start:stop]`` of a deque, copied.  Copying iterates, and another thread
    may append meanwhile (a finalizer run by the garbage collector lets it in): then
    the copy starts again."""
    while True:
        try:
            return list(islice(items, start, stop))
        except RuntimeError:  # (deque mutated during iteration)
            continue


def _bytes(rows: list[Row]) -> int:
    """Bytes of the rows' values (tombstones count nothing)."""
    return sum(map(len, filter(None, map(_value, rows))))


class Pending:
    """Queued inserts and in-place overwrites (replace semantics), oldest first.

    A row leaves the queue only once it is committed: a batch being written is *taken*
    (the first ``held`` inserts and ``held_updates`` overwrites) but stays queued until
    :meth:`done`, so an interruption anywhere (an error, a KeyboardInterrupt, a lost
    connection) can lose no row: :meth:`release` makes taken rows due again.

    ``add`` is the application's hot path and takes no lock: appending to a deque is
    atomic, and the only code that removes rows (``done``, under the driver's lock)
    removes rows from the other end.  Everything else runs under the driver's lock.
    Overwriting a row that is still queued and not taken swaps the queued row, so the
    database sees one insert.
    """

    __slots__ = ("due_at", "held", "held_updates", "inserts", "size", "updates")

    def __init__(self, size: int) -> None:
        self.size = size
        self.inserts: deque[Row] = deque()
        #: (seq of the stored row to overwrite, new row)
        self.updates: list[tuple[int, Row]] = []
        #: inserts / overwrites at the front taken by a batch not yet committed
        self.held = 0
        self.held_updates = 0
        #: queue length at which a full batch (beyond the taken rows) is waiting
        self.due_at = size

    def __len__(self) -> int:
        return len(self.inserts) + len(self.updates)

    def add(self, row: Row) -> bool:
        """Queue an insert; True when a full batch is waiting.  O(1), lock-free."""
        inserts = self.inserts
        inserts.append(row)
        return len(inserts) >= self.due_at

    def replace(self, old_seq: int | None, row: Row) -> bool:
        """Queue an overwrite of the row stored under ``old_seq`` (under the lock)."""
        if old_seq is not None:
            inserts = self.inserts
            start = self.held
            for i, queued in enumerate(islice(inserts, start, None), start):
                if queued[0] == old_seq:
                    inserts[i] = row
                    return self.unsent() >= self.size
            updates = self.updates
            for i in range(self.held_updates, len(updates)):
                if updates[i][1][0] == old_seq:
                    updates[i] = (updates[i][0], row)
                    return self.unsent() >= self.size
            updates.append((old_seq, row))
            return self.unsent() >= self.size
        return self.add(row)

    def unsent(self) -> int:
        """Rows queued and not taken by a batch."""
        return len(self.inserts) - self.held + len(self.updates) - self.held_updates

    def take(self, max_bytes: int) -> tuple[list[Row], list[tuple[int, Row]]]:
        """The next batch: every row not yet taken, cut to about ``max_bytes`` of
        values (at least one row).  The rows stay queued, taken, until :meth:`done`."""
        held = self.held
        rows = snapshot(self.inserts, held)
        updates = self.updates[self.held_updates :]
        size = _bytes(rows)
        if size > max_bytes:
            rows = _cut(rows, max_bytes)
            updates = []  # overwrites follow the inserts queued before them
        elif updates and size + _bytes([row for _, row in updates]) > max_bytes:
            budget = max_bytes - size
            kept = _cut([row for _, row in updates], budget) if budget > 0 or not rows else []
            updates = updates[: len(kept)]
        self.held = held = held + len(rows)
        self.held_updates += len(updates)
        self.due_at = held + self.size
        return rows, updates

    def done(self, count: int, updates: int) -> None:
        """The first ``count`` inserts and ``updates`` overwrites are committed: drop them."""
        inserts = self.inserts
        for _ in range(count):
            inserts.popleft()
        self.held -= count
        self.due_at = self.held + self.size
        if updates:
            del self.updates[:updates]
            self.held_updates -= updates

    def newest_seq(self, count: int, updates: int) -> int:
        """The largest seq among the first ``count`` inserts and ``updates`` overwrites."""
        seqs = [row[0] for _, row in self.updates[:updates]]
        if count:
            seqs.append(self.inserts[count - 1][0])
        return max(seqs, default=0)

    def release(self) -> None:
        """Taken rows were not (or not surely) committed: they are due again, in order."""
        self.held = self.held_updates = 0
        self.due_at = self.size

    def swap(self, rows: list[Row], updates: list[tuple[int, Row]]) -> None:
        """Make ``rows`` and ``updates`` the whole queue, none taken (shared mode sorting
        out or renumbering rows of a failed commit, under the lock and the lease,
        nothing in flight).  One statement: an interrupt leaves the queue either as it
        was or as it becomes, never without rows it held."""
        self.inserts, self.updates, self.held, self.held_updates, self.due_at = (
            deque(rows),
            updates,
            0,
            0,
            self.size,
        )

    def snapshot(self) -> tuple[list[Row], list[tuple[int, Row]]]:
        """Everything queued, taken or not (a copy)."""
        return snapshot(self.inserts), list(self.updates)

    def oldest_time(self) -> float | None:
        """``created_at`` of the oldest queued row, or None when nothing is queued."""
        times = [row[4] for _, row in self.updates[:1]]
        with suppress(IndexError):  # the flusher may empty the queue meanwhile
            times.append(self.inserts[0][4])
        return min(times) if times else None

    def newest_time(self) -> float | None:
        """``created_at`` of the newest queued row, or None when nothing is queued."""
        times = [row[4] for _, row in self.updates]
        with suppress(IndexError):
            times.append(self.inserts[-1][4])
        return max(times) if times else None

    def clear(self) -> None:
        self.inserts.clear()
        self.updates = []
        self.release()


def _cut(rows: list[Row], max_bytes: int) -> list[Row]:
    """The longest prefix of ``rows`` within ``max_bytes`` of values (at least one row)."""
    total = 0
    for i, row in enumerate(rows):
        value = row[3]
        total += len(value) if value is not None else 0
        if total > max_bytes:
            return rows[: max(i, 1)]
    return rows
