"""Shared mode: several processes writing one table (``shared=True`` on a SQL driver).

**Writes never wait for other processes.**  An assignment gets a *provisional* seq
(from :data:`~appendmuch.fieldlog.PROVISIONAL` on: no table ever holds one), enters the
cache at once, and waits in this module's *outbox*.  The driver's background thread,
the :class:`Engine`, commits the outbox in *rounds*:

1. take the table's write lease (first come, first served: SQLite's is a FIFO queue of
   file locks, PostgreSQL's an advisory lock, whose waiters the server serves in turn);
2. read the rows others committed since the last round and hand them to the Store;
3. check the ``with`` blocks waiting to commit: a block whose reads are no longer
   current gets ``ConflictError`` and is left out;
4. give every row a final seq after the last committed one, in outbox order (a block's
   rows after each other), write them and commit, which gives the lease back (a round
   takes at most :data:`ROUND_ROWS` queued rows, so the lease is never held for long);
5. tell the Store which provisional seq became which seq, then call ``on_change`` for
   everything this round brought, in seq order.

Between rounds it *follows*: it waits for other processes' commits (PostgreSQL:
``LISTEN``/``NOTIFY``; SQLite: ``PRAGMA data_version`` every ``follow_interval``) and
delivers them.  Every database call of shared mode happens in that one thread; the
application's threads only queue rows and wait for answers (see
:mod:`appendmuch.drivers.wakeup`), so a Ctrl-C can never cut one short.

A commit whose outcome is unknown (the connection broke while committing) keeps its
rows in the outbox with the seqs it tried; the next round finds them in the table
(identical rows under those seqs: committed) or gives them new seqs.

**The seam.**  The Store's shared side (:mod:`appendmuch.shared`) is a
:class:`Subscriber`; a backend's lease (:mod:`~appendmuch.drivers.sqlite_lease`,
:mod:`~appendmuch.drivers.postgresql_lease`) implements the protocol of
:mod:`~appendmuch.drivers.lease`.  This module knows neither the cache nor SQL.
"""

from __future__ import annotations

import _thread
import hashlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import ConflictError, DatabaseError, LockedError, SeqOverflowError, WriteError
from ..fieldlog import PROVISIONAL
from .base import Row
from .batching import snapshot
from .lease import CommitUnknownError, Lease
from .wakeup import Doorbell, Flag

if TYPE_CHECKING:
    from .sql import SQLDriver

__all__ = ["BlockCommit", "Engine", "Subscriber"]

_log = logging.getLogger("appendmuch")

_T = TypeVar("_T")
#: the largest final seq: from PROVISIONAL on, seqs stand for writes not committed
_MAX_SEQ = PROVISIONAL - 1
#: after a failed round, the engine waits this long before it tries again on its own
_RETRY_AFTER = 0.5
#: the longest the lease is held for one thread's block (see Engine.reserve)
_HOLD_LIMIT = 0.1
#: the most queued rows one round commits (a block's own rows come on top): the lease
#: is held for a few milliseconds at a time, so a writer waiting for it waits little
ROUND_ROWS = 500
#: queued rows from which a write waits for its process's commits (see SharedSide.write):
#: a process writing faster than the database takes rows is slowed, not given memory
BACKLOG_ROWS = 2 * ROUND_ROWS
#: (row with a provisional seq, whether it replaces the field's committed row)
Outgoing = tuple[Row, bool]


class Subscriber(Protocol):
    """The Store's shared side, as the engine sees it (called in the engine's thread)."""

    def take_in(self, rows: list[Row]) -> None:
        """Rows other processes committed, in seq order, into the cache."""

    def committed(self, own: list[tuple[int, Row]], blocks: list[BlockCommit]) -> None:
        """This round's own rows were committed: ``(provisional seq, final row)`` for
        queued writes, and the blocks whose rows (``block.final``) were."""

    def committed_seq(self, dbns: str, field: str) -> int | None:
        """The seq of the field's newest committed row (what a replace overwrites)."""

    def announce(self) -> None:
        """Call ``on_change`` for what the round brought (outside every lock)."""

    def emptied(self) -> None:
        """The table was dropped and created empty (``reset()``), the writes queued
        dropped with it: the cache is emptied too, as the table is."""


def _nothing() -> None:
    return None


@dataclass(eq=False)
class BlockCommit:
    """A ``with`` block's writes, committed in one round after its reads are checked."""

    #: its rows, each with a provisional seq, in order
    rows: list[Outgoing]
    #: run with the lease held and the cache caught up: a conflict message, or None
    check: Callable[[], str | None]
    #: the Store side's own record of the block (handed back in committed())
    token: Any = None
    #: the rows as committed, final seqs (set by the engine)
    final: list[Row] = field(default_factory=list)
    #: the thread whose block it is (a lease reserved for it is given back with it)
    owner: int = 0


class Engine:
    """The write lease, the outbox and the follower of one SQL driver in shared mode.

    The application's threads call :meth:`queue` (no lock, no wait) and the request
    methods (``flush``, ``commit_block``, ``sync``, ...), which run their work in the
    driver's background thread and wait for it; that thread runs :func:`run`.
    """

    def __init__(
        self, driver: SQLDriver, lease: Lease, *, batch_size: int, idle: float, poll: float
    ) -> None:
        self.driver = driver
        self.lease = lease
        #: rows waiting for a round, oldest first (appended without a lock)
        self.outbox: deque[Outgoing] = deque()
        #: a round is due when this many rows wait
        self.batch_size = batch_size
        #: ... or when the oldest waited this long
        self.idle = idle
        #: seconds between two checks for others' commits (SQLite) or safety reads
        self.poll = poll
        #: provisional seq -> (the row a commit of unknown outcome tried to write,
        #: whether it was queued; else a block's, which only the table holds then)
        self.attempted: dict[int, tuple[Row, bool]] = {}
        #: largest seq delivered to the Store (its own committed rows included)
        self.hwm = 0
        #: the last error of a round the engine ran on its own (it retries)
        self.last_error: Exception | None = None
        #: the thread the lease is held for between rounds (see :meth:`reserve`)
        self._held_for: int | None = None
        self._held_since = 0.0
        self._failed_at: float | None = None
        self._subscriber: weakref.ref[Subscriber] | None = None
        #: attached, delivered to from its first reload (which reads the table itself)
        self._attached: weakref.ref[Subscriber] | None = None
        self._last_read = 0.0
        #: held by the engine thread while a round runs (see :meth:`yield_to_round`)
        self._in_round = _thread.allocate_lock()

    # ------------------------------------------------------------------ application side

    def attach(self, subscriber: Subscriber) -> None:
        """Deliver to ``subscriber`` from its first :meth:`reload` on (before it, the
        rows delivered would be read again by that reload)."""
        self._attached = weakref.ref(subscriber)

    def reload(self, load: Callable[[], int]) -> None:
        """Commit what is queued, then run ``load`` (which rebuilds the subscriber's
        cache from the table and returns the largest seq it read) in the engine's
        thread, so that no delivery runs meanwhile; deliveries go on after that seq."""

        def reload_now() -> None:
            self._flush_now()
            if self._attached is not None:
                self._subscriber, self._attached = self._attached, None
            self.hwm = load()

        self.driver.in_writer(reload_now)

    def queue(self, row: Row, replaces: bool = False) -> bool:
        """Queue a row (seq: provisional); True when a round is due.  O(1), no lock."""
        outbox = self.outbox
        outbox.append((row, replaces))
        return len(outbox) >= self.batch_size

    def holds(self, provisional: int) -> bool:
        """Whether a row with this provisional seq is queued (or being retried)."""
        queued = snapshot(self.outbox)
        return provisional in self.attempted or any(row[0] == provisional for row, _ in queued)

    @property
    def pending(self) -> int:
        return len(self.outbox)

    def newest_time(self) -> float | None:
        """``created_at`` of the newest queued row, if any."""
        try:
            return self.outbox[-1][0][4]
        except IndexError:
            return None

    def flush(self) -> None:
        """Commit every row queued before the call; raise if that fails."""
        self.driver.in_writer(self._flush_now)

    def commit_block(self, block: BlockCommit) -> None:
        """Commit a block's rows in one round, after everything queued before it;
        raises :class:`~appendmuch.errors.ConflictError` (nothing written) when its
        reads are no longer current."""

        def commit_now() -> None:
            # rows queued before the block go first; the last of them share its round
            self._drain(self._last_queued(), leave=ROUND_ROWS)
            self._round(block)

        self.driver.in_writer(commit_now)

    def settle(self) -> None:
        """Return once every request made before this call was carried out."""
        self.driver.in_writer(_nothing)

    def sync(self) -> None:
        """Deliver everything committed anywhere before the call."""
        self.driver.in_writer(self._sync_now)

    def claim(self, fingerprint: tuple[str, str]) -> None:
        """Join the table's shared writers, whose replace configuration (the Store's
        ``replace_predicate``, as :func:`appendmuch.shared.replace_fingerprint` gives
        it, and the driver's ``replace_index_specs``) must be this one."""
        digest, description = fingerprint
        specs = sorted(self.driver.replace_index_specs)
        description = f"{description}, replace_index_specs={specs!r}"
        digest = hashlib.sha256(f"{digest}|{specs!r}".encode()).hexdigest()[:16]
        self.driver.in_writer(lambda: self.lease.lease_claim(digest, description))

    def reserve(self, owner: int) -> bool:
        """Take the lease for thread ``owner``'s next block and hold it until that block
        commits (or ends, :meth:`release`), at most :data:`_HOLD_LIMIT` seconds: the
        block reads a cache nobody else can change meanwhile, so it cannot conflict
        with other processes.  For a block run again after a conflict, which would
        otherwise race the same writers again.  False if held for another thread."""
        return self.driver.in_writer(lambda: self._reserve_now(owner))

    def release(self, owner: int) -> None:
        """Give back a lease reserved for ``owner`` (its block ended without a commit)."""
        self.driver.in_writer(lambda: self._release_now(owner))

    def exclusively(self, work: Callable[[], _T]) -> _T:
        """Engine thread: run ``work`` holding the lease, caught up first (a restore or
        replay writes rows of its own under seqs after everything committed)."""
        self._drain(self._last_queued())  # (own queued rows first, under their seqs)
        self._let_go()
        others = self.lease.lease_take(self.hwm)
        try:
            self._deliver(others)
            return work()
        finally:
            self.lease.lease_give_back()
            self._announce(self._target())

    # ------------------------------------------------------------------ engine thread

    def _reserve_now(self, owner: int) -> bool:
        if self._held_for is not None:
            return self._held_for == owner
        # An unknown outcome is sorted out first; rows queued before the block are not
        # committed here but in the block's round, ahead of its rows: a round of their
        # own (two more round trips) made a reserved block cost twice an optimistic one.
        self._drain(0)
        others = self.lease.lease_take(self.hwm)
        self._held_for, self._held_since = owner, time.monotonic()
        try:
            self._deliver(others)
        except BaseException:
            self._let_go()
            raise
        self._announce(self._target())
        return True

    def _release_now(self, owner: int) -> None:
        if self._held_for == owner:
            self._let_go()

    def _let_go(self) -> None:
        """Give back a lease held between rounds, if any."""
        if self._held_for is not None:
            self._held_for = None
            self.lease.lease_give_back()

    def _flush_now(self) -> None:
        self._drain(self._last_queued())

    def _last_queued(self) -> int:
        """The provisional seq of the newest queued row (0: none)."""
        try:
            return self.outbox[-1][0][0]
        except IndexError:
            return 0

    def _drain(self, upto: int, leave: int = 0) -> None:
        """Run rounds until at most ``leave`` of the rows queued up to provisional seq
        ``upto`` remain (and an unknown outcome is sorted out).  Those rows sit at the
        front of the outbox: rows are queued in provisional order and leave it in order."""
        while True:
            front = snapshot(self.outbox, 0, leave + 1)
            if not self.attempted and sum(row[0] <= upto for row, _ in front) <= leave:
                return
            self._round(None)

    def _sync_now(self) -> None:
        if self.outbox or self.attempted:
            self._round(None)
        else:
            self._follow()

    def due(self, now: float) -> bool:
        """Whether a round should run now: a full batch, or rows that waited ``idle``."""
        outbox = self.outbox
        if not outbox and not self.attempted:
            return False
        if self._failed_at is not None and now - self._failed_at < _RETRY_AFTER:
            return False
        if len(outbox) >= self.batch_size or self.attempted:
            return True
        try:
            oldest = outbox[0][0][4]
        except IndexError:
            return False
        return time.time() - oldest >= self.idle

    def _target(self) -> Subscriber | None:
        return self._subscriber() if self._subscriber is not None else None

    def _follow(self) -> None:
        """Deliver what others committed since the last delivery (no lease)."""
        rows = self.lease.lease_rows_after(self.hwm)
        self._last_read = time.monotonic()
        if rows:
            self._deliver(rows)
            target = self._target()
            if target is not None:
                target.announce()

    def _deliver(self, rows: list[Row]) -> list[tuple[int, Row]]:
        """Hand others' rows to the Store; rows of an earlier commit of unknown outcome
        found among them are returned as this process's (provisional seq, row)."""
        ours: list[tuple[int, Row]] = []
        foreign = rows
        if self.attempted:
            by_seq = {row[0]: provisional for provisional, (row, _) in self.attempted.items()}
            foreign = []
            for row in rows:
                provisional = by_seq.get(row[0])
                tried = self.attempted.get(provisional) if provisional is not None else None
                if tried is not None and tried[0] == tuple(row) and tried[1]:
                    ours.append((provisional, tried[0]))  # type: ignore[arg-type]
                    del self.attempted[provisional]  # type: ignore[arg-type]
                else:
                    foreign.append(row)  # (a block's row committed after all: as stored)
        target = self._target()
        if target is None:
            return ours  # (nobody to deliver to yet: the first reload reads them all)
        rows = [row for row in rows if row[0] > self.hwm]
        foreign = [row for row in foreign if row[0] > self.hwm]
        if foreign:
            target.take_in(foreign)
        if ours:
            # (told first, then taken out: a write being finished (Store.mend_torn) meanwhile
            # finds its row either queued or committed, never neither)
            target.committed(ours, [])
            self._forget([provisional for provisional, _ in ours])
        if rows:
            self.hwm = max(self.hwm, rows[-1][0])
            self.driver.saw_seq(self.hwm)
        return ours

    def _forget(self, provisionals: list[int]) -> None:
        """Take committed rows out of the outbox: usually its front; after a failure
        they may sit anywhere in it.  Other threads keep appending meanwhile, so the
        deque is changed in place, one C-level step at a time."""
        gone = set(provisionals)
        outbox = self.outbox
        while gone and outbox and outbox[0][0][0] in gone:
            gone.discard(outbox.popleft()[0][0])
        for item in [item for item in snapshot(outbox) if item[0][0] in gone]:
            outbox.remove(item)

    def yield_to_round(self) -> None:
        """Application thread with a full batch queued: wait (at most
        :data:`_HOLD_LIMIT` s) for a round under way to end.  The round holds the lease;
        a thread that went on writing would take the interpreter from the engine thread
        at each of the round's I/O calls, and every other process would wait longer."""
        busy = self._in_round
        if busy.locked() and busy.acquire(True, _HOLD_LIMIT):
            busy.release()  # (a Ctrl-C just before this leaves it held: see _round)

    def _round(self, block: BlockCommit | None) -> None:
        busy = self._in_round
        if not busy.acquire(True, _HOLD_LIMIT):
            # an application thread was interrupted between taking and giving it back
            # (yield_to_round): a new one, since nobody else will ever release it
            busy = self._in_round = _thread.allocate_lock()
            busy.acquire()
        try:
            self._round_held(block)
        finally:
            busy.release()

    def _round_held(self, block: BlockCommit | None) -> None:
        """One commit round (see the module docstring); raises what went wrong for
        the caller of a request, after recording it."""
        target = self._target()
        batch = snapshot(self.outbox, 0, ROUND_ROWS)
        held = self._held_for is not None
        # A lease held between rounds is kept until its owner's block commits (or it
        # was held too long); meanwhile nobody else commits, so there is nothing to read.
        keep = held and (
            (block is None or block.owner != self._held_for)
            and time.monotonic() - self._held_since < _HOLD_LIMIT
        )
        # Others' rows are handed to the Store after the commit, with the lease given
        # back (their delivery is the costly part of a round), unless this round needs
        # the cache caught up: a block to check, a replace field's committed row to
        # find, or an unknown outcome to sort out.
        later = block is None and not self.attempted and not any(r for _, r in batch)
        try:
            others = [] if held else self.lease.lease_take(self.hwm)
        except Exception as exc:
            self._failed(exc)
            raise _as_write_error(exc, self.driver, "take the write lease of") from exc
        try:
            if later:
                after = others[-1][0] if others else 0
            else:
                # (our own rows of a commit of unknown outcome are found here, committed;
                # those not found never were: they get new seqs in this round)
                settled = {provisional for provisional, _ in self._deliver(others)}
                self.attempted.clear()
                batch = [item for item in batch if item[0][0] not in settled]
                after = 0
            conflict = block.check() if block is not None else None
            rows = batch + (block.rows if block is not None and conflict is None else [])
            inserts, updates, final = self._number(rows, target, after)
        except BaseException:
            self._held_for = None
            self.lease.lease_give_back()
            raise
        if not keep:
            self._held_for = None
        if conflict is not None and not rows:
            if not keep:
                self.lease.lease_give_back()
            self._announce(target)
            raise ConflictError(conflict)
        try:
            if inserts or updates:
                self.lease.lease_commit(inserts, updates, keep=keep)
            elif not keep:
                self.lease.lease_give_back()
        except CommitUnknownError as exc:
            self._held_for = None  # (the lease went with the connection)
            for number, ((row, _), done) in enumerate(zip(rows, final, strict=True)):
                self.attempted[row[0]] = (done, number < len(batch))
            self._failed(exc)
            self._announce(target)
            raise _as_write_error(exc.__cause__ or exc, self.driver, "commit to") from exc
        except Exception as exc:
            if keep:
                self._let_go()
            self._failed(exc)
            self._announce(target)
            raise _as_write_error(exc, self.driver, "commit to") from exc
        self._failed_at = None
        self.last_error = self.driver.last_error = None
        if later and others:
            self._deliver(others)  # (a failed round leaves them to the next read)
        own = [(row[0], done) for (row, _), done in zip(rows, final, strict=True)]
        queued = own[: len(batch)]
        if block is not None and conflict is None:
            block.final = [done for _, done in own[len(batch) :]]
        if final:
            self.hwm = max(self.hwm, final[-1][0])
            self.driver.saw_seq(self.hwm)
            self.driver.note_written(inserts, updates)
        if target is not None:  # (before the rows leave the outbox: see _deliver)
            target.committed(queued, [block] if block is not None and conflict is None else [])
        self._forget([provisional for provisional, _ in queued])
        self._announce(target)
        if conflict is not None:
            raise ConflictError(conflict)

    def _number(
        self, rows: list[Outgoing], target: Subscriber | None, after: int = 0
    ) -> tuple[list[Row], list[tuple[int, Row]], list[Row]]:
        """Final seqs for ``rows``, after everything committed (``after``: the last
        seq of rows read but not delivered yet): the inserts, the overwrites (replace
        semantics: the field's committed row, or the row this batch wrote for it
        before), and each row as committed, in order."""
        seq = max(self.hwm, self.driver.last_seq, after)
        inserts: list[Row] = []
        updates: list[tuple[int, Row]] = []
        final: list[Row] = []
        written: dict[tuple[str, str], int] = {}
        if rows and seq + len(rows) > _MAX_SEQ:
            raise SeqOverflowError(
                f"cannot commit {len(rows)} rows to {self.driver.where()}: it holds seq "
                f"{seq}, and in shared mode a seq can be at most 2**62 - 1; they stay queued"
            )
        for row, replaces in rows:
            seq += 1
            done = (seq, *row[1:])
            final.append(done)
            if not replaces:
                inserts.append(done)
                continue
            key = (row[1], row[2])
            old = written.get(key)
            if old is None and target is not None:
                old = target.committed_seq(*key)
            written[key] = seq
            if old is None:
                inserts.append(done)
            else:
                updates.append((old, done))
        return inserts, updates, final

    def _announce(self, target: Subscriber | None) -> None:
        if target is not None:
            target.announce()

    def _failed(self, exc: Exception) -> None:
        self._failed_at = time.monotonic()
        self.last_error = self.driver.last_error = exc

    def tick(self, stop: Flag) -> None:
        """The engine thread's work between two waits: a round when one is due,
        else a read of others' commits when one may be there."""
        now = time.monotonic()
        if self._held_for is not None and now - self._held_since >= _HOLD_LIMIT:
            try:
                self._let_go()  # (its block took too long: others go on)
            except Exception as exc:
                self._failed(exc)
        if self.due(now):
            try:
                self._round(None)
            except (ConflictError, WriteError, LockedError, DatabaseError) as exc:
                _log.debug("appendmuch: shared-mode round failed: %s", exc)
            except Exception as exc:  # kept for flush() and sync(), retried
                self._failed(exc)
            return
        if now - self._last_read >= self.poll:
            try:
                self._follow()
            except Exception as exc:  # a lost connection: reconnects on the next try
                self._failed(exc)
                self._last_read = now + _RETRY_AFTER

    def wait(self, bell: Doorbell) -> bool:
        """Wait for a ring, others' commits, or the next due round (engine thread)."""
        timeout = self.poll
        if self._held_for is not None:
            timeout = min(timeout, max(0.0, _HOLD_LIMIT - (time.monotonic() - self._held_since)))
        if self.outbox:
            try:
                oldest = self.outbox[0][0][4]
            except IndexError:
                oldest = time.time()
            timeout = min(timeout, max(0.0, self.idle - (time.time() - oldest)))
        try:
            heard = self.lease.lease_wait(timeout, bell)
        except Exception as exc:  # (say, no connection to listen on): retried later; the
            # thread must go on, or the application's threads would do its I/O themselves
            self._failed(exc)
            bell.wait(min(timeout, _RETRY_AFTER))
            return False
        if heard:
            self._last_read = 0.0  # read at once
        return heard

    # ------------------------------------------------------------------ closing

    def close_now(self) -> tuple[list[Row], list[tuple[int, Row]], Exception] | None:
        """Commit what is queued; give back the lease and disconnect.  What could not be
        committed is returned as rows to save (inserts and overwrites, provisional
        seqs) with the reason, and taken off the outbox."""
        failure: Exception | None = None
        try:
            self._flush_now()
        except Exception as exc:
            failure = exc
        self._held_for = None  # (closing the lease gives it back)
        left = snapshot(self.outbox)
        self.outbox.clear()
        self.attempted.clear()
        try:
            self.lease.lease_close()
        except Exception as exc:
            _log.debug("appendmuch: closing the lease: %s", exc)
        if not left:
            return None
        target = self._target()
        inserts: list[Row] = []
        updates: list[tuple[int, Row]] = []
        # (the seqs they would have had; a replay gives them new ones anyway)
        seq = max(self.hwm, self.driver.last_seq)
        for queued, replaces in left:
            seq += 1
            row = (seq, *queued[1:])
            old = target.committed_seq(row[1], row[2]) if replaces and target is not None else None
            if old is None:
                inserts.append(row)
            else:
                updates.append((old, row))
        return inserts, updates, failure or WriteError("the final commit did not happen")

    def reset_now(self) -> None:
        """``reset()``: drop and recreate the table with the lease held; queued rows
        are dropped with it, and the Store's cache is emptied.  Seqs go on after the
        largest this process saw (no seq is handed out twice by one driver)."""
        self._let_go()
        self.lease.lease_take(self.hwm)
        try:
            self.lease.lease_recreate()
        finally:
            self.lease.lease_give_back()
        self.outbox.clear()
        self.attempted.clear()
        target = self._target()
        if target is not None:
            target.emptied()


def _as_write_error(exc: BaseException, driver: SQLDriver, what: str) -> Exception:
    """``exc`` as the error a shared-mode write reports."""
    if isinstance(exc, (WriteError, LockedError, ConflictError)):
        return exc
    return WriteError(
        f"could not {what} {driver.where()}: {exc}; the rows stay queued and are "
        "written by the next successful round"
    )


def run(ref: weakref.ref[SQLDriver], stop: Flag, bell: Doorbell) -> None:
    """The engine thread of a shared-mode driver: answers requests, commits rounds
    and follows others' commits, until ``stop`` (or the driver is collected)."""
    while True:
        driver = ref()
        if driver is None:
            return
        engine = driver.sharing
        if engine is None:
            return
        engine.wait(bell)
        driver.serve()
        if stop.is_set():
            return
        engine.tick(stop)
        del driver, engine
