"""Shared mode: several processes writing one table (``shared=True`` on a SQL driver).

**The write lease.**  Before a process allocates a seq it holds the table's write
lease (SQLite: an exclusive ``flock`` on ``{database}-{table}.lease``; PostgreSQL: an
open transaction on the writer connection that took ``pg_advisory_xact_lock``).
Taking the lease first *catches up*: the rows committed since this process's
high-water mark are read and appended to its cache.  Seqs allocated after that
(``MAX + 1, ...``) are therefore final, and seq order is commit order.  The batch is
committed (PostgreSQL: with ``NOTIFY``, in the same transaction) when it is full, by
the background flusher a few milliseconds after the lease was taken, or on
``flush()``/``close()``; the commit releases the lease.  One lease per batch.

**Following.**  A background thread per driver waits for commits of other processes
(PostgreSQL: ``LISTEN`` on a dedicated connection; SQLite: ``PRAGMA data_version``
polled on a connection of its own every few milliseconds), reads the rows after the
high-water mark and hands them to the Store.

**Failures.**  A process killed while holding the lease loses its uncommitted rows;
the server (or the kernel) rolls its transaction back and releases the lock.  A
commit that fails leaves the rows queued without the lease.  Before they are written,
the lease is taken again and the catch-up shows whether they were committed after all
(identical rows under their seqs) or whether other processes took those seqs
meanwhile: then the Store reloads its cache and appends the queued rows again under
new seqs.

Every piece of this runs under the driver's lock (one re-entrant lock that the Store
also uses in shared mode), except the follower's waiting and reading.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import WriteError
from .base import Row
from .batching import Pending

if TYPE_CHECKING:
    from .sql import SQLDriver

__all__ = ["LogFollower", "Sharing"]

#: after a follower error (a lost connection), wait this long before trying again
_RETRY_AFTER = 0.5
#: a lease nobody used for this long is committed (or dropped) by the flusher
_IDLE = 0.005
#: the follower checks this often whether it was stopped while waiting for a lock
_WAIT_STEP = 0.05
#: close() waits at most this long for the follower thread to end
_STOP_WAIT = 30.0
#: a lease nobody is known to wait for is kept up to this long in a run of writes
#: (where the driver tells who waits)
_HOLD_UNWANTED = 0.5


def _seq(row: Row) -> int:
    return row[0]


class LogFollower(Protocol):
    """What a Store offers the shared-mode machinery (called under ``Sharing.lock``,
    and its ``_mutex`` taken first where the Store did not take it already)."""

    _mutex: Any

    def _take_rows(self, rows: list[Row]) -> None:
        """Append rows committed by other processes, in seq order, to the cache."""

    def _resequence(
        self, foreign: list[Row], inserts: list[Row], updates: list[tuple[int, Row]]
    ) -> None:
        """Reload the cache (which now holds ``foreign``), then queue the rows this
        process could not commit again, under new seqs."""


class Sharing:
    """The write lease and the follower thread of one SQL driver in shared mode."""

    def __init__(self, driver: SQLDriver, *, hold: float, poll: float) -> None:
        self.driver = driver
        #: the driver's lock; the Store takes it around every shared-mode write
        self.lock = driver._lock
        #: longest time a lease is kept before the flusher commits (or drops) it
        self.hold = hold
        #: the flusher commits (or drops) it sooner, once it went unused this long
        self.idle = min(hold, _IDLE)
        #: seconds between two change checks (SQLite) or safety reads (PostgreSQL)
        self.poll = poll
        #: this process holds the write lease
        self.held = False
        #: another process said it waits for the lease (PostgreSQL: a notification)
        self.wanted = False
        #: the lease's lock was taken outside the driver's lock (:meth:`await_lease`)
        #: and not caught up yet: the driver's token for it, else None
        self.granted: object | None = None
        self._granted_at = 0.0
        #: one thread at a time waits for (or takes) the lease's lock
        self._gate = threading.Lock()
        #: rung when the lease is taken: the flusher, idle at a slow pace while no lease
        #: is held, then checks it every ``idle`` seconds
        self.wake = driver._bell
        #: the lease may be held without ``held`` saying so (taking or giving it back
        #: was cut short, by Ctrl-C say): give it back before anything else
        self.unsure = False
        #: the cache may lack rows (renumbering queued rows was cut short): reload it
        #: under the lease before delivering or writing anything
        self.stale = False
        self._since = 0.0
        self._used = 0.0
        #: largest seq known committed and present in the cache
        self.hwm = 0
        #: the last error of the follower thread (it retries by itself)
        self.last_error: Exception | None = None
        self._target: weakref.ref[LogFollower] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ store side

    def attach(self, store: LogFollower) -> None:
        """Deliver later commits to ``store`` (loaded already); start following."""
        with self.lock:
            self._target = weakref.ref(store)
        self.start()

    def loaded(self, seq: int) -> None:
        """The Store (re)loaded the log up to ``seq``."""
        self.hwm = seq

    def await_lease(self) -> None:
        """Wait for the lease's lock *outside* the Store's and the driver's locks.

        Meanwhile the follower thread keeps delivering other processes' commits, so the
        catch-up that :meth:`acquire` does once the lock is granted is short: under
        contention this moves most of the work of taking in others' rows out of the
        time the lease is held.  Drivers that cannot wait this way leave it to
        :meth:`acquire`.
        """
        if self.held or self.granted is not None or self.unsure:
            return  # (unsure: acquire() gives it back before taking it again)
        with self._gate:
            if self.held or self.granted is not None or self.unsure:
                return
            token = None
            try:
                token = self.driver._lease_wait()
                if token is not None:
                    self.granted = token
                    self._granted_at = time.monotonic()
                    self.wake.ring()
                    if not self.driver._connected:
                        # closed meanwhile: its close() may have dropped the lease
                        # before this grant, which nobody would give back then
                        self.drop()
            except BaseException:
                # (interrupted just after the lock was granted: never keep it unknowingly)
                if self.granted is None:
                    with contextlib.suppress(Exception):
                        self.driver._lease_drop()
                        if token is not None:
                            self.driver._lease_forget(token)  # (a file of its own)
                raise

    def ready(self) -> bool:
        """The lease is held, or its lock was granted (:meth:`acquire` need not wait)."""
        return self.held or self.granted is not None

    def acquire(self) -> None:
        """Hold the write lease, caught up with every commit before it (under the lock).

        Seqs allocated while it is held are final.
        """
        if self.held:
            return
        with self._gate:  # (its holder never waits for the driver's lock)
            self._acquire()

    def _acquire(self) -> None:
        if self.unsure:
            self.drop()  # (PostgreSQL's session lock would otherwise be taken twice)
        driver = self.driver
        token = self.granted
        # Rows still queued (an earlier commit failed) may have been committed after
        # all: read from the first of them.
        queued = driver._pending
        first = min(
            [row[0] for row in queued.inserts] + [row[0] for _, row in queued.updates],
            default=None,
        )
        after = self.hwm if first is None else min(self.hwm, first - 1)
        self.unsure = True  # until held: an interrupt anywhere below leaves it to drop
        try:
            rows = driver._lease_take(after, token)
        except BaseException as exc:
            # Interrupted or failed, the lock may have been granted all the same: give
            # it back (PostgreSQL: by closing the session), never keep it unknowingly.
            driver._after_failure()
            with contextlib.suppress(Exception):
                driver._lease_drop()
                self.granted = None
                if token is not None:
                    driver._lease_forget(token)  # (a lock on a file of its own)
                self.unsure = False  # (given back)
            if isinstance(exc, driver._errors()):
                raise WriteError(
                    f"could not take the write lease of {driver._where()}: {exc}; nothing "
                    "was written"
                ) from exc
            raise
        self.granted = None  # (taken up: the driver holds it now)
        if rows or len(queued) or self.stale:
            try:
                self._take_in(rows, after)
            except BaseException:
                self._drop_quietly()
                raise
        # held (and caught up) only now: cut short before, the lease is given back
        self.held = True
        self.unsure = False
        self._since = self._used = time.monotonic()
        self.wake.ring()  # the flusher now watches the lease closely

    def _drop_quietly(self) -> None:
        try:
            self.drop()
        except self.driver._errors():
            self.lost()

    def release_idle(self, linger: bool = False) -> None:
        """Give the lease back if nothing is queued under it (else note its use).

        With ``linger`` (after an ordinary write) it is kept up to ``hold`` even when
        a full batch has just been committed: the writes that follow in a run need not
        take it again (and catch up) for every batch.  The flusher gives it back once
        it went unused for ``idle`` seconds.
        """
        if self.held:
            now = time.monotonic()
            pending = self.driver._pending  # (this runs after every shared-mode write)
            if pending.inserts or pending.updates or (linger and now - self._since < self.hold):
                self._used = now
            else:
                self.drop()

    def drop(self) -> None:
        """Give the lease back without writing."""
        if self.held or self.granted is not None or self.unsure:
            token = self.granted
            self.unsure = True  # (cut short below, it is given back again later)
            self.held = False
            self.wanted = False
            try:
                self.driver._lease_drop()
            finally:
                self.granted = None
                if token is not None:
                    self.driver._lease_forget(token)
            self.unsure = False

    def lost(self) -> None:
        """The connection holding the lease is gone (the server released it)."""
        self.held = self.unsure = False
        self.wanted = False

    def sync(self) -> None:
        """Bring the cache up to every commit made before this call."""
        driver = self.driver
        with self.lock:
            if driver.read_only:
                self._deliver(driver._sync_rows_after(self.hwm))
            elif self.held or driver.pending or self.stale:
                # held: nobody else can commit; rows queued without the lease (after a
                # failed commit): taking the lease sorts them out and catches up
                self.acquire()
                self.release_idle()
            else:
                self._deliver(driver._sync_rows_after(self.hwm))

    # ------------------------------------------------------------------ writing

    def drain(self, keep: bool = False, confirm: bool = False) -> None:
        """Commit the queue under the lease (under the lock).

        The lease is released, unless ``keep`` (a full batch in the middle of a run of
        writes): then it is kept, or taken again in the same round trip, so the next
        writes need not wait for it.  The flusher still ends it after ``hold``.  With
        ``confirm`` (a ``write_through`` write) every batch is committed before it
        returns, and the lease is kept: the next write of a run needs no new lease.
        """
        driver = self.driver
        self.acquire()  # held already, unless an earlier commit failed
        pending = driver._pending
        while True:
            # batches of at most batch_bytes; the rows stay queued until committed
            inserts, updates, taken = driver._take()
            if taken == (0, 0) and not driver._inflight():
                if not confirm:
                    self.drop()
                return
            last = not pending.unsent()
            try:
                rows = driver._lease_commit(inserts, updates, taken, keep or confirm or not last)
            except BaseException:
                # the backend made the rows due again and released the lease (unless
                # that was cut short too: then it is given back again)
                self.unsure = True
                self.held = False
                raise
            if inserts or updates:
                # (not the last row: after a failure the queue need not be in seq order)
                top = max(row[0] for row in (*inserts, *(row for _, row in updates)))
                # (possibly still in flight: if it fails, its rows come back below the
                # mark, and acquire() gives them new seqs)
                self.hwm = max(self.hwm, top)
                driver._saw_seq(top)
                driver._note_written(inserts, updates)
            if rows is None:
                self.held = False
                self.wanted = False
            elif rows:
                self._deliver(rows)  # others' commits between ours and the lease taken again
            if last:
                if confirm and self.held:
                    try:
                        driver._lease_confirm()
                    except BaseException:
                        self.held = False  # as for a failed commit
                        raise
                return

    def due(self) -> bool:
        """Time to commit (or drop) the lease: held for ``hold`` seconds (and, where the
        driver can tell, wanted by another process), or unused for ``idle`` seconds.  A
        run of writes keeps it up to ``hold``; a lone write is committed about ``idle``
        seconds after it."""
        if self.unsure or self.stale:
            return True  # (see settle())
        if not self.held:
            # a lock granted outside the driver's lock that no write took up (the
            # waiting thread was interrupted): give it back
            granted = self.granted is not None
            return granted and time.monotonic() - self._granted_at >= self.hold
        now = time.monotonic()
        if now - self._used >= self.idle:
            return True
        held = now - self._since
        if held < self.hold:
            return False
        # A driver that hears who waits keeps the lease through a run of writes while
        # nobody does (up to a bound, in case a notification went astray).
        wanted = self.driver._lease_wanted()
        return wanted is None or wanted or held >= _HOLD_UNWANTED

    # ------------------------------------------------------------------ catching up

    def _take_in(self, rows: list[Row], after: int) -> None:
        """Take in the rows committed after seq ``after`` (lease held).

        The queue changes in one step (:meth:`Pending.swap`), and the cache is marked
        stale while it is being rebuilt: cut short anywhere, no queued row is lost, and
        the next :meth:`acquire` finishes the work."""
        driver = self.driver
        pending = driver._pending
        if not len(pending) and not self.stale:
            self._deliver(rows)
            return
        # Rows are queued although this process did not hold the lease: an earlier
        # commit failed.  Those of them stored identically were committed after all.
        inserts, updates = pending.snapshot()
        queued = {row[0]: row for row in inserts}
        queued.update((row[0], row) for _, row in updates)
        ours = {row[0] for row in rows if queued.get(row[0]) == row}
        # Rows up to the mark that are not queued are in the cache already: this
        # process wrote them (a later batch that did commit) or delivered them.
        foreign = [
            row for row in rows if row[0] not in ours and (row[0] > self.hwm or row[0] in queued)
        ]
        inserts = [row for row in inserts if row[0] not in ours]
        updates = [(old, row) for old, row in updates if row[0] not in ours]
        left = [row[0] for row in inserts] + [row[0] for _, row in updates]
        committed = max([after] + [row[0] for row in rows])
        if not self.stale and not foreign and (not left or min(left) > committed):
            # the rest can keep their seqs: nothing was committed at or after them
            inserts.sort(key=_seq)
            updates.sort(key=lambda update: update[1][0])
            pending.swap(inserts, updates)
            driver._uncertain = False
            self.hwm = committed  # (a failed batch may have raised it past the table)
            driver._saw_seq(committed)
            return
        target = self._target() if self._target is not None else None
        if target is None:
            self._renumber(foreign, inserts, updates)
            driver._uncertain = False
            return
        self.stale = True
        target._resequence(foreign, inserts, updates)
        driver._uncertain = False
        self.stale = False

    def requeue(self, rows: list[tuple[int | None, Row]]) -> None:
        """Make ``rows`` the whole queue (under the lock and the lease): new inserts
        (``None``) or overwrites of the stored row with that seq, in seq order."""
        driver = self.driver
        fresh = Pending(driver.batch_size)
        for old, row in rows:
            fresh.replace(old, row)
        driver._pending.swap(list(fresh.inserts), fresh.updates)

    def _renumber(
        self, foreign: list[Row], inserts: list[Row], updates: list[tuple[int, Row]]
    ) -> None:
        """Without a Store: queue the rows again after the foreign ones."""
        driver = self.driver
        if foreign:
            self.hwm = max(self.hwm, foreign[-1][0])
            driver._saw_seq(self.hwm)
        rows = sorted([*inserts, *(row for _, row in updates)], key=_seq)
        self.requeue([(None, (driver.next_seq(), *row[1:])) for row in rows])

    def settle(self) -> None:
        """The flusher, with nothing queued: give back a lease whose state is unknown,
        or rebuild a stale cache (taking the lease for it)."""
        if self.stale:
            self.acquire()
        self.drop()

    def _deliver(self, rows: list[Row]) -> None:
        """Hand rows after the high-water mark to the Store (under the lock)."""
        hwm = self.hwm
        fresh = [row for row in rows if row[0] > hwm]
        if not fresh:
            return
        driver = self.driver
        if self.stale or (not self.held and driver.pending):
            # a failed commit left rows queued, or renumbering them was cut short:
            # acquire() sorts them out first
            return
        target = self._target() if self._target is not None else None
        if target is not None:
            target._take_rows(fresh)  # advances hwm row by row
        else:
            self.hwm = fresh[-1][0]
            driver._saw_seq(self.hwm)

    # ------------------------------------------------------------------ follower

    def start(self) -> None:
        """Start the follower thread (once a Store is attached) unless it runs."""
        if self._target is None or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop = threading.Event()
        thread = threading.Thread(
            target=_follow_loop,
            args=(weakref.ref(self), self._stop),
            name=f"appendmuch-follower:{self.driver.table}",
            daemon=True,
        )
        thread.start()
        self._thread = thread

    def stop(self) -> None:
        """Stop the follower thread and close its connection."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            # It notices the stop within a poll or a query; one that hangs on a dead
            # connection holds only a weak reference and ends with it.
            thread.join(_STOP_WAIT)

    def _follow_once(self, stop: threading.Event) -> None:
        driver = self.driver
        if not driver._follow_wait(stop, self.poll) or stop.is_set():
            return
        rows = driver._follow_rows_after(self.hwm)
        if rows:
            self._deliver_when_free(rows, stop)

    def _deliver_when_free(self, rows: list[Row], stop: threading.Event) -> None:
        """Deliver under the Store's mutex and then the driver's lock (the order the
        Store takes them), giving up once stopped: a closing Store holds its mutex
        while it waits for this thread to end."""
        target = self._target() if self._target is not None else None
        outer = target._mutex if target is not None else None
        del target
        while not stop.is_set():
            if outer is not None and not outer.acquire(timeout=_WAIT_STEP):
                continue
            try:
                if self.lock.acquire(timeout=_WAIT_STEP):
                    try:
                        if not stop.is_set():
                            self._deliver(rows)
                        return
                    finally:
                        self.lock.release()
            finally:
                if outer is not None:
                    outer.release()


def _follow_loop(ref: weakref.ref[Sharing], stop: threading.Event) -> None:
    """Deliver other processes' commits until stopped; errors are kept and retried."""
    try:
        while not stop.is_set():
            sharing = ref()
            if sharing is None:
                return
            try:
                sharing._follow_once(stop)
            except Exception as exc:  # a lost connection, a row that does not decode
                sharing.last_error = exc
                sharing.driver._follow_close()
                del sharing
                if stop.wait(_RETRY_AFTER):
                    return
                continue
            del sharing
    finally:
        sharing = ref()
        if sharing is not None:
            sharing.driver._follow_close()
