"""What the SQL drivers share: batching, the background flusher, durability modes.

Rows are queued (:class:`~appendmuch.drivers.batching.Pending`) and written in
batches, each in one transaction.  A batch is written when it is full
(``batch_size`` rows), when the application calls ``store.flush()`` or closes the
store, and at the latest about ``batch_interval`` seconds after its oldest row was
queued: a background thread sees to that even when the application stops writing.
With ``write_through=True`` every row is written before the assignment returns.  A
queue larger than ``batch_bytes`` (of values) is written as several batches.

A row leaves the queue only once its batch is committed.  A batch that cannot be
written stays queued, in order, and the write or flush that hit the failure raises
:class:`~appendmuch.errors.WriteError`; for ``retry_interval`` seconds after that,
full batches only queue (and raise at once) while ``flush()`` still tries.  A write
cut short anywhere (KeyboardInterrupt included) leaves its rows queued; the next write
first undoes what the cut-short one left (an open transaction, a half-sent pipeline)
and leaves out rows the database turns out to hold already.  When ``close()`` cannot
write the queue, the rows go to a recovery file (see :mod:`appendmuch.recovery`) and
the exception says where (:mod:`~appendmuch.drivers.recoveryfiles`).

Before each batch the driver checks that the table is still its own (the SQLite file
and lock file are the ones it opened; a reconnected PostgreSQL writer got its lock
back and no other writer took seqs meanwhile); if not, it refuses every later write.
A child process forked while a driver is open finds the driver inert: it never writes
the parent's queue, never closes the parent's connections or removes its lock file.

The application thread and the flusher thread share the queue and the connection;
one lock serialises everything except queueing a row, which is lock-free.  It is only
ever taken by ``with`` (which an interrupt cannot split from its release), and held by
the flusher only for one write, which the database timeouts bound; waiting for the
flusher to stop is bounded too (``close()`` raises WriteError rather than hang).  The
thread itself, and the work other threads hand to it, are in
:mod:`~appendmuch.drivers.background`.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from ..errors import (
    ClosedError,
    DatabaseError,
    LockedError,
    ReadOnlyError,
    WriteError,
)
from .background import BackgroundThread
from .base import DBDriver, Row
from .batching import Pending
from .layout import TableNames
from .lease import Lease
from .recoveryfiles import RecoveryFiles
from .sharing import Engine

if TYPE_CHECKING:
    from ..codec import Codec

__all__ = ["SQLDriver"]


#: default ``batch_bytes``: a queue with more value bytes is written in several batches
BATCH_BYTES = 64 * 1024 * 1024
#: default ``retry_interval``: after a failed write, full batches only queue this long
RETRY_INTERVAL = 1.0
#: default ``follow_interval``: shared mode, seconds between checks for others' commits
FOLLOW_INTERVAL = 0.005

#: every SQL driver open in this process (made inert in a forked child)
_open_drivers: weakref.WeakSet[SQLDriver] = weakref.WeakSet()
#: connections a forked child inherited: kept, never closed or collected, so that
#: closing them cannot disturb the parent's sessions and locks
_inherited: list[Any] = []
#: shared mode: a lone write is committed about this long after it
_IDLE = 0.005


class SQLDriver(BackgroundThread, RecoveryFiles, DBDriver):
    """Base of :class:`~appendmuch.Sqlite3` and :class:`~appendmuch.PostgreSQL`.

    Its background thread is in :mod:`~appendmuch.drivers.background`, its recovery
    files in :mod:`~appendmuch.drivers.recoveryfiles`.
    """

    def __init__(
        self,
        names: TableNames,
        *,
        batch_size: int,
        batch_interval: float,
        write_through: bool,
        read_only: bool,
        recovery_dir: str | os.PathLike[str] | None,
        batch_bytes: int = BATCH_BYTES,
        retry_interval: float = RETRY_INTERVAL,
        shared: bool = False,
        follow_interval: float = FOLLOW_INTERVAL,
        lease_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if type(shared) is not bool:
            raise TypeError(f"shared must be True or False, got {shared!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be an int of at least 1, got {batch_size!r}")
        if not batch_interval > 0:
            raise ValueError(f"batch_interval must be positive, got {batch_interval!r}")
        if type(batch_bytes) is not int or batch_bytes < 1:
            raise ValueError(f"batch_bytes must be an int of at least 1, got {batch_bytes!r}")
        if not lease_timeout > 0:
            raise ValueError(f"lease_timeout must be positive, got {lease_timeout!r}")
        if not follow_interval > 0:
            raise ValueError(f"follow_interval must be positive, got {follow_interval!r}")
        if not retry_interval >= 0:
            raise ValueError(f"retry_interval must be 0 or more, got {retry_interval!r}")
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
        #: a queue with more bytes of values than this is written in several batches
        self.batch_bytes = batch_bytes
        #: seconds after a failed write during which full batches only queue
        self.retry_interval = retry_interval
        #: shared mode: seconds a write waits for the write lease before LockedError
        self.lease_timeout = lease_timeout
        #: shared mode: seconds between two checks for other writers' commits
        self.follow_interval = follow_interval
        self.read_only = read_only
        self.recovery_dir = None if recovery_dir is None else os.fspath(recovery_dir)
        #: the last error the background flusher met (its rows stay queued)
        self.last_error: Exception | None = None
        self._quoted = f'"{self.table}"'
        self._pending = Pending(self.batch_size)
        self._lock = threading.RLock()
        self._init_background()
        self._connected = False
        #: a write may have committed rows still queued (check before rewriting them)
        self._uncertain = False
        #: a write is under way, or was cut short: the next one cleans up first
        self._dirty = False
        #: time.monotonic() of the last failed write, None after a success
        self._failed_at: float | None = None
        #: why this driver refuses to write on (lost lock, file gone, forked child)
        self._refusal: tuple[type[Exception], str] | None = None
        #: the process that opened the driver
        self._pid = os.getpid()
        #: largest seq known stored when (re)connecting: others' rows above it mean
        #: another writer took seqs while this one's lock was lost
        self._stored_upto = 0
        #: connected for writing since the last close (a new connect is a reconnect)
        self._holding = False
        #: set by recovery.replay(): opening for writing despite waiting recovery files
        self.replaying = False
        #: closed by its Store (retire()): never opens for writing again
        self.retired = False
        _open_drivers.add(self)
        #: shared mode (several processes write the table): the engine that commits
        #: own rows and follows others' (see :mod:`appendmuch.drivers.sharing`)
        self.sharing: Engine | None = None
        if shared:
            self.sharing = Engine(
                self,
                cast(Lease, self),  # (each backend implements it, in a module of its own)
                batch_size=self.batch_size,
                idle=min(batch_interval / 2, _IDLE),
                poll=follow_interval,
            )
            # every write and read of the writer's connections is the engine's
            self._background_io = True
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
    def _write_batch(self, inserts: list[Row], updates: list[tuple[int, Row]]) -> None:
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
    def where(self) -> str:
        """Package-internal: where the table lives, for messages (a file name, a
        server)."""

    @abstractmethod
    def _default_recovery_dir(self) -> str:
        """Directory for recovery files when none was chosen."""

    def _check_still_ours(self) -> None:
        """Hook: raise WriteError (after :meth:`_refuse`) if the table is no longer
        this writer's (its file replaced, its lock lost).  Called before each write."""

    @abstractmethod
    def _seqs_after(self, seq: int, limit: int) -> list[int]:
        """Up to ``limit`` stored seqs above ``seq``, ascending."""

    def _opened(self) -> None:
        """Hook: just connected for writing (note what :meth:`_check_still_ours` checks)."""

    def _abort(self) -> None:
        """Hook: undo what a write cut short left behind (an open transaction, a
        half-sent pipeline), so the next write starts clean."""

    def _abandon(self) -> list[Any]:
        """Hook (in a forked child): forget the inherited connections without closing
        them and return them; release nothing the parent holds."""
        return []

    def _patience(self) -> float:
        """Seconds ``close()`` waits at most for the flusher to stop: longer than any
        one write can take given the driver's own timeouts."""
        return 60.0

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

    def _replay_target(self) -> str:
        """How ``appendmuch replay`` is told where this table is (a placeholder when
        only the user can say, e.g. a server URL with its password)."""
        return "DB"

    def _abandon_open(self) -> None:
        """An open failed after connecting: disconnect, leaving nothing behind."""
        self._disconnect()

    # ------------------------------------------------------------------ shared mode

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
            self._open()
            wanted = not self.read_only or (self.sharing is not None and not self.retired)
            if wanted and (self._flusher is None or not self._flusher.alive()):
                self._start_flusher()

    def _open(self) -> None:
        """Connect if not connected (without starting the flusher).  A reconnect of a
        writer checks that no other writer took seqs while it was away."""
        if self._pid != os.getpid():
            self._refuse_write()
        if self._connected:
            return
        reconnect = self._holding and not self.read_only
        self._connect()
        self._connected = True
        if not self.read_only and not self.replaying and not reconnect:
            try:
                self._refuse_if_recovery_pending()
            except BaseException:
                self._connected = False
                self._abandon_open()
                raise
        if reconnect and self.sharing is None:
            # (shared mode: others' rows are expected; the lease's catch-up sorts out
            # this writer's queued rows)
            self._check_nobody_wrote()
        if not self.read_only:
            if not reconnect:
                self._stored_upto = self.last_seq
            self._holding = True
            self._opened()

    def _check_nobody_wrote(self) -> None:
        """After a reconnect: every stored row above what this writer knew stored must
        be one of its own queued rows; anything else was written by another writer
        while this one's lock was lost, and writing on would collide."""
        inserts, updates = self._pending.snapshot()
        ours = {row[0]: row for row in inserts} | {row[0]: row for _, row in updates}
        after = self._seqs_after(self._stored_upto, 1000)
        stored = self._stored_rows([seq for seq in after if seq in ours])
        foreign = [seq for seq in after if seq not in ours or stored.get(seq) != ours[seq]]
        if foreign:
            self._refuse(
                LockedError,
                f"{self.where()} received rows from another writer (seqs {foreign[0]}"
                f"{'...' if len(foreign) > 1 else ''}) while this writer's connection, and "
                "its lock, were lost; it refuses to write on. Close this Store (its queued "
                "rows go to a recovery file) and reopen",
            )

    def _refuse(self, kind: type[Exception], message: str) -> None:
        """Refuse every later write of this driver, and raise now."""
        self._refusal = (kind, message)
        self._refuse_write()

    def _refuse_write(self) -> None:
        if self._pid != os.getpid():
            raise WriteError(
                f"{self.where()} was opened by process {self._pid}; this process (a "
                "forked child) cannot write or read through it: open a new Store here"
            )
        if self._refusal is not None:
            kind, message = self._refusal
            raise kind(message)

    def close(self) -> None:
        """Write queued rows and disconnect.

        If the rows cannot be written they are saved to a recovery file, taken off the
        queue, and the :class:`~appendmuch.errors.WriteError` raised names the file
        (replay it with ``appendmuch replay FILE DB``).  In a forked child it does
        nothing: the parent owns the connections, the lock and the queue.
        """
        if self._pid != os.getpid():
            return
        try:
            if self._background_io:
                self.in_writer(self._close_connection)
        finally:
            self._stop_background()
            self._close_connection()  # (nothing left to do after the background did it)

    def _close_connection(self) -> None:
        """The end of :meth:`close`: write the queue (or save it to a recovery file)
        and disconnect.  Idempotent."""
        sharing = self.sharing
        with self._lock:
            try:
                if sharing is not None:
                    self._save_left(sharing.close_now())
                elif self.pending:
                    self._flush_or_save()
                elif self._connected and not self.read_only and self._refusal is None:
                    self._check_still_ours()
            finally:
                self._connected = False
                self._holding = False
                self._disconnect()  # idempotent: also completes one cut short
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
        raise ClosedError(f"{self.where()} was closed with its Store; open a new driver to write")

    # ------------------------------------------------------------------ writing

    def append(self, row: Row) -> bool:
        """Queue a row (instances bind this to the queue's lock-free ``add``)."""
        return self._pending.add(row)

    def replace(self, old_seq: int | None, row: Row) -> bool:
        with self._lock:
            return self._pending.replace(old_seq, row)

    def has_row(self, seq: int) -> bool:
        """Queued, or committed by this writer.  O(queued rows)."""
        with self._lock:
            if seq <= self._stored_upto:
                return True
            pending = self._pending
            return any(row[0] == seq for row in reversed(pending.inserts)) or any(
                row[0] == seq for _, row in pending.updates
            )

    def flush(self) -> None:
        """Write every queued row; when it returns, they are committed.

        It takes the lock even when nothing is queued: the background flusher may be
        writing a batch taken before this call, and that batch must be committed too.
        """
        if self.sharing is not None:
            self.sharing.flush()
            return
        self.in_writer(self._flush_locked)

    def submit(self) -> None:
        """A full batch is waiting: hand it to the database.

        Drivers that pipeline batches (PostgreSQL) return before the server has
        committed it, unless ``write_through``; :meth:`flush` waits.  Errors of
        earlier batches surface here.  Within ``retry_interval`` of a failed write it
        raises that failure again without trying (the rows stay queued).
        """
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < self.retry_interval:
            raise WriteError(
                f"{self.pending} rows wait to be written to {self.where()}, which failed "
                f"{time.monotonic() - failed_at:.1f} s ago ({self.last_error}); the next "
                f"write retries after {self.retry_interval} s, flush() retries now. The "
                "rows stay queued, in order"
            )
        if self.sharing is not None:
            self._bell.ring()  # (a round is due: the engine commits it without waiting)
            return
        self.in_writer(self._submit_locked)

    def _submit_locked(self) -> None:
        with self._lock:
            self._write_queued(wait=self.write_through)

    def _flush_locked(self) -> None:
        with self._lock:
            self._write_queued(wait=True)

    def _write_queued(self, wait: bool) -> None:
        if self._pid != os.getpid() or self._refusal is not None:
            self._refuse_write()
        count = self.pending
        if not count:
            return
        if self.read_only:
            self._refuse_writes("write")
        failures: tuple[type[Exception], ...] = (DatabaseError, *self._errors())
        try:
            if self._dirty:
                # The previous write was cut short: roll back what it left open and
                # treat its rows as possibly committed.
                self._pending.release()
                self._uncertain = True
                self._abort()
            self._dirty = True
            self._open()
            self._check_still_ours()
            self._drain(wait)
        except (WriteError, LockedError) as exc:
            self._failed(exc)
            raise
        except failures as exc:
            self._failed(exc)
            self._after_failure()
            raise WriteError(
                f"could not write {count} queued rows to {self.where()}: {exc}. They stay "
                "queued, in order, and are written by the next successful flush"
            ) from exc
        self._dirty = False
        self._failed_at = None
        self.last_error = None

    def _failed(self, exc: Exception) -> None:
        """A write failed: its rows are due again (the next write first checks which
        of them the database holds), and full batches wait for ``retry_interval``."""
        self._pending.release()
        self._failed_at = time.monotonic()
        self.last_error = exc

    def _drain(self, wait: bool) -> None:
        """Write the queue in batches of at most ``batch_bytes``, each in one
        transaction, synchronously.  Rows leave the queue once committed."""
        pending = self._pending
        left = pending.unsent()
        while left > 0:
            inserts, updates, taken = self._take()
            left -= taken[0] + taken[1]
            if inserts or updates:
                self._write_batch(inserts, updates)
            self._committed(*taken)
            self.note_written(inserts, updates)

    def _take(self) -> tuple[list[Row], list[tuple[int, Row]], tuple[int, int]]:
        """The next batch to write, and how many inserts and overwrites it took off
        the queue; after a write whose outcome is unknown (cut short, a connection
        lost during commit), leave out rows the database turns out to hold already."""
        pending = self._pending
        inserts, updates = pending.take(self.batch_bytes)
        taken = (len(inserts), len(updates))
        if self._uncertain:
            if inserts or updates:
                stored = self._stored_rows(
                    [row[0] for row in inserts] + [row[0] for _, row in updates]
                )
                # Only identical rows were written before; a different row under the
                # same seq is a conflict, which the write reports rather than hides.
                inserts = [row for row in inserts if stored.get(row[0]) != row]
                updates = [(old, row) for old, row in updates if stored.get(row[0]) != row]
            if not pending.unsent():
                self._uncertain = False
        return inserts, updates, taken

    def _committed(self, count: int, updates: int) -> None:
        """The first ``count`` queued inserts and ``updates`` overwrites are committed:
        note their seqs as this writer's (first), then drop them from the queue."""
        pending = self._pending
        self._stored_upto = max(self._stored_upto, pending.newest_seq(count, updates))
        pending.done(count, updates)

    def note_written(self, inserts: list[Row], updates: list[tuple[int, Row]]) -> None:
        """Package-internal: these rows were written (:attr:`now` is the newest
        ``created_at`` among them)."""
        times = [row[4] for _, row in updates]
        if inserts:
            times.append(inserts[-1][4])
        if times:
            self._now = max(times)

    def _after_failure(self) -> None:
        """Hook: forget connections that may be broken (reconnect on next use)."""

    def _inflight(self) -> int:
        """Batches sent to the database whose commit is not yet confirmed, outside any
        write (the flusher confirms them); none for a driver that writes synchronously."""
        return 0

    def forget_in_child(self) -> None:
        """Package-internal (fork handler): in a forked child, make this driver inert
        (see the module docstring)."""
        _inherited.extend(self._abandon())
        self._connected = False
        self._flusher = None
        self._lock = threading.RLock()  # a parent thread may have held it at the fork
        self._pending = Pending(self.batch_size)  # the parent writes these rows
        self.append = self._append_in_child  # type: ignore[method-assign]
        self.replace = self._replace_in_child  # type: ignore[method-assign]

    def _append_in_child(self, row: Row) -> bool:
        self._refuse_write()
        return False

    def _replace_in_child(self, old_seq: int | None, row: Row) -> bool:
        self._refuse_write()
        return False

    @property
    def now(self) -> float | None:
        sharing = self.sharing
        queued = sharing.newest_time() if sharing is not None else self._pending.newest_time()
        return queued if queued is not None else self._now

    @property
    def pending(self) -> int:
        """How many rows are queued, including those of batches not yet committed."""
        if self.sharing is not None:
            return self.sharing.pending
        return len(self._pending)

    # ------------------------------------------------------------------ reading

    def load_rows(self) -> Iterator[Row]:
        self.ensure()
        self.flush()
        return self._locked_rows()

    def _iter_rows(self) -> Iterator[Row]:
        return self._locked_rows()

    def rows_now(self) -> Iterator[Row]:
        """Every stored row in seq order, as the table holds them now (no flush first:
        shared mode's Store flushes before it takes its lock to load)."""
        self.ensure()
        return self._locked_rows()

    def _locked_rows(self) -> Iterator[Row]:
        with self._lock:
            try:
                yield from self._select()
            except self._errors() as exc:  # e.g. damaged pages of a SQLite file
                raise DatabaseError(f"cannot read {self.where()}: {exc}") from exc

    def size(self) -> int:
        self.ensure()
        self.flush()
        with self._lock:
            return self._table_size()

    # ------------------------------------------------------------------ maintenance

    def reset(self) -> None:
        self._refuse_writes("reset")
        if self.sharing is not None:
            self.ensure()
            self.in_writer(self.sharing.reset_now)  # (with the lease: no round under way)
            return
        with self._lock:
            self._pending.clear()
            self._recreate()
            self._connected = True

    def _refuse_writes(self, what: str) -> None:
        if self.retired:
            raise ClosedError(f"cannot {what}: {self.where()} was closed with its Store")
        if self.read_only:
            raise ReadOnlyError(f"cannot {what}: {self.where()} is open read-only")

    def restore(self, stream: object, *, codec: Codec | None = None) -> int:
        self._refuse_writes("restore")
        return super().restore(stream, codec=codec)

    def _insert_restored(self, rows: Iterable[Row]) -> None:
        batch = list(rows)
        sharing = self.sharing
        if sharing is None:
            with self._lock:
                self._insert_atomically(batch, [])
            return
        # no other writer commits meanwhile; the rows reach the cache as others' do
        self.in_writer(lambda: sharing.exclusively(lambda: self._insert_atomically(batch, [])))


def _forget_in_child() -> None:
    """After a fork, in the child: every inherited driver becomes inert."""
    for driver in list(_open_drivers):
        driver.forget_in_child()


os.register_at_fork(after_in_child=_forget_in_child)
