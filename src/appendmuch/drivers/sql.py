"""What the SQL drivers share: batching, the background flusher, durability modes.

Rows are queued (:class:`~appendmuch.drivers.batching.Pending`) and written in
batches, each in one transaction.  A batch is written when it is full
(``batch_size`` rows), when the application calls ``store.flush()`` or closes the
store, and at the latest about ``batch_interval`` seconds after its oldest row was
queued: a background thread sees to that even when the application stops writing.
With ``write_through=True`` every row is written before the assignment returns.

A batch that cannot be written stays queued, in order, and the write or flush that hit
the failure raises :class:`~appendmuch.errors.WriteError`.  When ``close()`` cannot
write the queue, the rows go to a recovery file (see :mod:`appendmuch.recovery`) and
the exception says where.

The application thread and the flusher thread share the queue and the connection;
one lock serialises everything except queueing a row, which is lock-free.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import (
    ClosedError,
    DatabaseError,
    ReadOnlyError,
    RecoveryPendingError,
    WriteError,
)
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
from .base import DBDriver, Row
from .batching import Pending
from .layout import TableNames
from .sharing import Sharing

if TYPE_CHECKING:
    from ..codec import Codec

__all__ = ["SQLDriver"]

#: after a failed background flush, wait this long before trying again
_RETRY_AFTER = 1.0
#: shared mode: longest time a write lease is held before the flusher commits it
_LEASE_HOLD = 0.02


class SQLDriver(DBDriver):
    """Base of :class:`~appendmuch.Sqlite3` and :class:`~appendmuch.PostgreSQL`."""

    def __init__(
        self,
        names: TableNames,
        *,
        batch_size: int,
        batch_interval: float,
        write_through: bool,
        read_only: bool,
        recovery_dir: str | os.PathLike[str] | None,
        shared: bool = False,
        follow_interval: float = 0.005,
    ) -> None:
        super().__init__()
        if type(shared) is not bool:
            raise TypeError(f"shared must be True or False, got {shared!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be an int of at least 1, got {batch_size!r}")
        if not batch_interval > 0:
            raise ValueError(f"batch_interval must be positive, got {batch_interval!r}")
        self.table_prefix = names.table_prefix
        self.tblextra = names.tblextra
        self.table = names.table
        self.replace_index_specs = names.replace_index_specs
        #: rows per batch (1 with write_through)
        self.batch_size = 1 if write_through else batch_size
        #: seconds a queued row may wait before the flusher writes it
        self.batch_interval = batch_interval
        #: every assignment returns only after its row is committed
        self.write_through = write_through
        self.read_only = read_only
        self.recovery_dir = None if recovery_dir is None else os.fspath(recovery_dir)
        #: the last error the background flusher met (its rows stay queued)
        self.last_error: Exception | None = None
        self._quoted = f'"{self.table}"'
        self._pending = Pending(self.batch_size)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._connected = False
        #: a write failed in a way that may have committed it (check before rewriting)
        self._uncertain = False
        #: set by recovery.replay(): opening for writing despite waiting recovery files
        self._replaying = False
        #: closed by its Store (retire()): never opens for writing again
        self.retired = False
        self._exit_hook = False
        #: shared mode (several processes write the table): the lease and follower
        self.sharing: Sharing | None = None
        if shared:
            self.sharing = Sharing(
                self, hold=min(batch_interval / 2, _LEASE_HOLD), poll=follow_interval
            )
        # the hot path: queueing a row is the queue's own lock-free add
        self.append = self._pending.add  # type: ignore[method-assign]

    # ------------------------------------------------------------------ hooks

    @abstractmethod
    def _connect(self) -> None:
        """Open connections; check or create the table (never in read-only mode);
        note the largest stored seq."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close connections (the driver reconnects on next use)."""

    @abstractmethod
    def _write(self, inserts: list[Row], updates: list[tuple[int, Row]]) -> None:
        """Write one batch in one transaction: all of it, or nothing and raise."""

    @abstractmethod
    def _select(self) -> Iterator[Row]:
        """Every stored row in seq order."""

    @abstractmethod
    def _table_size(self) -> int:
        """Bytes used by the table."""

    @abstractmethod
    def _recreate(self) -> None:
        """Drop the table and create it empty."""

    @abstractmethod
    def _insert_atomically(self, rows: list[Row], updates: list[tuple[int, Row]]) -> None:
        """Insert rows and apply overwrites in one transaction; raise DumpFormatError
        naming a seq that already exists (nothing written)."""

    @abstractmethod
    def _stored_rows(self, seqs: list[int]) -> dict[int, Row]:
        """The stored rows with these seqs, by seq."""

    def _existing_seqs(self, seqs: list[int]) -> set[int]:
        """Which of ``seqs`` are stored."""
        return set(self._stored_rows(seqs))

    @abstractmethod
    def _errors(self) -> tuple[type[Exception], ...]:
        """Exceptions of the database library that mean "this did not work"."""

    @abstractmethod
    def _where(self) -> str:
        """Where the table lives, for messages (a file name, a server)."""

    @abstractmethod
    def _default_recovery_dir(self) -> str:
        """Directory for recovery files when none was chosen."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Which database and table this driver writes to (recorded in recovery files;
        see :func:`appendmuch.recovery.same_database`)."""

    @abstractmethod
    def recovery_stem(self) -> str:
        """The first part of this driver's recovery file names (says whose rows)."""

    @abstractmethod
    def _rows_between(self, low: float, high: float) -> Iterator[Row]:
        """Stored rows whose created_at is in [low, high], in any order."""

    def _abandon_open(self) -> None:
        """An open failed after connecting: disconnect, leaving nothing behind."""
        self._disconnect()

    # ------------------------------------------------------------------ shared mode

    def _lease_take(self, seq: int) -> list[Row]:
        """Block until this process holds the table's write lease; return the rows
        committed with a seq above ``seq``, in seq order.  On failure nothing is held."""
        raise NotImplementedError

    def _lease_drop(self) -> None:
        """Give the write lease back without writing."""
        raise NotImplementedError

    def _lease_commit(
        self, inserts: list[Row], updates: list[tuple[int, Row]], keep: bool
    ) -> list[Row] | None:
        """Write a batch (which may be empty) and commit it, releasing the lease
        (return None).  On failure every row not committed is back in the queue, the
        lease is released, and it raises.  With ``keep`` a backend may keep the lease
        (the commit may then still be in flight), or take it again at once: it returns
        the rows others committed in between (an empty list if none could have)."""
        raise NotImplementedError

    def _sync_rows_after(self, seq: int) -> list[Row]:
        """Committed rows above ``seq``, read now (no lease needed)."""
        raise NotImplementedError

    def _follow_wait(self, stop: threading.Event, poll: float) -> bool:
        """Follower thread: wait until other processes may have committed; False when
        there is certainly nothing new."""
        raise NotImplementedError

    def _follow_rows_after(self, seq: int) -> list[Row]:
        """Follower thread: committed rows above ``seq`` (its own connection)."""
        raise NotImplementedError

    def _follow_close(self) -> None:
        """Follower thread: close its connection (it reopens on next use)."""

    def writers(self) -> int | None:
        """How many shared-mode writers have the table open (None: unknown)."""
        return None

    def lock_holders(self) -> tuple[str, int | None]:
        """Who has the table open for writing: ``("none", 0)``, ``("single", 1)`` or
        ``("shared", number of writers)`` (None: unknown here)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle

    def ensure(self) -> None:
        with self._lock:
            if not self._connected:
                self._connect()
                self._connected = True
                if not self.read_only and not self._replaying:
                    try:
                        self._refuse_if_recovery_pending()
                    except BaseException:
                        self._connected = False
                        self._abandon_open()
                        raise
            if not self.read_only and (self._flusher is None or not self._flusher.is_alive()):
                self._start_flusher()
            if self.sharing is not None and not self.retired:
                self.sharing.start()

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
                f"{self._where()} has rows saved in {', '.join(waiting)} that were never "
                f"written; write them first with `appendmuch replay {waiting[0]} DB` (or "
                "appendmuch.recovery.replay), or move the file away to discard them",
                recovery_files=waiting,
            )

    def _start_flusher(self) -> None:
        if not self._exit_hook:
            # Rows queued through the driver alone (no Store) are written at exit too.
            atexit.register(_close_at_exit, weakref.ref(self))
            self._exit_hook = True
        self._stop.clear()
        tick = self.batch_interval / 4
        if self.sharing is not None:
            tick = min(tick, self.sharing.idle)
        thread = threading.Thread(
            target=_flusher_loop,
            args=(weakref.ref(self), self._stop, self.batch_interval, tick),
            name=f"appendmuch-flusher:{self.table}",
            daemon=True,
        )
        thread.start()
        self._flusher = thread

    def close(self) -> None:
        """Write queued rows and disconnect.

        If the rows cannot be written they are saved to a recovery file, taken off the
        queue, and the :class:`~appendmuch.errors.WriteError` raised names the file
        (replay it with ``appendmuch replay FILE DB``).
        """
        self._stop.set()
        thread, self._flusher = self._flusher, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        sharing = self.sharing
        if sharing is not None:
            sharing.stop()
        with self._lock:
            try:
                if self.pending:
                    self._flush_or_save()
            finally:
                if sharing is not None:
                    with contextlib.suppress(*self._errors(), DatabaseError):
                        sharing.drop()
                    sharing.lost()
                if self._connected:
                    self._connected = False
                    self._disconnect()
                # used again, the driver reconnects and restarts its flusher first
                self.append = self._append_after_close  # type: ignore[method-assign]

    def _append_after_close(self, row: Row) -> bool:
        self.ensure()
        self.append = self._pending.add  # type: ignore[method-assign]
        return self._pending.add(row)

    def retire(self) -> None:
        """Close for good (what ``Store.close()`` calls): write the queue (or save it
        to a recovery file), release the writer lock, and never take it again.

        Later reads (``load_rows``, ``dump``, ``size``) reopen the database read-only;
        writes raise :class:`~appendmuch.errors.ClosedError`.
        """
        try:
            self.close()
        finally:
            with self._lock:
                self.retired = True
                self.read_only = True
                self.append = self._append_retired  # type: ignore[method-assign]

    def _append_retired(self, row: Row) -> bool:
        raise ClosedError(f"{self._where()} was closed with its Store; open a new driver to write")

    def _flush_or_save(self) -> None:
        try:
            self._flush_locked()
        except Exception as exc:  # whatever stops the write, the rows must not be lost
            inserts, updates = self._pending.take()  # in-flight rows were given back
            directory = self.recovery_dir or self._default_recovery_dir()
            path = recovery_file_name(directory, self.recovery_stem())
            try:
                count = write_recovery_file(path, inserts, updates, self.identity())
            except OSError as save_error:
                self._pending.give_back(inserts, updates)
                raise WriteError(
                    f"{exc}; saving them to a recovery file at {path} failed too "
                    f"({save_error}): they are still queued in this process"
                ) from exc
            raise WriteError(
                f"could not write {count} queued rows to {self._where()} on close; they "
                f"were saved to the recovery file {path} — write them with "
                f"`appendmuch replay {path} DB` before writing to the table again "
                f"(cause: {exc.__cause__ or exc})",
                recovery_file=path,
            ) from exc

    # ------------------------------------------------------------------ writing

    def append(self, row: Row) -> bool:
        """Queue a row (instances bind this to the queue's lock-free ``add``)."""
        return self._pending.add(row)

    def replace(self, old_seq: int | None, row: Row) -> bool:
        with self._lock:
            return self._pending.replace(old_seq, row)

    def flush(self) -> None:
        """Write every queued row; when it returns, they are committed."""
        # under the lock: the background flusher may have taken the queue and be
        # committing it right now; returning before that commit ends would
        # acknowledge rows that are not committed yet
        with self._lock:
            if self.pending:
                self._flush_locked()

    def submit(self) -> None:
        """A full batch is waiting: hand it to the database.

        Drivers that pipeline batches (PostgreSQL) return before the server has
        committed it, unless ``write_through``; :meth:`flush` waits.  Errors of
        earlier batches surface here.
        """
        with self._lock:
            self._write_queued(wait=self.write_through)

    def _flush_locked(self) -> None:
        self._write_queued(wait=True)

    def _write_queued(self, wait: bool) -> None:
        count = self.pending
        if not count:
            return
        if self.read_only:
            self._refuse_writes("write")
        failures: tuple[type[Exception], ...] = (DatabaseError, *self._errors())
        try:
            if not self._connected:
                self.ensure()
            self._drain(wait)
        except WriteError:
            raise
        except failures as exc:
            self._uncertain = True
            self._after_failure()
            raise WriteError(
                f"could not write {count} queued rows to {self._where()}: {exc}. They stay "
                "queued, in order, and are written by the next successful flush"
            ) from exc
        self.last_error = None

    def _drain(self, wait: bool) -> None:
        """Write the queue; by default as one batch, synchronously.

        Whatever could not be written must be back in the queue, in order, when this
        raises.
        """
        if self.sharing is not None:
            self.sharing.drain(keep=not wait)
            return
        inserts, updates = self._take()
        try:
            self._write(inserts, updates)
        except BaseException:
            self._pending.give_back(inserts, updates)
            raise
        self._note_written(inserts, updates)

    def _take(self) -> tuple[list[Row], list[tuple[int, Row]]]:
        """Take the queue; after a failure whose outcome is unknown (a connection lost
        during commit), leave out rows the database turns out to hold already."""
        inserts, updates = self._pending.take()
        if self._uncertain and (inserts or updates):
            try:
                stored = self._stored_rows(
                    [row[0] for row in inserts] + [row[0] for _, row in updates]
                )
            except BaseException:
                self._pending.give_back(inserts, updates)
                raise
            # Only identical rows were written before; a different row under the same
            # seq is a conflict, which the write reports rather than hides.
            inserts = [row for row in inserts if stored.get(row[0]) != row]
            updates = [(old, row) for old, row in updates if stored.get(row[0]) != row]
            self._uncertain = False
        return inserts, updates

    def _note_written(self, inserts: list[Row], updates: list[tuple[int, Row]]) -> None:
        times = [row[4] for _, row in updates]
        if inserts:
            times.append(inserts[-1][4])
        if times:
            self._now = max(times)

    def _after_failure(self) -> None:
        """Hook: forget connections that may be broken (reconnect on next use)."""

    def _inflight(self) -> int:
        """Rows sent to the database but not yet known to be committed."""
        return 0

    @property
    def now(self) -> float | None:
        queued = self._pending.newest_time()
        return queued if queued is not None else self._now

    @property
    def pending(self) -> int:
        """How many rows are queued or in flight: written but not yet committed."""
        with self._lock:  # the background flusher changes both while it commits
            return len(self._pending) + self._inflight()

    # ------------------------------------------------------------------ reading

    def load_rows(self) -> Iterator[Row]:
        self.ensure()
        self.flush()
        return self._locked_rows()

    def _iter_rows(self) -> Iterator[Row]:
        return self._locked_rows()

    def _locked_rows(self) -> Iterator[Row]:
        with self._lock:
            try:
                yield from self._select()
            except self._errors() as exc:  # e.g. damaged pages of a SQLite file
                raise DatabaseError(f"cannot read {self._where()}: {exc}") from exc

    def size(self) -> int:
        self.ensure()
        self.flush()
        with self._lock:
            return self._table_size()

    # ------------------------------------------------------------------ maintenance

    def reset(self) -> None:
        self._refuse_writes("reset")
        with self._lock:
            self._pending.clear()
            if self.sharing is not None:
                self.sharing.drop()  # its transaction would keep the table from dropping
            self._recreate()
            self._connected = True

    def _refuse_writes(self, what: str) -> None:
        if self.retired:
            raise ClosedError(f"cannot {what}: {self._where()} was closed with its Store")
        if self.read_only:
            raise ReadOnlyError(f"cannot {what}: {self._where()} is open read-only")

    def restore(self, stream: object, *, codec: Codec | None = None) -> int:
        self._refuse_writes("restore")
        return super().restore(stream, codec=codec)

    def _insert_restored(self, rows: Iterable[Row]) -> None:
        with self._lock:
            sharing = self.sharing
            if sharing is None:
                self._insert_atomically(list(rows), [])
                return
            sharing.acquire()  # no other writer allocates seqs meanwhile
            try:
                self._insert_atomically(list(rows), [])
            finally:
                sharing.release_idle()

    def apply_recovered(self, entries: list[Entry]) -> int:
        """Write the rows the table lacks under new seqs, in one transaction."""
        self._refuse_writes("replay a recovery file")
        self.ensure()
        self.flush()
        with self._lock:
            sharing = self.sharing
            if sharing is not None:
                sharing.acquire()  # shared mode: no other writer allocates seqs meanwhile
            try:
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
            finally:
                if sharing is not None:
                    sharing.release_idle()


def _close_at_exit(ref: weakref.ref[SQLDriver]) -> None:
    driver = ref()
    if driver is not None and driver.pending:
        driver.close()


def _flusher_loop(
    ref: weakref.ref[SQLDriver], stop: threading.Event, interval: float, tick: float
) -> None:
    """Write batches whose oldest row is older than half the interval.

    Wakes four times per interval, so no row waits much past ``interval`` even when
    the application stops writing.  In shared mode it also commits (or gives back) a
    write lease held for its ``hold`` time.  Holds only a weak reference: a driver
    nobody uses any more is collected and the thread ends.
    """
    while not stop.wait(tick):
        driver = ref()
        if driver is None:
            return
        sharing = driver.sharing
        if sharing is not None and sharing.due():
            try:
                with driver._lock:
                    if not stop.is_set() and sharing.due():
                        if driver.pending:
                            driver._flush_locked()
                        else:
                            sharing.drop()
            except Exception as exc:
                driver.last_error = exc
                del driver, sharing
                if stop.wait(_RETRY_AFTER):
                    return
                continue
        del sharing
        oldest = driver._pending.oldest_time()
        if driver._inflight() or (oldest is not None and time.time() - oldest >= interval / 2):
            try:
                with driver._lock:
                    if not stop.is_set():
                        driver._flush_locked()
            except Exception as exc:  # the rows stay queued; the application sees the
                driver.last_error = exc  # error at its next flush or full batch
                del driver
                if stop.wait(_RETRY_AFTER):
                    return
                continue
        del driver
