"""The in-memory driver: a list of rows, for tests and throwaway logs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING

from ..errors import DumpFormatError
from .base import DBDriver, Row

if TYPE_CHECKING:
    from ..recovery import Entry

__all__ = ["Memory"]


class Memory(DBDriver):
    """Keeps the log in a Python list; nothing survives the process.

    Closing keeps the rows, so a new ``Store`` on the same ``Memory`` object reopens
    the log (handy for testing reopen behaviour).

    >>> from appendmuch import Memory, Store
    >>> driver = Memory()
    >>> with Store(driver) as store:
    ...     store.storage("game", "p1").score = 3
    >>> Store(driver).storage("game", "p1").score
    3
    """

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[Row] = []
        self._index: dict[int, int] = {}  # seq -> position, for rows[: self._indexed]
        self._indexed = 0
        self._ordered = True
        # The hot path: appending is list.append itself (it returns None: never "due").
        self.append = self._rows.append  # type: ignore[method-assign, assignment]

    def ensure(self) -> None:
        """Nothing to check: the list always exists."""

    @property
    def now(self) -> float | None:
        times = [t for t in (self._now, self._rows[-1][4] if self._rows else None) if t]
        return max(times) if times else None

    def load_rows(self) -> Iterator[Row]:
        rows = self._sorted_rows()
        if rows:
            self.saw_seq(rows[-1][0])
        return iter(rows)

    def _sorted_rows(self) -> list[Row]:
        if not self._ordered:
            self._rows.sort(key=lambda row: row[0])
            self._index.clear()
            self._indexed = 0
            self._ordered = True
        return list(self._rows)

    def append(self, row: Row) -> bool:
        """Store a row (instances bind this straight to ``list.append``)."""
        self._rows.append(row)
        return False

    def replace(self, old_seq: int | None, row: Row) -> bool:
        rows = self._rows
        if old_seq is not None:
            index = self._index
            for position in range(self._indexed, len(rows)):
                index[rows[position][0]] = position
                self._indexed = position + 1  # an interrupted loop keeps its progress
            position = index.get(old_seq, -1)
            if not (0 <= position < len(rows) and rows[position][0] == old_seq):
                # Not where the index says (an interrupted replace): look it up.
                seqs = list(map(itemgetter(0), rows))
                position = seqs.index(old_seq) if old_seq in seqs else -1
            if position >= 0:
                index[row[0]] = position
                rows[position] = row
                index.pop(old_seq, None)
                self._ordered = False
                self._now = row[4]
                return False
        rows.append(row)
        return False

    def has_row(self, seq: int) -> bool:
        """O(1) for the newest row, else O(rows)."""
        rows = self._rows
        return bool(rows) and (rows[-1][0] == seq or any(row[0] == seq for row in rows))

    def flush(self) -> None:
        """Nothing to write: rows are stored on append."""

    def close(self) -> None:
        """Nothing to release; the rows stay for a later Store."""

    def size(self) -> None:
        return None

    def reset(self) -> None:
        self._rows.clear()
        self._index.clear()
        self._indexed = 0
        self._ordered = True

    def apply_recovered(self, entries: list[Entry]) -> int:
        from ..recovery import unreplayed

        todo = unreplayed(entries, iter(self._rows))
        if self._rows:
            self.saw_seq(max(row[0] for row in self._rows))
        for row, replaces in todo:
            new = (self.next_seq(), *row[1:])
            if replaces is None:
                self._rows.append(new)
                self._ordered = False
            else:
                self.replace(replaces, new)
        return len(todo)

    def _iter_rows(self) -> Iterator[Row]:
        return iter(self._sorted_rows())

    def _insert_restored(self, rows: Iterable[Row]) -> None:
        new = list(rows)
        existing = {row[0] for row in self._rows}
        for row in new:
            if row[0] in existing:
                raise DumpFormatError(
                    f"restore: seq {row[0]} already exists in this log; nothing was restored"
                )
        if new:
            self._ordered = False  # sorted by seq when next read
        self._rows.extend(new)
