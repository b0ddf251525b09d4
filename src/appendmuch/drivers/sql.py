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
the exception says where.

Before each batch the driver checks that the table is still its own (the SQLite file
and lock file are the ones it opened; a reconnected PostgreSQL writer got its lock
back and no other writer took seqs meanwhile); if not, it refuses every later write.
A child process forked while a driver is open finds the driver inert: it never writes
the parent's queue, never closes the parent's connections or removes its lock file.

The application thread and the flusher thread share the queue and the connection;
one lock serialises everything except queueing a row, which is lock-free.  It is only
ever taken by ``with`` (which an interrupt cannot split from its release), and held by
the flusher only for one write, which the database timeouts bound; waiting for the
flusher to stop is bounded too (``close()`` raises WriteError rather than hang).
"""

from __future__ import annotations

import atexit
import os
import shlex
import threading
import time
import weakref
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..errors import (
    ClosedError,
    DatabaseError,
    LockedError,
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
from .base import DBDriver, Row, close_unattended
from .batching import Pending
from .layout import TableNames
from .sharing import Engine, Lease, run
from .wakeup import Answer, Doorbell, Flag, Worker

if TYPE_CHECKING:
    from ..codec import Codec

__all__ = ["SQLDriver"]

_T = TypeVar("_T")

#: default ``batch_bytes``: a queue with more value bytes is written in several batches
BATCH_BYTES = 64 * 1024 * 1024
#: default ``retry_interval``: after a failed write, full batches only queue this long
RETRY_INTERVAL = 1.0

#: every SQL driver open in this process (made inert in a forked child)
_open_drivers: weakref.WeakSet[SQLDriver] = weakref.WeakSet()
#: connections a forked child inherited: kept, never closed or collected, so that
#: closing them cannot disturb the parent's sessions and locks
_inherited: list[Any] = []
#: a thread waiting for the background thread checks this often that it still runs
_ASK_STEP = 0.5
#: shared mode: a lone write is committed about this long after it
_IDLE = 0.005


class SQLDriver(DBDriver):
    """Base of :class:`~appendmuch.Sqlite3` and :class:`~appendmuch.PostgreSQL`."""

    #: the writer connection is used by the background thread only: writes and
    #: flushes of other threads are handed to it (:meth:`_in_writer`), so that a
    #: Ctrl-C in the application never lands inside the database library
    _background_io = False

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
        follow_interval: float = 0.005,
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
        self.read_only = read_only
        self.recovery_dir = None if recovery_dir is None else os.fspath(recovery_dir)
        #: the last error the background flusher met (its rows stay queued)
        self.last_error: Exception | None = None
        self._quoted = f'"{self.table}"'
        self._pending = Pending(self.batch_size)
        self._lock = threading.RLock()
        #: wakes the background thread (work handed over, a lease taken, stop)
        self._bell = Doorbell()
        self._stop = Flag(self._bell)
        #: work other threads handed to the background thread, with their answers
        self._requests: deque[tuple[Callable[[], Any], Answer]] = deque()
        self._flusher: Worker | None = None
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
        self._replaying = False
        #: closed by its Store (retire()): never opens for writing again
        self.retired = False
        self._exit_hook = False
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
    def _where(self) -> str:
        """Where the table lives, for messages (a file name, a server)."""

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
        if not self.read_only and not self._replaying and not reconnect:
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
                self._stored_upto = self._last_seq
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
                f"{self._where()} received rows from another writer (seqs {foreign[0]}"
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
                f"{self._where()} was opened by process {self._pid}; this process (a "
                "forked child) cannot write or read through it: open a new Store here"
            )
        if self._refusal is not None:
            kind, message = self._refusal
            raise kind(message)

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
        # A stop flag of its own: a flusher being stopped can never be revived (and
        # one whose start was cut short, and so never noted, stops now).
        self._stop.set()
        self._stop = stop = Flag(self._bell)
        if self.sharing is not None:
            worker = Worker(
                run, (weakref.ref(self), stop, self._bell), f"appendmuch-shared:{self.table}"
            )
        else:
            tick = self.batch_interval / 4
            worker = Worker(
                _flusher_loop,
                (weakref.ref(self), stop, self._bell, self.batch_interval, tick),
                f"appendmuch-flusher:{self.table}",
            )
        worker.start()
        self._flusher = worker

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
                self._in_writer(self._close_connection)
        finally:
            self._stop_background()
            self._close_connection()  # (nothing left to do after the background did it)

    def _stop_background(self) -> None:
        """Stop the background thread (it ends the work under way first)."""
        self._stop.set()
        worker = self._flusher
        if (
            worker is not None
            and worker.ident != threading.get_ident()
            and not worker.join(self._patience())
        ):
            raise WriteError(
                f"cannot close {self._where()}: the background writer did not stop "
                f"within {self._patience():.0f} s; {self.pending} rows stay queued"
            )
        # Forgotten only once it ended: until then _in_writer() hands work to it, and
        # nothing else may touch its connections (an interrupted join leaves it known).
        if self._flusher is worker:
            self._flusher = None

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

    def _in_writer(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` in the background thread and return (or raise) what it did,
        where the driver keeps its writer connection there (:attr:`_background_io`);
        otherwise, or when that thread is not running, in this thread.

        Waiting is a C-level lock acquire: a Ctrl-C ends the wait at once, and the
        background thread still finishes the work (its outcome then reaches nobody)."""
        worker = self._flusher
        if (
            not self._background_io
            or worker is None
            or not worker.alive()
            or worker.ident == threading.get_ident()
        ):
            return work()
        answer = Answer()
        request = (work, answer)
        self._requests.append(request)
        self._bell.ring()
        while True:
            try:
                value: _T = answer.take(_ASK_STEP)
                return value
            except TimeoutError:
                if worker.alive():
                    continue
                try:
                    self._requests.remove(request)  # (it ended before taking it up)
                except ValueError:
                    late: _T = answer.take(_ASK_STEP)  # taken up just before it ended
                    return late
                return work()

    def _serve(self) -> None:
        """Background thread: do the work other threads handed over, in order."""
        requests = self._requests
        while requests:
            try:
                work, answer = requests.popleft()
            except IndexError:
                return
            try:
                value = work()
            except BaseException as exc:  # handed to the thread that asked
                answer.give(error=exc)
            else:
                answer.give(value)

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
            f"could not write {count} queued rows to {self._where()} on close; they "
            f"were saved to the recovery file {path} — write them with "
            f"`appendmuch replay {shlex.quote(path)} {self._replay_target()}` before "
            "writing to the table again "
            f"(cause: {cause.__cause__ or cause})",
            recovery_file=path,
        ) from cause

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
        self._in_writer(self._flush_locked)

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
                f"{self.pending} rows wait to be written to {self._where()}, which failed "
                f"{time.monotonic() - failed_at:.1f} s ago ({self.last_error}); the next "
                f"write retries after {self.retry_interval} s, flush() retries now. The "
                "rows stay queued, in order"
            )
        if self.sharing is not None:
            self._bell.ring()  # (a round is due: the engine commits it without waiting)
            return
        self._in_writer(self._submit_locked)

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
                f"could not write {count} queued rows to {self._where()}: {exc}. They stay "
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
            self._note_written(inserts, updates)

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

    def _note_written(self, inserts: list[Row], updates: list[tuple[int, Row]]) -> None:
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

    def _forked(self) -> None:
        """In a forked child: make this driver inert (see the module docstring)."""
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
                raise DatabaseError(f"cannot read {self._where()}: {exc}") from exc

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
            self._in_writer(self.sharing.reset_now)  # (with the lease: no round under way)
            return
        with self._lock:
            self._pending.clear()
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
        batch = list(rows)
        sharing = self.sharing
        if sharing is None:
            with self._lock:
                self._insert_atomically(batch, [])
            return
        # no other writer commits meanwhile; the rows reach the cache as others' do
        self._in_writer(lambda: sharing.exclusively(lambda: self._insert_atomically(batch, [])))

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
        return self._in_writer(lambda: sharing.exclusively(replay))


def _close_at_exit(ref: weakref.ref[SQLDriver]) -> None:
    driver = ref()
    if driver is not None and driver.pending:
        close_unattended(driver.close, repr(driver))


def _forget_in_child() -> None:
    """After a fork, in the child: every inherited driver becomes inert."""
    for driver in list(_open_drivers):
        driver._forked()


os.register_at_fork(after_in_child=_forget_in_child)


def _flusher_loop(
    ref: weakref.ref[SQLDriver],
    stop: Flag,
    bell: Doorbell,
    interval: float,
    tick: float,
) -> None:
    """Write batches whose oldest row is older than half the interval, and do the work
    other threads hand over (:meth:`SQLDriver._in_writer`).

    Wakes four times per interval, so no row waits much past ``interval`` even when
    the application stops writing, and at once when its doorbell rings (work handed
    over, stop); after a failure it waits ``retry_interval``.  Holds only a weak
    reference: a driver nobody uses any more is collected and the thread ends.  It
    never starts another flusher, and stops for good once ``stop`` is set (after doing
    the work handed over before).  (Shared mode runs :func:`sharing.run` instead.)
    """
    pause = tick
    while True:
        bell.wait(pause)
        driver = ref()
        if driver is None:
            return
        driver._serve()
        if stop.is_set():
            return
        retry = driver.retry_interval
        try:
            failed_at = driver._failed_at
            oldest = driver._pending.oldest_time()
            due = driver._inflight() or (
                oldest is not None and time.time() - oldest >= interval / 2
            )
            if due and (failed_at is None or time.monotonic() - failed_at >= retry):
                with driver._lock:
                    if not stop.is_set():
                        driver._flush_locked()
        except BaseException as exc:  # the rows stay queued; the
            # application sees the error at its next flush or full batch
            driver.last_error = exc if isinstance(exc, Exception) else WriteError(repr(exc))
            pause = max(retry, tick)
        else:
            pause = tick
        del driver
