"""The Store's side of shared mode (``shared=True``): writes that never wait, ``with``
blocks checked and committed at their end, and other processes' rows taken in.

An assignment enters the cache at once under a *provisional* seq (at the end of its
field's log) and is queued for the driver's engine (:mod:`appendmuch.drivers.sharing`),
which commits it a few milliseconds later under its final seq.  Other processes'
rows, which the engine delivers in seq order, go into each field's log *before* its
provisional entries: they were committed first, so that is their place in the final
order.  Reads are served from the cache as always, own writes included.

A ``with`` block keeps its writes until its outermost end, noting the version of
every field it read; the engine checks those versions with the write lease held and
the cache caught up, then commits the block's rows one after the other, or raises
:class:`~appendmuch.errors.ConflictError` having written nothing.

``on_change`` is called from the engine's thread once entries are committed, own ones
included, in seq order: a cursor on the seq never skips or repeats an entry.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, Any

from .blocks import ABSENT, STAGED, BlockPart, Staged, Working
from .copying import safe_deepcopy
from .drivers.base import Row
from .drivers.sharing import BACKLOG_ROWS, BlockCommit, Engine
from .errors import ConflictError, DecodeError, FieldNotFoundError, SeqOverflowError
from .fieldlog import GONE, PROVISIONAL, FieldLog, Unreadable
from .names import dbns2tuple
from .value import make_value

if TYPE_CHECKING:
    from .store import Store

__all__ = ["MAX_SEQ", "SHARED_WRITE", "SharedSide", "replace_fingerprint", "seqs_exhausted"]

#: the largest seq a log can hold (a signed 64-bit integer, as the tables store it)
MAX_SEQ = 2**63 - 1


def seqs_exhausted(driver: Any, field: str) -> SeqOverflowError:
    """The error of a write that would need a seq past :data:`MAX_SEQ`."""
    return SeqOverflowError(
        f"cannot write {field!r}: {driver!r} already holds seq {driver.last_seq}, the "
        f"largest a seq can be (2**63 - 1); nothing was written. (A row with such a seq "
        "was put into the table by something other than appendmuch: renumber it, or "
        "dump the log and restore it into a new table with smaller seqs)"
    )


#: in Store.torn, in place of a replaced row's seq: an own shared-mode write
SHARED_WRITE: Any = object()

_log = logging.getLogger("appendmuch")
_get_ident = threading.get_ident
_now = time.time
#: how many provisional -> final seqs to remember for blocks reading own writes
_FINALS_KEPT = 1 << 16
#: seconds after a thread's block conflicted during which its blocks reserve the lease:
#: a thread that lost a race is usually on a hot field, and its next blocks would lose
#: again (two processes bumping one counter conflicted on half their blocks, four on
#: nine in ten; reserving cut that to a few in a thousand)
_CONTENDED_FOR = 1.0


class SharedSide:
    """What a Store does differently in shared mode; one per Store, made by :meth:`join`.

    It is the one seam between the Store and shared mode: the Store calls only
    :meth:`join`, :meth:`reload`, :meth:`sync`, :attr:`pending`, :meth:`write`,
    :meth:`delete`, :meth:`mend`, :meth:`begin_block`, :meth:`end_block` and
    :meth:`commit_block` (reading :attr:`reserved`), and never sets its state; only
    this class talks to the driver's :class:`~appendmuch.drivers.sharing.Engine`.
    Application threads call the Store's side (:meth:`write` under the Store's lock);
    the engine's thread calls the :class:`~appendmuch.drivers.sharing.Subscriber`
    methods (:meth:`take_in`, :meth:`committed`, :meth:`emptied`,
    :meth:`committed_seq`, :meth:`announce`).
    """

    @classmethod
    def join(cls, store: Store, engine: Engine, mutex: threading.RLock) -> SharedSide:
        """Package-internal: the Store's side of shared mode on ``engine``, attached to it
        (a writer first makes the table and claims the Store's ``replace_predicate``)."""
        driver = store.driver
        if not driver.read_only:
            driver.ensure()
            engine.claim(replace_fingerprint(store.replace_predicate))
        side = cls(store, engine, mutex)
        engine.attach(side)
        return side

    def __init__(self, store: Store, engine: Engine, mutex: threading.RLock) -> None:
        self.store = store
        self.engine = engine
        #: the Store's lock (``Store.lock``): held around every change of its cache
        self.mutex = mutex
        #: how the cache's logs decode the stored bytes of their older entries
        self.log_decode = store.codec.decode
        self._provisional = count(PROVISIONAL + 1)
        #: provisional seq -> final seq, for a block that read an own write before it
        #: was committed (its version then changed under it, not by anyone else)
        self.finals: dict[int, int] = {}
        #: (dbns, field) -> the committed row an own provisional write of a
        #: replace-semantics field will overwrite
        self._replacing: dict[tuple[str, str], int | None] = {}
        #: on_change calls due, collected under the lock, made in announce():
        #: (seq, dbns, field, data, created_at, context, data is a private copy)
        self._events: list[tuple[int, str, str, Any, float | None, str, bool]] = []
        #: rows the cache could not take (a name it cannot hold), for the record
        self.refused: list[tuple[Row, Exception]] = []
        #: the largest seq the Store loaded (rows up to it are in the cache already)
        self.loaded_upto = 0
        #: threads whose wait for a commit (a block's, a ``del``) was interrupted: the
        #: engine may still be running it, and their next write or block must follow it
        self.unsettled: set[int] = set()
        #: thread -> when its last block conflicted (monotonic): its blocks reserve the
        #: lease for :data:`_CONTENDED_FOR` seconds after that
        self.contended: dict[int, float] = {}
        #: threads the lease is reserved for (until their block commits or ends)
        self.reserved: set[int] = set()

    def loaded(self, seq: int) -> None:
        """The Store (re)loaded the table up to ``seq`` (under the lock): its provisional
        entries are gone (committed before), and deliveries already read up to ``seq``
        are left out."""
        self.loaded_upto = seq
        self._replacing.clear()

    # ------------------------------------------------------------------ application side

    def reload(self) -> None:
        """Rebuild the Store's cache from the table (:meth:`Store.load`), in the engine's
        thread (no delivery runs meanwhile): own writes committed first, then the table
        read as it is."""

        def load_now() -> int:
            with self.mutex:
                seq = self.store.rebuild(self.engine.driver.rows_now())
                self.loaded(seq)
                return seq

        self.engine.reload(load_now)

    def sync(self) -> None:
        """Return once the cache holds every entry committed anywhere before the call."""
        self.engine.sync()

    @property
    def pending(self) -> int:
        """How many own rows are queued, not yet committed."""
        return self.engine.pending

    def next_seq(self) -> int:
        """A new provisional seq (under the Store's lock)."""
        return next(self._provisional)

    def settle(self) -> None:
        """If this thread was interrupted waiting for a commit, wait until the engine
        is done with it, so what the thread does next comes after it (program order:
        a block after an interrupted one reads its writes, a later write is committed
        after them).  Cheap when there is nothing to wait for."""
        me = _get_ident()
        if me in self.unsettled:
            self.engine.settle()
            self.unsettled.discard(me)

    def _commit(self, commit: BlockCommit) -> None:
        """Hand a commit to the engine and wait for it (noting an interrupted wait, and
        a conflict: the thread's blocks then reserve the lease for a while)."""
        me = commit.owner = _get_ident()
        try:
            self.engine.commit_block(commit)
        except ConflictError:
            self.contended[me] = time.monotonic()
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # (Ctrl-C: the engine goes on with it)
                self.unsettled.add(me)
            raise
        finally:
            self.reserved.discard(me)  # (the engine gave it back with the block's round)

    def begin_block(self) -> None:
        """A thread opens its outermost block: within :data:`_CONTENDED_FOR` seconds of
        its last conflict, reserve the lease for it (see :meth:`Engine.reserve`), so
        that it cannot conflict with other processes (which could otherwise win every
        race).  Otherwise blocks are optimistic: no lease until their commit."""
        me = _get_ident()
        if me in self.unsettled:
            self.settle()
        since = self.contended.get(me)
        if since is None:
            return
        if time.monotonic() - since >= _CONTENDED_FOR:
            del self.contended[me]
        elif self.engine.reserve(me):
            self.reserved.add(me)

    def end_block(self) -> None:
        """A thread's blocks ended without committing (failed, or wrote nothing): give
        back a lease reserved for them."""
        me = _get_ident()
        if me in self.reserved:
            self.reserved.discard(me)
            self.engine.release(me)

    def write(
        self,
        namespace: tuple[str, ...],
        dbns: str,
        field: str,
        data: Any,
        raw: bytes | None,
        context: str,
        working: Any,
        exact: bool,
        appended: Any = None,
    ) -> int:
        """An assignment: kept by this thread's block on ``dbns`` if one is open,
        else into the cache and the outbox at once (a provisional seq, returned).
        ``write_through``: returns once committed."""
        store = self.store
        if self.unsettled:
            self.settle()
        block = store.current_block(dbns)
        if block is not None:
            with self.mutex:
                store.writable_node(namespace, dbns, field)
                block.staged.append(Staged(field, data, raw, exact, _now(), context))
                if working is not None and raw is not None:
                    block.working[field] = Working(working, raw, STAGED)
                else:
                    block.working.pop(field, None)
            return 0
        driver = self.engine.driver
        with self.mutex:
            if store.torn is not None:
                store.mend_torn()
            node = store.writable_node(namespace, dbns, field)
            if driver.last_seq >= MAX_SEQ:
                raise seqs_exhausted(driver, field)
            seq = self.next_seq()
            row = (seq, dbns, field, raw, _now(), context)
            replaces = store.replace_predicate is not None and store.replaces(dbns, field)
            packed = raw if exact else None
            # queued before the cache changes; cut short in between, mend_torn finishes it
            store.torn = (row, data, packed, working, SHARED_WRITE)
            try:
                due = self.engine.queue(row, replaces)
                self.append_own(node, dbns, field, row, data, packed, replaces)
                store.note_latest(dbns, field, data)
                if working is not None and raw is not None:
                    store.raws[dbns, field] = (seq, raw)
                store.torn = None
            except BaseException:
                if store.torn is not None:
                    store.mend_torn()  # (a Ctrl-C: finished now rather than half done)
                raise
        if driver.write_through or (due and self.engine.pending >= BACKLOG_ROWS):
            driver.flush()  # (the backlog: this thread waits for its commits)
        elif due:
            driver.submit()
            self.engine.yield_to_round()
        return seq

    def append_own(
        self,
        node: dict[str, Any],
        dbns: str,
        field: str,
        row: Row,
        data: Any,
        packed: bytes | None,
        replaces: bool,
    ) -> None:
        """An own write enters the cache under its provisional seq (under the lock)."""
        seq, _, _, _, now, context = row
        log = node.get(field)
        if replaces:
            if (dbns, field) not in self._replacing:
                self._replacing[dbns, field] = log.committed_seq if type(log) is FieldLog else None
            fresh = FieldLog(self.log_decode)
            fresh.append(seq, now, data, context)
            node[field] = fresh
        elif type(log) is FieldLog:
            log.append(seq, now, data, context, packed)
        else:
            fresh = FieldLog(self.log_decode)
            fresh.append(seq, now, data, context, packed)
            node[field] = fresh  # published filled

    def mend(self, row: Row, data: Any, packed: bytes | None) -> None:
        """Finish an own write cut short between the outbox and the cache (under the
        lock; see Store.mend_torn)."""
        store = self.store
        seq, dbns, field, _, now, context = row
        final = self.finals.get(seq)
        if final is None and not self.engine.holds(seq):
            return  # never queued: nothing happened
        node, log = store.stored_field(dbns, field, seq)
        replaces = store.replace_predicate is not None and store.replaces(dbns, field)
        if log is not None:
            log.repair()
        if final is not None:  # committed meanwhile (the engine found no entry to settle)
            if log is None or final not in log.seqs:
                if log is None or replaces:
                    fresh = FieldLog(self.log_decode)
                    fresh.append(final, now, data, context, packed)
                    node[field] = fresh
                else:
                    log.insert_committed(final, now, data, context, packed)
        elif log is None or (replaces and log.latest_seq != seq):
            self.append_own(node, dbns, field, row, data, packed, replaces)
        elif seq not in log.seqs:
            log.append(seq, now, data, context, packed)
        store.note_latest(dbns, field, data)

    def delete(
        self, namespace: tuple[str, ...], dbns: str, field: str, storage: Any, context: str
    ) -> None:
        """``del``: kept by this thread's block if one is open; otherwise committed at
        once, after checking (with the lease) that nobody deleted the field meanwhile."""
        store = self.store
        if self.unsettled:
            self.settle()
        block = store.current_block(dbns)
        now = _now()
        tombstone = Staged(field, GONE, None, True, now, context)
        with self.mutex:
            store.writable_node(namespace, dbns, field)
            log = self._log(dbns, field)
            if block is not None:
                staged = block.staged_value(field)
                if staged is None:
                    store.note_read(dbns, field, log, block)
                    there = log is not None and log.latest is not GONE
                else:
                    there = staged.data is not GONE
                if not there:
                    raise FieldNotFoundError(f"{storage!r} has no field {field!r} to delete")
                block.staged.append(tombstone)
                block.working.pop(field, None)
                return
            if log is None or log.latest is GONE:
                raise FieldNotFoundError(f"{storage!r} has no field {field!r} to delete")
            seq = self.next_seq()
        replaces = store.replace_predicate is not None and store.replaces(dbns, field)
        row = (seq, dbns, field, None, now, context)
        commit = BlockCommit(
            [(row, replaces)], self._still_there(dbns, field), [(namespace, dbns, [tombstone])]
        )
        try:
            self._commit(commit)
        except ConflictError:
            raise FieldNotFoundError(
                f"{storage!r} has no field {field!r} to delete (another process deleted it)"
            ) from None

    def commit_block(self, parts: list[BlockPart]) -> None:
        """Commit the kept writes of a thread's blocks (one namespace each, their
        changed copies among them) in one round, together, after checking what each
        read; the blocks then read them as committed."""
        store = self.store
        rows = []
        for _, dbns, _, staged in parts:
            for entry in staged:
                replaces = store.replace_predicate is not None and store.replaces(dbns, entry.field)
                row = (self.next_seq(), dbns, entry.field, entry.raw, entry.time, entry.context)
                rows.append((row, replaces))
        checks = [(dbns, dict(block.reads)) for _, dbns, block, _ in parts]

        def check() -> str | None:
            stale = [found for dbns, reads in checks if (found := self._check(dbns, reads))]
            return "; ".join(stale) if stale else None

        commit = BlockCommit(
            rows, check, [(namespace, dbns, staged) for namespace, dbns, _, staged in parts]
        )
        self._commit(commit)
        final = iter(commit.final)
        for _, _, block, staged in parts:
            for entry, row in zip(staged, final, strict=False):
                block.reads[entry.field] = row[0]
                working = block.working.get(entry.field)
                if working is not None and working.seq == STAGED:
                    working.seq = row[0]
            for working in block.working.values():
                if working.seq == STAGED:  # (kept, then dropped by a later write of the field)
                    working.seq = ABSENT
            block.staged.clear()

    def _still_there(self, dbns: str, field: str) -> Callable[[], str | None]:
        """The check of a plain ``del`` (committed at once, as a block of one write):
        the field must still be there, whoever wrote it since."""

        def check() -> str | None:
            log = self._log(dbns, field)
            if log is None or log.latest is GONE:
                return "deleted"
            return None

        return check

    def _log(self, dbns: str, field: str) -> FieldLog | None:
        node = self.store.by_dbns.get(dbns)
        log = node.get(field) if node is not None else None
        return log if type(log) is FieldLog else None

    def version(self, dbns: str, field: str) -> int:
        """The version of a field as a block sees it: its latest entry's seq."""
        log = self._log(dbns, field)
        return log.latest_seq if log is not None else ABSENT

    def _check(self, dbns: str, reads: dict[str, int]) -> str | None:
        """Engine thread, lease held: whether every field a block read still has the
        version it read (an own write committed since counts as the same)."""
        with self.mutex:
            stale = []
            for field, version in reads.items():
                current = self.version(dbns, field)
                if current != version and self.finals.get(version) != current:
                    stale.append(f"{field!r} (read at seq {version}, now at seq {current})")
        if not stale:
            return None
        return (
            f"{_show(dbns)}: the with block read {', '.join(stale)}, which another writer "
            "changed before the block ended; nothing was written. Run the block again: "
            "it will read the newer values (appendmuch.retry_on_conflict does that)"
        )

    # ------------------------------------------------------------------ engine side

    def take_in(self, rows: list[Row]) -> None:
        """Rows other processes committed (seq order) go into the cache, before the
        provisional entries of their fields."""
        store = self.store
        decode = store.codec.decode
        with self.mutex:
            for row in rows:
                seq, dbns, field, value, created_at, context = row
                if seq <= self.loaded_upto:
                    continue  # (read before a reload that has it)
                try:
                    data = GONE if value is None else _decode(decode, value)
                    node, log = store.stored_field(dbns, field, seq)
                except Exception as exc:  # a name the tree cannot hold: noted, skipped
                    self.refused.append((row, exc))
                    _log.warning("appendmuch: row seq %s cannot be taken in: %s", seq, exc)
                    continue
                if store.replace_predicate is not None and store.replaces(dbns, field):
                    if type(log) is FieldLog and log.latest_seq >= PROVISIONAL:
                        self._replacing[dbns, field] = seq  # ours, written later, wins
                    else:
                        fresh = FieldLog(self.log_decode)
                        fresh.append(seq, created_at, data, context, value)
                        node[field] = fresh
                        store.note_latest(dbns, field, data)
                elif log is None:
                    fresh = FieldLog(self.log_decode)
                    fresh.append(seq, created_at, data, context, value)
                    node[field] = fresh
                    store.note_latest(dbns, field, data)
                else:
                    pending = log.latest_seq >= PROVISIONAL
                    log.insert_committed(seq, created_at, data, context, value)
                    if not pending:
                        store.note_latest(dbns, field, data)
                if store.on_change is not None:
                    self._events.append((seq, dbns, field, data, created_at, context, False))
            store.driver.saw_seq(rows[-1][0])

    def committed(self, own: list[tuple[int, Row]], blocks: list[BlockCommit]) -> None:
        """Own rows were committed: provisional seqs become final, blocks' rows enter
        the cache."""
        store = self.store
        events = self._events if store.on_change is not None else None
        with self.mutex:
            for provisional, row in own:
                seq, dbns, field, value, created_at, context = row
                self.finals[provisional] = seq
                log = self._log(dbns, field)
                if log is not None:
                    log.settle(provisional, seq)
                if (dbns, field) in self._replacing:
                    if log is not None and log.latest_seq >= PROVISIONAL:
                        # (a later own write of a replaced field is still queued: it
                        # overwrites this row, just committed)
                        self._replacing[dbns, field] = seq
                    else:
                        del self._replacing[dbns, field]
                if events is not None:
                    data = _entry(log, seq)
                    if data is _NOT_THERE:  # (a replaced field's entry, superseded since)
                        data = GONE if value is None else _decode(store.codec.decode, value)
                    events.append((seq, dbns, field, data, created_at, context, True))
            for block in blocks:
                final = iter(block.final)
                for entry, dbns, row in (
                    (entry, dbns, row)
                    for _, dbns, staged in block.token
                    for entry, row in zip(staged, final, strict=False)
                ):
                    seq = row[0]
                    field = entry.field
                    node, log = store.stored_field(dbns, field, seq)
                    packed = entry.raw if entry.exact else None
                    if store.replace_predicate is not None and store.replaces(dbns, field):
                        if type(log) is FieldLog and log.latest_seq >= PROVISIONAL:
                            self._replacing[dbns, field] = seq
                        else:
                            fresh = FieldLog(self.log_decode)
                            fresh.append(seq, entry.time, entry.data, entry.context)
                            node[field] = fresh
                    elif log is None:
                        fresh = FieldLog(self.log_decode)
                        fresh.append(seq, entry.time, entry.data, entry.context, packed)
                        node[field] = fresh
                    else:
                        log.insert_committed(seq, entry.time, entry.data, entry.context, packed)
                    store.note_latest(dbns, field, self._log(dbns, field).latest)  # type: ignore[union-attr]
                    if events is not None:
                        events.append(
                            (seq, dbns, field, entry.data, entry.time, entry.context, False)
                        )
            if len(self.finals) > _FINALS_KEPT:
                for provisional in list(self.finals)[: _FINALS_KEPT // 2]:
                    del self.finals[provisional]
            if own or blocks:
                store.driver.saw_seq(
                    max([r[0] for _, r in own] + [b.final[-1][0] for b in blocks if b.final])
                )

    def emptied(self) -> None:
        store = self.store
        with self.mutex:
            store.rebuild(iter(()))
            self.loaded(0)
            self._events.clear()
            self.finals.clear()

    def committed_seq(self, dbns: str, field: str) -> int | None:
        with self.mutex:
            if (dbns, field) in self._replacing:
                return self._replacing[dbns, field]
            log = self._log(dbns, field)
            return log.committed_seq if log is not None else None

    def announce(self) -> None:
        """Call ``on_change`` for the entries collected, in seq order (outside the
        lock); the first exception is raised once all were called."""
        on_change = self.store.on_change
        events, self._events = self._events, []
        if on_change is None or not events:
            return
        failure: Exception | None = None
        for seq, dbns, field, data, created_at, context, private in sorted(events, key=_first):
            try:
                if data is GONE:
                    value = make_value(created_at, True, None, context, seq)
                else:
                    copy = data if private else safe_deepcopy(data)
                    value = make_value(created_at, False, copy, context, seq)
                on_change(dbns2tuple(dbns), field, value)
            except Exception as exc:
                if failure is None:
                    failure = exc
                else:
                    failure.add_note(f"on_change for {field!r} (seq {seq}) also raised {exc!r}")
        if failure is not None:
            raise failure


_NOT_THERE: Any = object()


def _entry(log: FieldLog | None, seq: int) -> Any:
    """A private copy of the data of the entry with ``seq`` (GONE for a tombstone), or
    _NOT_THERE."""
    if log is None:
        return _NOT_THERE
    at = bisect_left(log.seqs, seq)
    if at == len(log.seqs) or log.seqs[at] != seq:
        return _NOT_THERE
    return log.value_at(at)


def _first(event: tuple[Any, ...]) -> Any:
    return event[0]


def _decode(decode: Callable[[bytes], Any], value: bytes) -> Any:
    """A row's value; one this codec cannot decode (a type id another writer
    registered, damaged bytes) is kept as :class:`Unreadable` bytes."""
    try:
        return decode(value)
    except DecodeError:
        return Unreadable(value)


def _show(dbns: str) -> str:
    return f"Storage({', '.join(map(repr, dbns2tuple(dbns)))})"


def replace_fingerprint(predicate: Callable[[str, str], Any] | None) -> tuple[str, str]:
    """``(digest, description)`` of a Store's ``replace_predicate``, the same in every
    process running the same code: shared writers of one table must agree on which
    fields keep one row, or their caches would differ from the table and each other.

    Functions are told apart by module, name, code, constants, defaults and the values
    their closure holds; other callables by their class and its ``__call__``.

    >>> replace_fingerprint(None)[1]
    'replace_predicate=None'
    >>> a = replace_fingerprint(lambda dbns, field: field.startswith("r_"))
    >>> b = replace_fingerprint(lambda dbns, field: field.startswith("x_"))
    >>> a[0] != b[0]
    True
    """
    if predicate is None:
        description = "replace_predicate=None"
        parts: list[str] = [description]
    else:
        target: Any = predicate
        extra = ""
        if isinstance(target, functools.partial):
            extra = f" with arguments {target.args!r} {sorted(target.keywords.items())!r}"
            target = target.func
        target = getattr(target, "__func__", target)  # a bound method: its function
        code = getattr(target, "__code__", None)
        if code is None:  # a callable object: its class's __call__
            target = type(target)
            call = target.__dict__.get("__call__") if isinstance(target, type) else None
            code = getattr(call, "__code__", None)
        name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
        parts = [name, extra]
        if code is not None:
            parts.append(_code_text(code))
        closure = getattr(target, "__closure__", None) or ()
        parts.extend(repr(cell.cell_contents) for cell in closure)
        parts.append(repr(getattr(target, "__defaults__", None)))
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
        description = f"replace_predicate={name}{extra} (code {digest})"
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16], description


def _code_text(code: Any) -> str:
    """A code object's instructions, names and constants (nested code included)."""
    consts = [
        _code_text(const) if hasattr(const, "co_code") else repr(const) for const in code.co_consts
    ]
    return f"{code.co_code.hex()}|{code.co_names}|{consts}"
