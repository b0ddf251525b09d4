"""The in-memory driver: a list of rows, for tests and throwaway logs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..errors import DumpFormatError
from .base import DBDriver, Row

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
        self._position: dict[int, int] | None = None  # seq -> index, built for replace
        self._ordered = True

    def ensure(self) -> None:
        """Nothing to check: the list always exists."""

    def load_rows(self) -> Iterator[Row]:
        rows = self._sorted_rows()
        if rows:
            self._saw_seq(rows[-1][0])
        return iter(rows)

    def _sorted_rows(self) -> list[Row]:
        if not self._ordered:
            self._rows.sort(key=lambda row: row[0])
            self._position = None
            self._ordered = True
        return list(self._rows)

    def append(self, row: Row) -> bool:
        rows = self._rows
        if rows and row[0] < rows[-1][0]:
            self._ordered = False
        if self._position is not None:
            self._position[row[0]] = len(rows)
        rows.append(row)
        self._now = row[4]
        return False

    def replace(self, old_seq: int | None, row: Row) -> bool:
        if old_seq is not None:
            if self._position is None:
                self._position = {r[0]: i for i, r in enumerate(self._rows)}
            index = self._position.pop(old_seq, None)
            if index is not None:
                self._rows[index] = row
                self._position[row[0]] = index
                self._ordered = False
                self._now = row[4]
                return False
        return self.append(row)

    def flush(self) -> None:
        """Nothing to write: rows are stored on append."""

    def close(self) -> None:
        """Nothing to release; the rows stay for a later Store."""

    def size(self) -> None:
        return None

    def reset(self) -> None:
        self._rows.clear()
        self._position = None
        self._ordered = True

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
        for row in new:
            self.append(row)
