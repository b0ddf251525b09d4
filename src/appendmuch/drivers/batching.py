"""Rows waiting to be written by a SQL driver, kept in order."""

from __future__ import annotations

from collections import deque
from contextlib import suppress

from .base import Row

__all__ = ["Pending"]


class Pending:
    """Queued inserts and in-place overwrites (replace semantics), oldest first.

    ``add`` is the application's hot path and takes no lock: appending to a deque is
    atomic, and the only code that removes rows (``take``, under the driver's lock)
    removes exactly the rows it counted first, from the other end.  Everything else
    runs under the driver's lock.  Overwriting a row that is still queued swaps the
    queued row, so the database sees one insert.
    """

    __slots__ = ("inserts", "size", "updates")

    def __init__(self, size: int) -> None:
        self.size = size
        self.inserts: deque[Row] = deque()
        #: (seq of the stored row to overwrite, new row)
        self.updates: list[tuple[int, Row]] = []

    def __len__(self) -> int:
        return len(self.inserts) + len(self.updates)

    def add(self, row: Row) -> bool:
        """Queue an insert; True when a full batch is waiting.  O(1), lock-free."""
        inserts = self.inserts
        inserts.append(row)
        return len(inserts) >= self.size

    def replace(self, old_seq: int | None, row: Row) -> bool:
        """Queue an overwrite of the row stored under ``old_seq`` (under the lock)."""
        if old_seq is not None:
            inserts = self.inserts
            for i, queued in enumerate(inserts):
                if queued[0] == old_seq:
                    inserts[i] = row
                    return len(self) >= self.size
            for i, (target, queued) in enumerate(self.updates):
                if queued[0] == old_seq:
                    self.updates[i] = (target, row)
                    return len(self) >= self.size
            self.updates.append((old_seq, row))
            return len(self) >= self.size
        return self.add(row)

    def take(self) -> tuple[list[Row], list[tuple[int, Row]]]:
        """Remove and return everything queued so far (under the lock)."""
        inserts = self.inserts
        rows = [inserts.popleft() for _ in range(len(inserts))]
        updates, self.updates = self.updates, []
        return rows, updates

    def give_back(self, rows: list[Row], updates: list[tuple[int, Row]]) -> None:
        """Put rows that could not be written back in front, in order (under the lock)."""
        self.inserts.extendleft(reversed(rows))
        self.updates[:0] = updates

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
