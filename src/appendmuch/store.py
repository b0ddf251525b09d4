"""The :class:`Store`: the in-memory log tree in front of a driver."""

from __future__ import annotations

import _thread
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .blockkeeping import Appended, BlockKeeping, Done
from .blocks import (
    Block,
    Working,
)
from .codec import Codec
from .copying import safe_deepcopy
from .drivers.base import DBDriver, close_unattended
from .errors import (
    ClosedError,
    FieldNotFoundError,
    InvalidNameError,
    NamespaceCollisionError,
    ReadOnlyError,
    RoundTripError,
    SeqOverflowError,
    UnsupportedTypeError,
)
from .fieldlog import GONE, KEPT_DECODED, PROVISIONAL, FieldLog, Packed
from .location import _labels, caller_context
from .logtree import SCALAR_TYPES, LogTree, cannot_store, load_namespace, too_large
from .names import check_namespace, dbns2tuple, tuple2dbns
from .shared import MAX_SEQ, SHARED_WRITE, SharedSide, seqs_exhausted
from .storage import Storage
from .value import Value, make_value

__all__ = ["Store"]

OnChange = Callable[[tuple[str, ...], str, Value], Any]
ReplacePredicate = Callable[[str, str], Any]
NamespaceValidator = Callable[[tuple[str, ...]], Any]

_now = time.time
_getframe = sys._getframe
_get_ident = threading.get_ident
_KEPT_DECODED = KEPT_DECODED
#: Store.append_entry's default for ``data``: encode ``value`` (a plain assignment)
_ENCODE: Any = object()
#: in Store.torn, in place of a replaced row's seq: the write appended a row
_APPENDED: Any = object()


def _refs_when_unshared() -> int:
    """What ``sys.getrefcount`` says of an object held only by a dict, when read as
    :meth:`Store.storage` reads it (the dict, a local name, the call's argument)."""
    holder = {0: object()}
    obj = holder.get(0)
    return _refcount(obj)


_refcount: Callable[[object], int] = getattr(sys, "getrefcount", lambda obj: 1 << 30)
#: reference count of a remembered Storage that nothing outside the Store holds
_UNSHARED = _refs_when_unshared()
#: only where reference counts tell whether an object is held elsewhere (CPython)
_RECYCLE = hasattr(sys, "getrefcount")


def _close_driver(driver: DBDriver) -> None:
    """Close the driver of a Store nobody closed, for good: nothing may take the writer
    lock again."""
    close_unattended(driver.retire, repr(driver))


class Store(LogTree, BlockKeeping):
    """An append-only log of namespaced fields, cached in memory, kept by a driver.

    Opening a Store loads the driver's whole history into memory; reads are served
    from memory and every write is appended to both.

    :param driver: where the log is kept (``Memory()``, ``Sqlite3(path)``, ...).
    :param codec: the value codec (a new :class:`~appendmuch.codec.Codec` by default).
    :param on_change: ``f(namespace_tuple, field, value)`` called after every appended
        entry with the :class:`~appendmuch.value.Value` appended.  In shared mode for
        every committed entry, this process's and other processes', once each, under
        its final seq and in seq order, from the driver's background thread.
    :param replace_predicate: ``p(dbns, field)``; where true, the field keeps only its
        latest entry (replace semantics).
    :param namespace_validator: ``f(namespace_tuple)`` must be truthy for every
        namespace given to :meth:`storage` (checked once per namespace).

    >>> from appendmuch import Memory, Store
    >>> store = Store(Memory())
    >>> player = store.storage("game", "player1")
    >>> player.score = 100
    >>> player.score
    100

    ``store.lock`` (a ``threading.RLock``) is held briefly by every write; hold it to
    walk ``cache`` yourself while other threads write:

    >>> with store.lock:
    ...     sorted(store.cache)
    ['game']
    """

    def __init__(
        self,
        driver: DBDriver,
        *,
        codec: Codec | None = None,
        on_change: OnChange | None = None,
        replace_predicate: ReplacePredicate | None = None,
        namespace_validator: NamespaceValidator | None = None,
    ) -> None:
        if not isinstance(driver, DBDriver):
            raise TypeError(f"driver must be a DBDriver (Memory, Sqlite3, ...), got {driver!r}")
        if driver.retired:
            raise ClosedError(
                f"{driver!r} was closed with the Store that used it; make a new driver"
            )
        for name, func in (
            ("on_change", on_change),
            ("replace_predicate", replace_predicate),
            ("namespace_validator", namespace_validator),
        ):
            if func is not None and not callable(func):
                raise TypeError(f"{name} must be callable, got {type(func).__name__}")
        #: the driver this Store writes to
        self.driver = driver
        #: the codec used for every value
        self.codec = codec if codec is not None else Codec()
        self.on_change = on_change
        self.replace_predicate = replace_predicate
        self.namespace_validator = namespace_validator
        #: the log as a tree: token -> dict ... -> field -> FieldLog
        self.cache: dict[str, Any] = {}
        #: package-internal: dbns -> its node in ``cache`` (every namespace by name)
        self.by_dbns: dict[str, dict[str, Any]] = {}
        self._valid: dict[tuple[str, ...], str] = {}
        self._replace: dict[tuple[str, str], bool] = {}
        #: package-internal: (thread id, dbns) -> that thread's open with blocks on it
        self.blocks: dict[tuple[int, str], Block] = {}
        #: single-writer mode: the thread whose blocks write (see _gate); it holds the
        #: gate only while it has open blocks
        self._gate_owner: int | None = None
        #: released when a gate owner's last block ends: wakes a thread waiting for it
        self._gate_turn = _thread.allocate_lock()
        self._gate_turn.acquire()
        #: The Store's re-entrant lock (public): held around every change of the log
        #: tree, seq allocation + queueing, and reads that walk more than one entry;
        #: never around latest-value reads.  Hold it to walk ``cache`` yourself while
        #: other threads write.
        # (shared mode: taken by the engine's thread too, never while it waits)
        self.lock = threading.RLock()
        #: package-internal: a write cut short between queueing its row and updating the
        #: cache (see append_entry): (row, data, packed bytes, working copy, replaced seq
        #: or _APPENDED)
        self.torn: tuple[Any, ...] | None = None
        #: namespace tuple -> the last plain Storage handed out for it (see storage())
        self._handles: dict[tuple[str, ...], Storage] = {}
        #: package-internal: dbns -> field -> latest scalar value; the instance __dict__
        #: of Storage objects (their scalar dict)
        self.scalars: dict[str, dict[str, Any]] = {}
        #: package-internal: (dbns, field) -> (seq, stored bytes) of the latest mutable
        #: value written
        self.raws: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._closed = False
        #: closed, or a read-only driver: every write raises (one check on the hot path)
        self._refuse_writes = driver.read_only
        #: the codec's exact-type scalar encoders (the same dict object, kept current)
        self._fast = self.codec.fast_encoders
        #: how the logs decode the stored bytes of their older entries
        self._decode = self.codec.decode
        #: shared mode (several processes write the table): the Store's side of it
        self._shared_side: SharedSide | None = None
        engine = driver.sharing
        try:
            if engine is not None:
                self._shared_side = SharedSide.join(self, engine, self.lock)
            self.load()
            if engine is not None and driver.last_seq >= PROVISIONAL:
                raise SeqOverflowError(
                    f"{driver!r} holds seq {driver.last_seq}: shared mode numbers writes "
                    "not yet committed from 2**62 on, so its tables must keep their seqs "
                    "below that (a row put in by another tool?); open it in "
                    "single-writer mode, or dump and restore it with smaller seqs"
                )
        except BaseException:
            driver.close()  # a Store that failed to open holds no lock
            raise
        self._finalizer = weakref.finalize(self, _close_driver, driver)

    def __repr__(self) -> str:
        return f"Store({self.driver!r})"

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """(Re)build the in-memory tree from the driver.  O(rows).

        The ``cache`` dict object is cleared and refilled in place.  If a stored row
        cannot be decoded the error names its seq, namespace and field, and the cache
        is left as it was.  Other threads' writes wait until it is done.
        """
        side = self._shared_side
        if side is None:
            with self.lock:
                self.rebuild()
            return
        side.reload()  # (in the engine's thread, own writes committed first)

    def sync(self) -> None:
        """Return once this process's cache holds every entry committed anywhere
        before the call (shared mode; one cheap query when nothing is new).

        Other processes' writes also arrive by themselves, from a background thread;
        ``sync()`` is for when "everything up to now" matters.  In single-writer mode
        the cache is always complete and this returns at once.
        """
        side = self._shared_side
        if side is not None:
            side.sync()

    def flush(self) -> None:
        """Write every queued row to the database now."""
        if self.torn is not None:
            with self.lock:
                if self.torn is not None:
                    self.mend_torn()
        self.driver.flush()

    def close(self) -> None:
        """Flush and close the driver.  Calling it again does nothing.

        Reads keep working on the in-memory log; writes raise
        :class:`~appendmuch.errors.ClosedError`.
        """
        with self.lock:  # a write in another thread is queued before, or refused
            if self.torn is not None:
                self.mend_torn()
            if self._closed:
                return
            self._closed = self._refuse_writes = True
            retire = self._finalizer.detach() is not None
        # (without the lock: shared mode's engine thread takes it while it finishes)
        if retire:
            self.driver.retire()  # (errors reach the caller)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ namespaces

    def storage(self, *namespace: str, virtual: Mapping[str, Any] | None = None) -> Storage:
        """A :class:`~appendmuch.storage.Storage` for ``namespace`` (one or more tokens).

        Each call gives an object that no one else holds.  The Store remembers the
        last one it made per namespace and hands it out again once nothing but the
        Store refers to it (and it has no virtual fields), which makes
        ``store.storage(...).x`` cost little more than reading a held object.

        >>> from appendmuch import Memory, Store
        >>> Store(Memory()).storage("game", "player1")
        Storage('game', 'player1')
        """
        if virtual is None:
            try:
                handle = self._handles.get(namespace)
            except TypeError:  # an unhashable token: let Storage say what is wrong
                handle = None
            if handle is not None and _refcount(handle) <= _UNSHARED and handle.__virtual__ is None:
                return handle  # nobody else holds it: as good as a new one
            handle = Storage(*namespace, store=self)
            # Only namespaces that exist, so that no later write can make their tokens
            # collide with a field (load() forgets them all).
            if _RECYCLE and handle.__dbns__ in self.by_dbns:
                self._handles[namespace] = handle
            return handle
        return Storage(*namespace, store=self, virtual=virtual)

    def get_namespace(
        self, namespace: tuple[str, ...], create: bool = False
    ) -> dict[str, Any] | None:
        """The cache dict of ``namespace``, or None if nothing was written there yet.

        With ``create=True`` the (validated) namespace is created when missing.
        """
        if create:
            dbns = self.attach(tuple(namespace))
            with self.lock:
                return self.by_dbns.get(dbns) or self._make_path(tuple(namespace), dbns)
        node: Any = self.cache
        for token in namespace:
            node = node.get(token) if type(node) is dict else None
            if node is None:
                return None
        return node if type(node) is dict else None

    def attach(self, namespace: tuple[str, ...]) -> str:
        """Package-internal (not public API).

        Validate a namespace for a new Storage; return its database form."""
        try:
            dbns = self._valid.get(namespace)
        except TypeError:
            dbns = None
        if dbns is None:
            check_namespace(namespace)
            validator = self.namespace_validator
            if validator is not None and not validator(namespace):
                raise InvalidNameError(
                    f"namespace {namespace!r} failed namespace validation (namespace_validator)"
                )
            dbns = tuple2dbns(namespace)
            self._valid[namespace] = dbns
        if dbns not in self.by_dbns:
            self._check_path(namespace)
        return dbns

    def scalar_dict(self, dbns: str) -> dict[str, Any]:
        """Package-internal (not public API).

        The scalar dict of a namespace: the ``__dict__`` its Storage objects have in
        common, holding latest scalar values so that reading one needs no call."""
        return self.scalars.setdefault(dbns, {})  # atomic: one dict per namespace

    def _check_path(self, namespace: tuple[str, ...]) -> None:
        node: Any = self.cache
        for depth, token in enumerate(namespace):
            node = node.get(token)
            if node is None:
                return
            if type(node) is FieldLog:
                raise NamespaceCollisionError(
                    f"{token!r} is a field of namespace {namespace[:depth]!r}, so it cannot "
                    f"also be a namespace token in {namespace!r}"
                )

    def _make_path(self, namespace: tuple[str, ...], dbns: str) -> dict[str, Any]:
        self._check_path(namespace)
        return load_namespace(self.cache, self.by_dbns, dbns, 0)

    # ------------------------------------------------------------------ writing

    def replaces(self, dbns: str, field: str) -> bool:
        """Package-internal: whether ``field`` keeps only its latest entry (asked once)."""
        key = (dbns, field)
        answer = self._replace.get(key)
        if answer is None:
            predicate = self.replace_predicate
            answer = self._replace[key] = bool(predicate is not None and predicate(dbns, field))
        return answer

    def delete_field(self, namespace: tuple[str, ...], dbns: str, field: str, storage: Any) -> None:
        """Package-internal: ``del storage.field`` appends a tombstone (or raises)."""
        context = caller_context(3)
        side = self._shared_side
        if side is not None:
            side.delete(namespace, dbns, field, storage, context)
            return
        if self.blocks:
            self._await_gate(dbns)
        appended = Appended()
        with self.lock:  # checked and appended at once: two deletes give one tombstone
            node = self.by_dbns.get(dbns)
            log = node.get(field) if node is not None else None
            if self.blocks:
                self.note_read(dbns, field, log if type(log) is FieldLog else None)
            if type(log) is not FieldLog or log.latest is GONE:
                raise FieldNotFoundError(f"{storage!r} has no field {field!r} to delete")
            self.append_entry(namespace, dbns, field, None, GONE, None, context, None, appended)
        self._finish(appended.entries, appended.due)

    def append_entry(
        self,
        namespace: tuple[str, ...],
        dbns: str,
        field: str,
        value: Any,
        data: Any = _ENCODE,
        raw: bytes | None = None,
        context: str = "",
        working: Any = None,
        appended: Appended | None = None,
        exact: bool = True,
    ) -> int:
        """Package-internal (not public API).

        The write path: append one entry to the log tree, the driver, the read dicts
        and working copies, and call ``on_change``.  Returns the new seq.

        A plain assignment (``Storage.__setattr__``, which has validated the name) passes
        just ``value``: it is encoded here, and the entry is labelled with the caller of
        ``__setattr__``.  Deletes and ``with``-block exits pass the entry ready made:
        ``data`` is the object the log keeps (never shared with the caller), ``raw`` its
        stored bytes (None for a tombstone), ``working`` the caller's mutable object,
        which becomes the working copy of an open block, and ``exact`` whether ``raw``
        decodes back to ``data`` (else an older version stays an object, see
        :meth:`Codec.finish`).  With ``appended``, handing a
        full batch to the driver and calling ``on_change`` are left to the caller
        (:meth:`_finish`), so that several entries are all appended first.

        Everything that can refuse the write (encoding, size, a closed Store, a name
        collision) raises before anything changes; the seq is allocated and the row
        queued under ``lock``, so the driver's queue and every field's log stay in
        seq order whatever threads write.
        """
        if data is _ENCODE:
            fast = self._fast.get(value.__class__)
            if fast is not None:  # int, float, str, bool, None: no copy, no check needed
                try:
                    raw = fast(value)
                except (TypeError, ValueError) as exc:
                    raise UnsupportedTypeError(
                        f"cannot encode a value of type {type(value).__name__}: {exc}"
                    ) from exc
                data = value
            else:
                try:
                    raw, mutable, data, exact = self.codec.prepare(value)
                except (RoundTripError, UnsupportedTypeError) as exc:
                    raise cannot_store(exc, dbns, field) from exc
                if mutable:
                    working = value
            # caller_context(), with its common case inlined: the caller of
            # Storage.__setattr__ is application code whose label is already known.
            frame = _getframe(2)
            known = _labels.get(id(frame.f_code))  # labels exist only for application code
            label = known[1].get(frame.f_lasti) if known is not None else None
            context = label if label is not None else caller_context(2)
        driver = self.driver
        if raw is not None and len(raw) > driver.max_value_bytes:
            raise too_large(dbns, field, len(raw), driver)
        if self._shared_side is not None:
            return self._shared_side.write(
                namespace, dbns, field, data, raw, context, working, exact, appended
            )
        while True:
            if self.blocks and appended is None:
                self._await_gate(dbns)  # (a caller passing appended saw to it)
            with self.lock:
                if self.blocks and appended is None and self._must_wait(dbns):
                    continue  # another thread's block took the gate meanwhile
                if self.torn is not None:
                    self.mend_torn()
                node = self.writable_node(namespace, dbns, field)
                log = node.get(field)
                seq = driver.last_seq + 1  # DBDriver.next_seq(), inlined on the hot path
                if seq > MAX_SEQ:
                    raise seqs_exhausted(driver, field)
                driver.last_seq = seq
                now = _now()
                row = (seq, dbns, field, raw, now, context)
                # The row is queued before the cache changes, and torn names the write
                # until the cache has it: a write cut short anywhere in between (Ctrl-C)
                # is finished by mend_torn (here or at the next write), never left half done.
                try:
                    if self.replace_predicate is not None and self.replaces(dbns, field):
                        old_seq = log.latest_seq if log is not None else None
                        self.torn = (row, data, None, working, old_seq)
                        due = driver.replace(old_seq, row)
                        log = FieldLog(self._decode)
                        log.append(seq, now, data, context)
                        node[field] = log
                    else:
                        packed = raw if exact else None  # (None: older versions stay objects)
                        self.torn = (row, data, packed, working, _APPENDED)
                        due = driver.append(row)
                        if log is None:
                            log = FieldLog(self._decode)
                            log.append(seq, now, data, context, packed)
                            node[field] = (
                                log  # published filled: lock-free readers never see it empty
                            )
                        else:
                            # FieldLog.append, inlined on the hot path.  Data first, with its
                            # context in one extend: a lock-free reader sees items[-2] as
                            # data, and never pairs the new seq with the old data.
                            items = log.items
                            items.extend((data, context))
                            log.times.append(now)
                            log.seqs.append(seq)
                            if log.raw is not None:
                                items[-4] = Packed(log.raw)  # superseded: keep the stored bytes
                            log.raw = packed if data.__class__ not in _KEPT_DECODED else None
                            if log.runs is not None:
                                log.runs.add(log, len(log.seqs) - 1)
                    scalars = self.scalars.get(dbns)
                    if scalars is not None:
                        if data.__class__ in SCALAR_TYPES and not (
                            self.blocks and self._covered(dbns)
                        ):
                            scalars[field] = data
                        else:
                            scalars.pop(field, None)
                    if working is not None or self.blocks:
                        self._note_working(dbns, field, seq, raw, working)
                    self.torn = None
                except BaseException:
                    if self.torn is not None:
                        self.mend_torn()
                    raise
            break

        if appended is not None:
            appended.entries.append((namespace, field, data, now, context, seq))
            appended.due = appended.due or due
        elif due or self.on_change is not None:
            self._finish(((namespace, field, data, now, context, seq),), due)
        return seq

    def writable_node(self, namespace: tuple[str, ...], dbns: str, field: str) -> dict[str, Any]:
        """Package-internal (not public API).

        The namespace's node for a write of ``field`` (made if new), under the lock;
        raises, changing nothing, when the Store cannot write or the name collides."""
        if self._refuse_writes:
            if self._closed:
                raise ClosedError(
                    f"cannot write {field!r}: this Store was closed; open a new Store to write"
                )
            raise ReadOnlyError(f"cannot write {field!r}: {self.driver!r} is open read-only")
        node = self.by_dbns.get(dbns)
        if node is None:
            node = self._make_path(namespace, dbns)
        log = node.get(field)
        if log.__class__ is not FieldLog and log is not None:
            raise NamespaceCollisionError(
                f"{field!r} is a namespace below {namespace!r}, so it cannot also be a field"
            )
        return node

    def _note_working(
        self, dbns: str, field: str, seq: int, raw: bytes | None, working: Any
    ) -> None:
        """After a write of ``field`` (under ``lock``): remember the stored bytes of
        a mutable value, and make ``working`` the working copy of this thread's open
        block on ``dbns`` (or drop the block's outdated copy)."""
        if working is not None and raw is not None:
            self.raws[dbns, field] = (seq, raw)
        if self.blocks:
            block = self.blocks.get((_get_ident(), dbns))
            if block is not None:
                block.reads[field] = seq  # its own write: no conflict with itself
                if working is not None and raw is not None:
                    block.working[field] = Working(working, raw, seq)
                else:
                    block.working.pop(field, None)

    def mend_torn(self) -> None:
        """Package-internal (not public API).

        Finish the write an interrupt cut short in :meth:`append_entry` (under ``lock``).

        Its row was queued before the cache changed: if the driver never got it,
        nothing changed (its seq stays unused); otherwise the cache gets the entry
        now, whatever part of it was in place.  Cut short itself, it is simply run
        again by the next write."""
        torn = self.torn
        assert torn is not None
        row, data, packed, working, replaced = torn
        seq, dbns, field, raw, now, context = row
        if replaced is SHARED_WRITE:
            assert self._shared_side is not None
            self._shared_side.mend(row, data, packed)
            self.torn = None
            return
        if self.driver.has_row(seq):
            node = self.by_dbns.get(dbns)
            if node is None:
                node = self._make_path(dbns2tuple(dbns), dbns)
            log = node.get(field)
            if type(log) is not FieldLog or (replaced is not _APPENDED and log.latest_seq < seq):
                fresh = FieldLog(self._decode)
                fresh.append(seq, now, data, context, packed)
                node[field] = fresh
            else:
                log.mend(seq, now, data, context, packed)
            self.note_latest(dbns, field, data)
            self._note_working(dbns, field, seq, raw, working)
        self.torn = None

    def _finish(self, entries: Iterable[Done], due: bool) -> None:
        """What follows appending entries, outside the lock: hand a full batch to the
        driver, then call ``on_change`` for each entry in order.

        Every step runs whatever an earlier one raised (the entries are in the log
        already); the first exception is re-raised at the end, later ones are added to
        it as notes.
        """
        failure: Exception | None = None
        if due:
            try:
                self.driver.submit()
            except Exception as exc:
                failure = exc
        on_change = self.on_change
        if on_change is not None:
            for namespace, field, data, now, context, seq in entries:
                if data is GONE:
                    value = make_value(now, True, None, context, seq)
                else:
                    value = make_value(now, False, safe_deepcopy(data), context, seq)
                try:
                    on_change(namespace, field, value)
                except Exception as exc:
                    if failure is None:
                        failure = exc
                    else:
                        failure.add_note(
                            f"on_change for {field!r} of {namespace!r} (seq {seq}) also "
                            f"raised {exc!r}"
                        )
        if failure is not None:
            raise failure
