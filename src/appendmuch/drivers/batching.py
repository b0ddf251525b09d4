"""Rows waiting to be written by a SQL driver, kept in order."""

from __future__ import annotations

from .base import Row

__all__ = ["Pending"]


class Pending:
    """A batch of queued inserts and in-place overwrites (replace semantics).

    A batch is due when it holds ``size`` rows or its oldest row is ``interval``
    seconds old.  Overwriting a row that is itself still queued just swaps the queued
    row, so the database sees one insert.
    """

    __slots__ = ("first_time", "inserts", "interval", "size", "updates")

    def __init__(self, size: int, interval: float) -> None:
        self.size = size
        self.interval = interval
        self.inserts: list[Row] = []
        #: (seq of the stored row to overwrite, new row)
        self.updates: list[tuple[int, Row]] = []
        self.first_time: float | None = None

    def __len__(self) -> int:
        return len(self.inserts) + len(self.updates)

    def add(self, row: Row) -> bool:
        """Queue an insert; True when the batch is due.  O(1)."""
        inserts = self.inserts
        inserts.append(row)
        first = self.first_time
        if first is None:
            self.first_time = first = row[4]
        return len(inserts) + len(self.updates) >= self.size or row[4] - first >= self.interval

    def replace(self, old_seq: int | None, row: Row) -> bool:
        """Queue an overwrite of the row stored under ``old_seq``.  O(batch)."""
        if old_seq is not None:
            for i, queued in enumerate(self.inserts):
                if queued[0] == old_seq:
                    self.inserts[i] = row
                    return self._due(row[4])
            for i, (target, queued) in enumerate(self.updates):
                if queued[0] == old_seq:
                    self.updates[i] = (target, row)
                    return self._due(row[4])
            self.updates.append((old_seq, row))
            if self.first_time is None:
                self.first_time = row[4]
            return self._due(row[4])
        return self.add(row)

    def _due(self, now: float) -> bool:
        first = self.first_time
        return len(self) >= self.size or (first is not None and now - first >= self.interval)

    @property
    def last_time(self) -> float | None:
        """``created_at`` of the newest queued row, or None when empty."""
        times = [row[4] for row in self.inserts[-1:]] + [row[4] for _, row in self.updates]
        return max(times) if times else None

    def clear(self) -> None:
        self.inserts = []
        self.updates = []
        self.first_time = None
