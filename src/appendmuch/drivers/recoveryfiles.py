"""Recovery files of a SQL driver: rows it could not write, saved, and found again.

When ``close()`` cannot write the queue, the rows go to a recovery file (see
:mod:`appendmuch.recovery`) and the WriteError raised says where.  Opening the table
for writing later refuses (:class:`~appendmuch.errors.RecoveryPendingError`) while a
recovery file in the driver's recovery directory holds rows the table lacks, until
they are replayed (:meth:`RecoveryFiles.apply_recovered`) or the file is moved away.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import RecoveryPendingError, WriteError
from ..recovery import (
    Entry,
    list_recovery_files,
    read_recovery,
    recovery_file_name,
    same_database,
    time_range,
    unreplayed,
    write_recovery_file,
)

if TYPE_CHECKING:
    import threading

    from .base import Row
    from .batching import Pending
    from .sharing import Engine

__all__ = ["RecoveryFiles"]

_T = TypeVar("_T")


class RecoveryFiles:
    """The recovery-file methods of :class:`~appendmuch.drivers.sql.SQLDriver` (a
    mixin: ``self`` is the driver)."""

    def recovery_files(self) -> list[str]:
        """Recovery files of this database and table in the recovery directory that
        still hold rows the table lacks, oldest first (connects if needed)."""
        self.ensure()
        with self._lock:
            return self._waiting_recovery_files()

    def _waiting_recovery_files(self) -> list[str]:
        directory = self.recovery_dir or self._default_recovery_dir()
        current = self.identity()
        waiting = []
        for path in list_recovery_files(directory, current):
            saved = read_recovery(path)
            if any(same_database(done, current) for done in saved.replayed_into):
                continue
            if self._unreplayed(saved.entries):
                waiting.append(path)
        return waiting

    def _unreplayed(self, entries: list[Entry]) -> list[Entry]:
        """The entries of a recovery file the table does not hold yet (by content)."""
        span = time_range(entries)
        if span is None:
            return []
        return unreplayed(entries, self._rows_between(*span))

    def _refuse_if_recovery_pending(self) -> None:
        # Replayed rows take new seqs, so writing first could not collide with them;
        # but they would then come after newer writes.  Where this driver can see the
        # file (its recovery directory), it asks for the replay first.
        waiting = self._waiting_recovery_files()
        if waiting:
            raise RecoveryPendingError(
                f"{self.where()} has rows saved in {', '.join(waiting)} that were never "
                f"written; write them first with `appendmuch replay {waiting[0]} DB` (or "
                "appendmuch.recovery.replay), or move the file away to discard them",
                recovery_files=waiting,
            )

    def _flush_or_save(self) -> None:
        try:
            self._flush_locked()
        except Exception as exc:  # whatever stops the write, the rows must not be lost
            pending = self._pending
            pending.release()
            inserts, updates = pending.snapshot()
            self._save_rows(inserts, updates, exc, lambda: pending.done(len(inserts), len(updates)))

    def _save_left(self, left: tuple[list[Row], list[tuple[int, Row]], Exception] | None) -> None:
        """Shared mode, closing: save the rows the last round could not commit."""
        if left is not None:
            inserts, updates, cause = left
            self._save_rows(inserts, updates, cause, lambda: None)

    def _save_rows(
        self,
        inserts: list[Row],
        updates: list[tuple[int, Row]],
        cause: Exception,
        saved: Callable[[], None],
    ) -> None:
        """Save rows close() could not write to a recovery file, and raise WriteError
        naming it (``saved`` takes them off the queue first)."""
        directory = self.recovery_dir or self._default_recovery_dir()
        path = recovery_file_name(directory, self.recovery_stem())
        try:
            count = write_recovery_file(path, inserts, updates, self.identity())
        except OSError as save_error:
            raise WriteError(
                f"{cause}; saving them to a recovery file at {path} failed too "
                f"({save_error}): they are still queued in this process"
            ) from cause
        saved()
        raise WriteError(
            f"could not write {count} queued rows to {self.where()} on close; they "
            f"were saved to the recovery file {path} — write them with "
            f"`appendmuch replay {shlex.quote(path)} {self._replay_target()}` before "
            "writing to the table again "
            f"(cause: {cause.__cause__ or cause})",
            recovery_file=path,
        ) from cause

    def apply_recovered(self, entries: list[Entry]) -> int:
        """Write the rows the table lacks under new seqs, in one transaction."""
        self._refuse_writes("replay a recovery file")
        self.ensure()
        self.flush()

        def replay() -> int:
            todo = self._unreplayed(entries)
            inserts: list[Row] = []
            updates: list[tuple[int, Row]] = []
            for row, replaces in todo:
                new = (self.next_seq(), *row[1:])
                if replaces is None:
                    inserts.append(new)
                else:
                    updates.append((replaces, new))
            if todo:
                self._insert_atomically(inserts, updates)
            return len(todo)

        sharing = self.sharing
        if sharing is None:
            with self._lock:
                return replay()
        # shared mode: no other writer commits meanwhile (new seqs after all of theirs)
        return self.in_writer(lambda: sharing.exclusively(replay))

    if TYPE_CHECKING:  # the driver's own
        recovery_dir: str | None
        sharing: Engine | None
        _lock: threading.RLock
        _pending: Pending

        def ensure(self) -> None: ...

        def flush(self) -> None: ...

        def next_seq(self) -> int: ...

        def where(self) -> str: ...

        def identity(self) -> dict[str, Any]: ...

        def recovery_stem(self) -> str: ...

        def in_writer(self, work: Callable[[], _T]) -> _T: ...

        def _default_recovery_dir(self) -> str: ...

        def _replay_target(self) -> str: ...

        def _rows_between(self, low: float, high: float) -> Iterator[Row]: ...

        def _flush_locked(self) -> None: ...

        def _refuse_writes(self, what: str) -> None: ...

        def _insert_atomically(self, rows: list[Row], updates: list[tuple[int, Row]]) -> None: ...
