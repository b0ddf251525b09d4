"""The :class:`Store`: the in-memory log tree in front of a driver."""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson

from .blocks import Block, Mark, Working, restore
from .codec import Codec, Encoded
from .copying import safe_deepcopy
from .drivers.base import DBDriver, Row
from .errors import (
    ClosedError,
    ConflictError,
    DecodeError,
    FieldNotFoundError,
    InvalidNameError,
    MutableAccessError,
    NamespaceCollisionError,
    ReadOnlyError,
    RoundTripError,
    SeqOverflowError,
    UnsupportedTypeError,
    ValueTooLargeError,
)
from .fieldlog import GONE, KEPT_DECODED, FieldLog, Packed
from .history import History
from .location import _labels, caller_context
from .names import check_namespace, dbns2tuple, is_valid_dbns, is_valid_field, tuple2dbns
from .storage import Storage
from .value import Value, make_value

__all__ = ["Store"]

OnChange = Callable[[tuple[str, ...], str, Value], Any]
ReplacePredicate = Callable[[str, str], Any]
NamespaceValidator = Callable[[tuple[str, ...]], Any]

_now = time.time
_log = logging.getLogger("appendmuch")
_getframe = sys._getframe
_get_ident = threading.get_ident
#: values kept in the namespaces' shared read dicts (immutable, never guarded)
_SCALAR_TYPES = frozenset({int, float, str, bool, type(None)})
_KEPT_DECODED = KEPT_DECODED
#: type id -> the exact type its JSON document decodes to (load fast path)
_SCALAR_IDS: dict[int, type] = {0: int, 2: str}
_loads = orjson.loads
#: Store._write's default for ``data``: encode ``value`` (a plain assignment)
_ENCODE: Any = object()
_NAN = float("nan")
#: what _append_stored raises for a row it refuses, before changing the cache
_REFUSED_ROW = (InvalidNameError, NamespaceCollisionError)
#: ... and what _extend_stored raises before changing it (FieldLog.extend checks its
#: columns first: a created_at that is no number, say)
_REFUSED_RUN = (*_REFUSED_ROW, TypeError, ValueError)
#: a stored row's (namespace, field)
_ns_field = itemgetter(1, 2)
#: the largest seq a log can hold (a signed 64-bit integer, as the tables store it)
MAX_SEQ = 2**63 - 1
#: in Store._torn, in place of a replaced row's seq: the write appended a row
_APPENDED: Any = object()
#: an entry appended whose callback is still to be called:
#: (namespace, field, data, created_at, context, seq)
Done = tuple[tuple[str, ...], str, Any, float, str, int]


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
    """Close the driver of a Store nobody closed (at exit, or when it is collected).

    Nobody can catch an exception here, so a failure is said in one warning line
    (``logging``, logger ``appendmuch``): queued rows that could not be written went
    to a recovery file, and the message names it and the command that replays it."""
    name = repr(driver)
    try:
        driver.retire()  # for good: nothing may take the writer lock again
    except Exception as exc:
        _log.warning("appendmuch: closing %s at exit: %s", name, exc)


class Store:
    """An append-only log of namespaced fields, cached in memory, kept by a driver.

    Opening a Store loads the driver's whole history into memory; reads are served
    from memory and every write is appended to both.

    :param driver: where the log is kept (``Memory()``, ``Sqlite3(path)``, ...).
    :param codec: the value codec (a new :class:`~appendmuch.codec.Codec` by default).
    :param on_change: ``f(namespace_tuple, field, value)`` called after every appended
        entry with the :class:`~appendmuch.value.Value` appended.  In shared mode also
        for entries other processes wrote, in seq order, from the driver's follower
        thread (or the thread whose write or :meth:`sync` caught up first).
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
        self._by_dbns: dict[str, dict[str, Any]] = {}
        self._valid: dict[tuple[str, ...], str] = {}
        self._replace: dict[tuple[str, str], bool] = {}
        #: (thread id, dbns) -> that thread's open with blocks on the namespace
        self._blocks: dict[tuple[int, str], Block] = {}
        #: held around every change of the log tree, seq allocation + queueing, and
        #: reads that walk more than one entry; never around latest-value reads
        #: shared mode: the driver's write lease and follower (None: single writer)
        self._sharing = driver.sharing
        #: shared mode (a writer): _write must take the lease first, unless its caller
        #: holds it (``leased``)
        self._unleased = False
        # (shared mode: taken before the driver's lock, also by the follower thread)
        self._mutex = threading.RLock()
        #: a write cut short between queueing its row and updating the cache (see
        #: _write): (row, data, packed bytes, working copy, replaced seq or _APPENDED)
        self._torn: tuple[Any, ...] | None = None
        #: namespace tuple -> the last plain Storage handed out for it (see storage())
        self._handles: dict[tuple[str, ...], Storage] = {}
        #: dbns -> field -> latest scalar value; the instance __dict__ of Storage objects
        self._scalars: dict[str, dict[str, Any]] = {}
        #: (dbns, field) -> (seq, stored bytes) of the latest mutable value written
        self._raws: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._closed = False
        #: closed, or a read-only driver: every write raises (one check on the hot path)
        self._refuse_writes = driver.read_only
        #: the codec's exact-type scalar encoders (the same dict object, kept current)
        self._fast = self.codec._fast
        #: how the logs decode the stored bytes of their older entries
        self._decode = self.codec.decode
        try:
            self.load()
        except BaseException:
            driver.close()  # a Store that failed to open holds no lock
            raise
        self._finalizer = weakref.finalize(self, _close_driver, driver)
        if self._sharing is not None:
            self._unleased = not driver.read_only
            self._sharing.attach(self)

    def __repr__(self) -> str:
        return f"Store({self.driver!r})"

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """(Re)build the in-memory tree from the driver.  O(rows).

        The ``cache`` dict object is cleared and refilled in place.  If a stored row
        cannot be decoded the error names its seq, namespace and field, and the cache
        is left as it was.  Other threads' writes wait until it is done.
        """
        with self._mutex:
            seq = self._load()
            if self._sharing is not None:
                self._sharing.loaded(seq)

    def sync(self) -> None:
        """Return once this process's cache holds every entry committed anywhere
        before the call (shared mode; one cheap query when nothing is new).

        Other processes' writes also arrive by themselves, from a background thread;
        ``sync()`` is for when "everything up to now" matters.  In single-writer mode
        the cache is always complete and this returns at once.
        """
        sharing = self._sharing
        if sharing is not None:
            with self._mutex:
                sharing.sync()

    def _load(self, rows: Iterable[Row] | None = None) -> int:
        """The body of :meth:`load`; returns the largest seq loaded (0 if none).

        ``rows``: the stored rows to load, instead of ``driver.load_rows()`` (which
        writes the queue first)."""
        driver = self.driver
        driver.ensure()
        cache: dict[str, Any] = {}
        by_dbns: dict[str, dict[str, Any]] = {}
        contexts: dict[str, str] = {}
        decode_stored = self._decode_stored
        log_decode = self._decode
        kept = KEPT_DECODED
        loads = _loads
        scalar_ids = _SCALAR_IDS if self.codec.decodes_builtin_scalars() else {}
        replaces = self._replaces if self.replace_predicate is not None else None
        seq = 0
        for row in driver.load_rows() if rows is None else rows:
            try:
                seq, dbns, field, value, created_at, context = row
                node = by_dbns.get(dbns)
                if node is None:
                    node = _load_namespace(cache, by_dbns, dbns, seq)
                log = node.get(field)
                if log is None:
                    if not is_valid_field(field):
                        raise InvalidNameError(
                            f"stored row seq {seq} (namespace {dbns!r}) has an invalid field "
                            f"name {field!r}"
                        )
                    log = node[field] = FieldLog(log_decode)
                elif log.__class__ is not FieldLog:
                    raise NamespaceCollisionError(
                        f"stored row seq {seq}: {field!r} is both a field of {dbns!r} and a "
                        "namespace below it"
                    )
                if value is None:
                    data = GONE
                else:
                    # ints and strs decode straight from JSON; anything else, or a document
                    # of the wrong JSON type, takes the codec's checked path
                    kind = scalar_ids.get(value[0]) if value else None
                    data = loads(value[1:]) if kind is not None else None
                    if kind is None or data.__class__ is not kind:
                        data = decode_stored(seq, dbns, field, value)
                ctx = contexts.get(context)
                if ctx is None:
                    if context.__class__ is not str:
                        raise TypeError(f"context is {type(context).__name__}, not str")
                    ctx = contexts[context] = context
                if replaces is not None and log.seqs and replaces(dbns, field):
                    log = node[field] = FieldLog(log_decode)
                # FieldLog.append, inlined: this loop runs once per stored row
                log.seqs.append(seq)
                try:
                    log.times.append(_NAN if created_at is None else created_at)
                except TypeError:
                    raise TypeError(
                        f"created_at is {type(created_at).__name__}, not a number"
                    ) from None
                items = log.items
                items.append(data)
                items.append(ctx)
                if log.raw is not None:
                    items[-4] = Packed(log.raw)  # superseded: keep the stored bytes
                log.raw = value if data.__class__ not in kept and data is not GONE else None
            except (InvalidNameError, NamespaceCollisionError, DecodeError):
                raise
            except Exception as exc:  # a column of the wrong type, bytes that are not JSON
                raise DecodeError(
                    f"stored row {_describe(row)} cannot be loaded: {type(exc).__name__}: {exc}"
                ) from exc
        driver._saw_seq(seq)
        self.cache.clear()
        self.cache.update(cache)
        self._by_dbns = by_dbns
        for shared in self._scalars.values():
            shared.clear()
        self._handles.clear()
        self._raws.clear()
        return seq

    def _decode_stored(self, seq: int, dbns: str, field: str, value: bytes | None) -> Any:
        """Decode a stored value (GONE for a tombstone); a DecodeError names the row."""
        if value is None:
            return GONE
        try:
            return self.codec.decode(value)
        except DecodeError as exc:
            raise type(exc)(
                f"stored row seq {seq}, namespace {dbns!r}, field {field!r}: {exc}"
            ) from exc

    def _apply_entry(
        self, seq: int, dbns: str, field: str, raw: bytes | None, created_at: float, context: str
    ) -> None:
        """Add an entry sequenced elsewhere (a row another process wrote) to the tree.

        Names are checked and the value decoded as :meth:`load` does; the tree, the
        read dicts and the seq counter change under ``_mutex``, so this may run in a
        background thread.  Entries of a field must come in seq order.
        """
        data = self._decode_stored(seq, dbns, field, raw)
        replaces = self._replaces if self.replace_predicate is not None else None
        with self._mutex:
            node = self._by_dbns.get(dbns)
            log = node.get(field) if node is not None else None
            if type(log) is FieldLog and seq <= log.latest_seq:
                raise DecodeError(
                    f"stored row seq {seq}, namespace {dbns!r}, field {field!r} comes after "
                    f"seq {log.latest_seq} of the same field"
                )
            self._append_stored(seq, dbns, field, data, created_at, context, replaces, raw)
            self.driver._saw_seq(seq)

    def _append_stored(
        self,
        seq: int,
        dbns: str,
        field: str,
        data: Any,
        created_at: float | None,
        context: str,
        replaces: ReplacePredicate | None,
        raw: bytes | None = None,
    ) -> None:
        """Append an entry that already has its seq to the tree (under ``_mutex``);
        ``raw`` is its stored bytes (kept in place of the data once a newer entry comes)."""
        node, log = self._stored_field(dbns, field, seq)
        if log is None or (replaces is not None and replaces(dbns, field)):
            log = FieldLog(self._decode)
            log.append(seq, created_at, data, context, raw)
            node[field] = log  # published filled: lock-free readers never see it empty
        else:
            # data first: a reader never pairs the new seq with the old data
            items = log.items
            items.extend((data, context))
            log.times.append(_NAN if created_at is None else created_at)
            log.seqs.append(seq)
            if log.raw is not None:
                items[-4] = Packed(log.raw)  # superseded: keep the stored bytes
            log.raw = raw if data.__class__ not in _KEPT_DECODED and data is not GONE else None
            if log.runs is not None:
                log.runs.add(log, len(log.seqs) - 1)
        self._note_latest(dbns, field, data)

    def _stored_field(
        self, dbns: str, field: str, seq: int
    ) -> tuple[dict[str, Any], FieldLog | None]:
        """The namespace node (made if new) and the field's log (None if new) for a
        stored row with ``seq``; a name the tree cannot hold raises before anything
        but the namespace path changes."""
        node = self._by_dbns.get(dbns)
        if node is None:
            node = _load_namespace(self.cache, self._by_dbns, dbns, seq)
        log = node.get(field)
        if log is not None and log.__class__ is not FieldLog:
            raise NamespaceCollisionError(
                f"stored row seq {seq}: {field!r} is both a field of {dbns!r} and a "
                "namespace below it"
            )
        if log is None and not is_valid_field(field):
            raise InvalidNameError(
                f"stored row seq {seq} (namespace {dbns!r}) has an invalid field name {field!r}"
            )
        return node, log

    def _note_latest(self, dbns: str, field: str, data: Any) -> None:
        """Keep the namespace's shared read dict (if any) in step with a new latest
        entry appended from stored rows."""
        shared = self._scalars.get(dbns)
        if shared is not None:
            if data.__class__ in _SCALAR_TYPES:
                shared[field] = data
            else:
                shared.pop(field, None)

    def flush(self) -> None:
        """Write every queued row to the database now."""
        if self._torn is not None:
            with self._mutex:
                if self._torn is not None:
                    self._mend()
        self.driver.flush()

    def close(self) -> None:
        """Flush and close the driver.  Calling it again does nothing.

        Reads keep working on the in-memory log; writes raise
        :class:`~appendmuch.errors.ClosedError`.
        """
        with self._mutex:  # a write in another thread is queued before, or refused
            if self._torn is not None:
                self._mend()
            if not self._closed:
                self._closed = self._refuse_writes = True
                if self._finalizer.detach() is not None:
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
            if _RECYCLE and handle.__dbns__ in self._by_dbns:
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
            dbns = self._attach(tuple(namespace))
            with self._mutex:
                return self._by_dbns.get(dbns) or self._make_path(tuple(namespace), dbns)
        node: Any = self.cache
        for token in namespace:
            node = node.get(token) if type(node) is dict else None
            if node is None:
                return None
        return node if type(node) is dict else None

    def _attach(self, namespace: tuple[str, ...]) -> str:
        """Validate a namespace for a new Storage; return its database form."""
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
        if dbns not in self._by_dbns:
            self._check_path(namespace)
        return dbns

    def _shared(self, dbns: str) -> dict[str, Any]:
        """The read dict shared by the Storage objects of a namespace (their __dict__)."""
        return self._scalars.setdefault(dbns, {})  # atomic: one dict per namespace

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
        node: dict[str, Any] = self.cache
        for depth, token in enumerate(namespace):
            child = node.get(token)
            if child is None:
                child = node[token] = {}
                self._by_dbns[tuple2dbns(namespace[: depth + 1])] = child
            node = child
        return node

    # ------------------------------------------------------------------ writing

    def _replaces(self, dbns: str, field: str) -> bool:
        key = (dbns, field)
        answer = self._replace.get(key)
        if answer is None:
            predicate = self.replace_predicate
            answer = self._replace[key] = bool(predicate is not None and predicate(dbns, field))
        return answer

    def _delete(self, namespace: tuple[str, ...], dbns: str, field: str, storage: Any) -> None:
        appended = _Appended()
        with self._mutex:  # checked and appended at once: two deletes give one tombstone
            node = self._by_dbns.get(dbns)
            log = node.get(field) if node is not None else None
            if type(log) is not FieldLog or log.latest is GONE:
                raise FieldNotFoundError(f"{storage!r} has no field {field!r} to delete")
            self._write(namespace, dbns, field, None, GONE, None, caller_context(3), None, appended)
        self._finish(appended.entries, appended.due)

    def _write(
        self,
        namespace: tuple[str, ...],
        dbns: str,
        field: str,
        value: Any,
        data: Any = _ENCODE,
        raw: bytes | None = None,
        context: str = "",
        working: Any = None,
        appended: _Appended | None = None,
        leased: bool = False,
        exact: bool = True,
    ) -> int:
        """The write path: append one entry to the log tree, the driver, the read dicts
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
        queued under ``_mutex``, so the driver's queue and every field's log stay in
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
                    raise _at(exc, dbns, field) from exc
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
            raise _too_large(dbns, field, len(raw), driver)
        if self._unleased and not leased:  # (leased: _write_shared holds the lease)
            return self._write_shared(
                namespace, dbns, field, value, data, raw, context, working, appended, exact
            )
        with self._mutex:
            if self._torn is not None:
                self._mend()
            if self._refuse_writes:
                if self._closed:
                    raise ClosedError(
                        f"cannot write {field!r}: this Store was closed; open a new Store to write"
                    )
                raise ReadOnlyError(f"cannot write {field!r}: {driver!r} is open read-only")
            node = self._by_dbns.get(dbns)
            if node is None:
                node = self._make_path(namespace, dbns)
            log = node.get(field)
            if log.__class__ is not FieldLog and log is not None:
                raise NamespaceCollisionError(
                    f"{field!r} is a namespace below {namespace!r}, so it cannot also be a field"
                )
            seq = driver._last_seq + 1  # DBDriver.next_seq(), inlined on the hot path
            if seq > MAX_SEQ:
                raise _seqs_exhausted(driver, field)
            driver._last_seq = seq
            now = _now()
            row = (seq, dbns, field, raw, now, context)
            # The row is queued before the cache changes, and _torn names the write
            # until the cache has it: a write cut short anywhere in between (Ctrl-C)
            # is finished by _mend (here or at the next write), never left half done.
            try:
                if self.replace_predicate is not None and self._replaces(dbns, field):
                    old_seq = log.latest_seq if log is not None else None
                    self._torn = (row, data, None, working, old_seq)
                    due = driver.replace(old_seq, row)
                    log = FieldLog(self._decode)
                    log.append(seq, now, data, context)
                    node[field] = log
                else:
                    packed = raw if exact else None  # (None: older versions stay objects)
                    self._torn = (row, data, packed, working, _APPENDED)
                    due = driver.append(row)
                    if log is None:
                        log = FieldLog(self._decode)
                        log.append(seq, now, data, context, packed)
                        node[field] = log  # published filled: lock-free readers never see it empty
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
                shared = self._scalars.get(dbns)
                if shared is not None:
                    if data.__class__ in _SCALAR_TYPES:
                        shared[field] = data
                    else:
                        shared.pop(field, None)
                if working is not None or self._blocks:
                    self._note_working(dbns, field, seq, raw, working)
                self._torn = None
            except BaseException:
                if self._torn is not None:
                    self._mend()
                raise
        if appended is not None:
            appended.entries.append((namespace, field, data, now, context, seq))
            appended.due = appended.due or due
        elif due or self.on_change is not None:
            self._finish(((namespace, field, data, now, context, seq),), due)
        return seq

    def _note_working(
        self, dbns: str, field: str, seq: int, raw: bytes | None, working: Any
    ) -> None:
        """After a write of ``field`` (under ``_mutex``): remember the stored bytes of
        a mutable value, and make ``working`` the working copy of this thread's open
        block on ``dbns`` (or drop the block's outdated copy)."""
        if working is not None and raw is not None:
            self._raws[dbns, field] = (seq, raw)
        if self._blocks:
            block = self._blocks.get((_get_ident(), dbns))
            if block is not None:
                if working is not None and raw is not None:
                    block.working[field] = Working(working, raw, seq)
                else:
                    block.working.pop(field, None)

    def _mend(self) -> None:
        """Finish the write an interrupt cut short in :meth:`_write` (under ``_mutex``).

        Its row was queued before the cache changed: if the driver never got it,
        nothing changed (its seq stays unused); otherwise the cache gets the entry
        now, whatever part of it was in place.  Cut short itself, it is simply run
        again by the next write."""
        torn = self._torn
        assert torn is not None
        row, data, packed, working, replaced = torn
        seq, dbns, field, raw, now, context = row
        if self.driver.has_row(seq):
            node = self._by_dbns.get(dbns)
            if node is None:
                node = self._make_path(dbns2tuple(dbns), dbns)
            log = node.get(field)
            if type(log) is not FieldLog or (replaced is not _APPENDED and log.latest_seq < seq):
                fresh = FieldLog(self._decode)
                fresh.append(seq, now, data, context, packed)
                node[field] = fresh
            else:
                log.mend(seq, now, data, context, packed)
            self._note_latest(dbns, field, data)
            self._note_working(dbns, field, seq, raw, working)
        self._torn = None

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

    # ------------------------------------------------------------------ reading

    # ------------------------------------------------------------------ shared mode

    def _write_shared(
        self,
        namespace: tuple[str, ...],
        dbns: str,
        field: str,
        value: Any,
        data: Any,
        raw: bytes | None,
        context: str,
        working: Any,
        appended: Any,
        exact: bool,
    ) -> int:
        """``_write`` in shared mode: under the driver's write lease, caught up first,
        so the seq it allocates is final."""
        sharing = self._sharing
        assert sharing is not None
        leased = (namespace, dbns, field, value, data, raw, context, working, appended, True, exact)
        if self._refuse_writes:  # closed or read-only: refused without the lease
            return self._write(*leased)
        if sharing.held and data is not GONE:
            # A run of writes under the lease (the common case): nothing to wait for
            # or take, unless it was given back while this thread waited for the locks.
            with self._mutex, sharing.lock:
                if sharing.held and not self._refuse_writes:
                    try:
                        return self._write(*leased)
                    finally:
                        sharing.release_idle(linger=True)
        attempt = 0
        while True:
            attempt += 1
            sharing.await_lease()  # (outside the locks: others' rows arrive meanwhile)
            with self._mutex, sharing.lock:  # (this order everywhere)
                if self._refuse_writes:  # closed while this thread waited
                    return self._write(*leased)
                if not sharing.ready() and attempt < 3:
                    continue  # given back while this thread waited for the locks
                sharing.acquire()
                try:
                    if data is GONE:  # another process may have deleted it meanwhile
                        node = self._by_dbns.get(dbns)
                        log = node.get(field) if node is not None else None
                        if type(log) is not FieldLog or log.latest is GONE:
                            raise FieldNotFoundError(
                                f"{_show_ns(dbns)} has no field {field!r} to delete "
                                "(another process deleted it)"
                            )
                    return self._write(*leased)
                finally:
                    sharing.release_idle(linger=True)

    def _take_rows(self, rows: list[Row]) -> None:
        """Append rows committed by other processes (seq order) to the cache, then call
        ``on_change`` for each.  Runs under the driver's lock, often in the follower
        thread, while the application thread may be reading: every change becomes
        visible in one step (a new FieldLog), or data before seq (a reader pairing an
        old seq with new data sees a conflict, never a lost update)."""
        sharing = self._sharing
        assert sharing is not None
        driver = self.driver
        replaces = self._replaces if self.replace_predicate is not None else None
        on_change = self.on_change
        if on_change is None:
            self._take_runs(rows, replaces)
            return
        decode_taken = self._decode_taken
        append_stored = self._append_stored
        scalar_ids = _SCALAR_IDS if self.codec.decodes_builtin_scalars() else {}
        by_dbns = self._by_dbns
        last = 0
        try:
            for row in rows:
                seq, dbns, field, value, created_at, context = row
                node = by_dbns.get(dbns)
                log = node.get(field) if node is not None else None
                if type(log) is FieldLog and seq <= log.latest_seq:
                    last = seq  # in the cache already: a delivery cut short after appending it
                    continue
                data = decode_taken(seq, dbns, field, value, scalar_ids)
                sharing.stale = True  # cut short mid-append (Ctrl-C): rebuilt under the lease
                try:
                    append_stored(seq, dbns, field, data, created_at, context, replaces, value)
                except _REFUSED_ROW:
                    sharing.stale = False  # refused before the cache changed
                    raise
                sharing.stale = False
                last = seq
                if on_change is not None:
                    # (the callback may write: the mark must include this row first)
                    sharing.hwm = seq
                    driver._saw_seq(seq)
                    self._announce(seq, dbns, field, data, created_at, context)
        finally:
            if last:  # the rows appended, even if a later one failed
                sharing.hwm = max(sharing.hwm, last)
                driver._saw_seq(last)

    def _decode_taken(
        self, seq: int, dbns: str, field: str, value: bytes | None, scalar_ids: dict[int, type]
    ) -> Any:
        """The data of a row another writer committed (GONE for a tombstone): ints and
        strs straight from JSON, as load() does; anything else, or bytes that are not
        JSON, through the codec (a DecodeError naming the row)."""
        if value is None:
            return GONE
        kind = scalar_ids.get(value[0]) if value else None
        if kind is not None:
            try:
                data = _loads(value[1:])
            except ValueError:
                pass
            else:
                if data.__class__ is kind:
                    return data
        return self._decode_stored(seq, dbns, field, value)

    def _take_runs(self, rows: list[Row], replaces: ReplacePredicate | None) -> None:
        """``_take_rows`` without ``on_change``: each run of consecutive rows of one
        field goes into its FieldLog in one step (``FieldLog.extend``).  A follower
        takes in every row every other process writes, so this is the per-row cost
        of a shared-mode process that only writes."""
        sharing = self._sharing
        assert sharing is not None
        by_dbns = self._by_dbns
        scalar_ids = _SCALAR_IDS if self.codec.decodes_builtin_scalars() else {}
        decode_taken = self._decode_taken
        last = 0
        try:
            for (dbns, field), group in groupby(rows, _ns_field):
                run = list(group)
                node = by_dbns.get(dbns)
                log = node.get(field) if node is not None else None
                if type(log) is FieldLog and run[0][0] <= log.latest_seq:
                    # in the cache already (a delivery cut short after appending them):
                    # a prefix of the run, as rows come in seq order
                    top = log.latest_seq
                    fresh = [row for row in run if row[0] > top]
                    last = max(last, run[len(run) - len(fresh) - 1][0])
                    run = fresh
                    if not run:
                        continue
                seqs, _, _, values, times, contexts = zip(*run, strict=True)
                data: list[Any] = []
                failure: DecodeError | None = None
                for seq, value in zip(seqs, values, strict=True):
                    try:
                        data.append(decode_taken(seq, dbns, field, value, scalar_ids))
                    except DecodeError as exc:
                        failure = exc  # the rows before it are taken in first
                        break
                if data:
                    count = len(data)
                    if None in times:
                        times = tuple(_NAN if t is None else t for t in times)
                    sharing.stale = True  # (see _take_rows)
                    try:
                        self._extend_stored(
                            dbns,
                            field,
                            seqs[:count],
                            times[:count],
                            data,
                            contexts[:count],
                            values[:count],
                            replaces,
                        )
                    except _REFUSED_RUN:
                        sharing.stale = False  # refused before the cache changed
                        raise
                    sharing.stale = False
                    last = seqs[count - 1]
                if failure is not None:
                    raise failure
        finally:
            if last:  # the rows appended, even if a later one failed
                sharing.hwm = max(sharing.hwm, last)
                self.driver._saw_seq(last)

    def _extend_stored(
        self,
        dbns: str,
        field: str,
        seqs: tuple[int, ...],
        times: tuple[float, ...],
        data: list[Any],
        contexts: tuple[str, ...],
        raws: tuple[bytes | None, ...],
        replaces: ReplacePredicate | None,
    ) -> None:
        """``_append_stored`` for a run of entries of one field (seq order)."""
        node, log = self._stored_field(dbns, field, seqs[0])
        if replaces is not None and replaces(dbns, field):
            # a replaced field holds its newest entry only
            fresh = FieldLog(self._decode)
            fresh.append(seqs[-1], times[-1], data[-1], contexts[-1], raws[-1])
            node[field] = fresh
        elif log is None:
            fresh = FieldLog(self._decode)
            fresh.extend(seqs, times, data, contexts, raws)
            node[field] = fresh  # published filled: lock-free readers never see it empty
        else:
            log.extend(seqs, times, data, contexts, raws)
        self._note_latest(dbns, field, data[-1])

    def _resequence(
        self, foreign: list[Row], inserts: list[Row], updates: list[tuple[int, Row]]
    ) -> None:
        """A commit of this process failed and others took its seqs meanwhile (rare):
        reload the cache, announce the rows that are new to it, then queue this
        process's rows again under new seqs (``on_change`` saw them already).

        The queue is replaced in one step once the new rows are ready (the queued rows
        are not written first: their seqs are taken); cut short, the next
        ``acquire()`` does it all again (the driver marks the cache stale meanwhile)."""
        sharing = self._sharing
        assert sharing is not None
        driver = self.driver
        sharing.loaded(self._load(driver._iter_rows()))
        queue = [(None, row) for row in inserts] + [(old, row) for old, row in updates]
        queue.sort(key=lambda item: item[1][0])
        renumbered: list[tuple[int | None, Row]] = []
        for replaced, (_, dbns, field, raw, created_at, context) in queue:
            row = (driver.next_seq(), dbns, field, raw, created_at, context)
            old = None
            if replaced is not None:
                node = self._by_dbns.get(dbns)
                log = node.get(field) if node is not None else None
                old = log.latest_seq if type(log) is FieldLog else None
            renumbered.append((old, row))
        sharing.requeue(renumbered)
        # every row is queued again: nothing below can lose one
        replaces = self._replaces if self.replace_predicate is not None else None
        for _old, (seq, dbns, field, raw, created_at, context) in renumbered:
            try:
                data = self._decode_stored(seq, dbns, field, raw)
                self._append_stored(seq, dbns, field, data, created_at, context, replaces, raw)
            except (DecodeError, InvalidNameError, NamespaceCollisionError):
                pass  # queued all the same: the database keeps what was acknowledged
        if self.on_change is not None:
            for seq, dbns, field, value, created_at, context in foreign:
                data = self._decode_stored(seq, dbns, field, value)
                self._announce(seq, dbns, field, data, created_at, context)

    def _announce(
        self, seq: int, dbns: str, field: str, data: Any, created_at: float | None, context: str
    ) -> None:
        on_change = self.on_change
        assert on_change is not None
        namespace = dbns2tuple(dbns)
        if data is GONE:
            on_change(namespace, field, make_value(created_at, True, None, context, seq))
        else:
            value = make_value(created_at, False, safe_deepcopy(data), context, seq)
            on_change(namespace, field, value)

    def _changed_copies(self, block: Block) -> bool:
        """Whether any working copy of ``block`` differs from what it was read as."""
        encode = self.codec.encode_unverified
        return any(
            encode(working.obj).data != working.baseline for working in block.working.values()
        )

    def _check_conflicts(self, dbns: str, block: Block) -> None:
        """Raise ConflictError if a changed working copy was read before a newer write
        (lease held, so the cache has every committed write)."""
        node = self._by_dbns.get(dbns) or {}
        encode = self.codec.encode_unverified
        stale = []
        for field, working in block.working.items():
            log = node.get(field)
            if type(log) is FieldLog and log.latest_seq == working.seq:
                continue
            if encode(working.obj).data != working.baseline:
                newer = log.latest_seq if type(log) is FieldLog else None
                stale.append(f"{field!r} (read at seq {working.seq}, written at seq {newer})")
        if stale:
            block.working.clear()
            raise ConflictError(
                f"{_show_ns(dbns)}: the with block changed {', '.join(stale)} after another "
                "process wrote it; nothing was written. Run the block again: it will read "
                "the newer value (appendmuch.retry_on_conflict does that)"
            )

    def _read_value(self, dbns: str, field: str, log: FieldLog, data: Any) -> Any:
        """Slow path of a read: the latest data is not a plain scalar."""
        if not self.codec.is_mutable(data):
            return data
        block = self._blocks.get((_get_ident(), dbns)) if self._blocks else None
        if block is None:
            raise MutableAccessError(
                f"{field!r} of {_show_ns(dbns)} holds a mutable {type(data).__name__}: wrap "
                "the storage in a context manager (with storage: ...) to read it, so that "
                "changes to it are saved"
            )
        working = block.working.get(field)
        if working is not None and (working.seq == log.latest_seq or self._sharing is not None):
            # (shared mode: a copy outdated by another process stays the block's copy;
            # its exit raises ConflictError if it was changed)
            return working.obj
        with self._mutex:  # the latest data and its seq, as one (another thread may write)
            node = self._by_dbns.get(dbns)
            current = node.get(field) if node is not None else None
            if type(current) is FieldLog:
                log = current
            data, seq = log.latest, log.latest_seq
        if data is GONE:
            raise FieldNotFoundError(f"{_show_ns(dbns)} has no field {field!r} (it was deleted)")
        if not self.codec.is_mutable(data):
            return data
        known = self._raws.get((dbns, field))
        if known is not None and known[0] == seq:
            baseline = known[1]
        else:
            baseline = self.codec.encode_unverified(data).data
            self._raws[dbns, field] = (seq, baseline)
        copy = safe_deepcopy(data)
        block.working[field] = Working(copy, baseline, seq)
        return copy

    def _remember(self, dbns: str, field: str, log: FieldLog, data: Any) -> None:
        """Put a scalar just read from ``log`` into the namespace's shared read dict,
        unless a write (in another thread) has superseded it meanwhile."""
        with self._mutex:
            node = self._by_dbns.get(dbns)
            shared = self._scalars.get(dbns)
            if (
                shared is not None
                and node is not None
                and node.get(field) is log
                and log.latest is data
            ):
                shared[field] = data

    def _missing(self, storage: Any, field: str) -> AttributeError:
        node = self._by_dbns.get(storage.__dbns__)
        log = node.get(field) if node is not None else None
        if type(log) is FieldLog:
            return FieldNotFoundError(f"{storage!r} has no field {field!r} (it was deleted)")
        return FieldNotFoundError(f"{storage!r} has no field {field!r}")

    def _fields(self, dbns: str) -> list[str]:
        node = self._by_dbns.get(dbns)
        if node is None:
            return []
        with self._mutex:  # another thread may add a field meanwhile
            return [
                name
                for name, log in node.items()
                if type(log) is FieldLog and log.latest is not GONE
            ]

    def _history(self, dbns: str) -> History:
        with self._mutex:  # every seq up to last_seq is in the tree by now
            return History(self._by_dbns.get(dbns), self.driver.last_seq)

    # ------------------------------------------------------------------ with blocks

    def _enter(self, dbns: str) -> None:
        key = (_get_ident(), dbns)
        block = self._blocks.get(key)
        if block is None:
            block = self._blocks[key] = Block()
        else:  # a nested block: note the working copies as they are, to rewind to
            block.marks.append(self._mark(block))
        block.depth += 1

    def _exit(self, namespace: tuple[str, ...], dbns: str, ok: bool) -> None:
        key = (_get_ident(), dbns)
        block = self._blocks.get(key)
        if block is None:
            return
        mark = block.marks.pop() if block.depth > 1 else None
        try:
            if ok:
                try:
                    self._flush_block(namespace, dbns, caller_context())
                except BaseException:
                    if mark is not None:  # a nested exit that cannot save fails like a block
                        self._rewind(dbns, block, mark)
                    raise
            elif mark is None:
                block.working.clear()
            else:
                self._rewind(dbns, block, mark)
        finally:
            block.depth -= 1
            if block.depth <= 0:
                del self._blocks[key]

    def _mark(self, block: Block) -> dict[str, Mark]:
        """Each working copy's seq, encoding and state, at the start of a nested block."""
        marks: dict[str, Mark] = {}
        for field, working in block.working.items():
            try:
                encoding: bytes | None = self.codec.encode_unverified(working.obj).data
            except (TypeError, ValueError):  # it holds something unstorable: always rewind
                encoding = None
            marks[field] = Mark(working.seq, encoding, safe_deepcopy(working.obj))
        return marks

    def _rewind(self, dbns: str, block: Block, marks: dict[str, Mark]) -> None:
        """A nested block failed: undo the unsaved changes made during it, keep the
        enclosing block's.

        A working copy first read in the failed block is dropped; one the enclosing
        block held goes back to its state when the failed block began, or, if it was
        saved since (a deeper block's exit, ``flush()``, an assignment), to what was
        saved.  Lists, dicts, sets and bytearrays are restored in place, so the
        enclosing block's references to them stay valid.
        """
        with self._mutex:
            node = self._by_dbns.get(dbns) or {}
            for field, working in list(block.working.items()):
                mark = marks.get(field)
                log = node.get(field)
                if mark is None or type(log) is not FieldLog or log.latest_seq != working.seq:
                    del block.working[field]  # read in the failed block, or stale
                    continue
                if mark.seq == working.seq:
                    target, state = mark.encoding, mark.state
                else:
                    target, state = working.baseline, safe_deepcopy(log.latest)
                try:
                    unchanged = self.codec.encode_unverified(working.obj).data == target
                except (TypeError, ValueError):
                    unchanged = False
                if not unchanged:
                    working.obj = restore(working.obj, state)

    def _flush_block(self, namespace: tuple[str, ...], dbns: str, context: str) -> None:
        """Append every working copy of this thread changed since it was read or last
        written: all of them, or (if one cannot be stored) none.

        In shared mode a changed copy read before another process's newer write raises
        :class:`~appendmuch.errors.ConflictError` and nothing is written.  Either way
        the lease is then kept for a moment (as after an assignment), so a re-run of
        the block, or the next block of a loop, reads what it will write over.
        """
        block = self._blocks.get((_get_ident(), dbns)) if self._blocks else None
        if block is None:
            return
        sharing = self._sharing
        if sharing is not None and self._unleased and block.working:
            with self._mutex, sharing.lock:
                if not self._changed_copies(block):
                    return self._write_block(namespace, dbns, context, block)
                sharing.acquire()
                self._check_conflicts(dbns, block)
                try:
                    return self._write_block(namespace, dbns, context, block, leased=True)
                finally:
                    sharing.release_idle(linger=True)
        return self._write_block(namespace, dbns, context, block)

    def _write_block(
        self,
        namespace: tuple[str, ...],
        dbns: str,
        context: str,
        block: Block,
        *,
        leased: bool = False,
    ) -> None:
        codec = self.codec
        node = self._by_dbns.get(dbns) or {}
        changed: list[tuple[str, Working, Encoded]] = []
        for field, working in list(block.working.items()):
            log = node.get(field)
            if type(log) is not FieldLog or log.latest_seq != working.seq:
                del block.working[field]  # written meanwhile: the newer value wins
                continue
            encoded = codec.encode_unverified(working.obj)
            if encoded.data != working.baseline:
                changed.append((field, working, encoded))
        if not changed:
            return
        # All or none: check every changed copy before writing any, append them all
        # before a full batch goes to the driver or a callback runs (whose failure
        # must not stop the rest).
        kept = []
        for field, _, encoded in changed:
            try:
                kept.append(codec.finish(encoded))
            except RoundTripError as exc:
                raise _at(exc, dbns, field) from exc
        driver = self.driver
        for field, _, encoded in changed:
            if len(encoded.data) > driver.max_value_bytes:
                raise _too_large(dbns, field, len(encoded.data), driver)
        appended = _Appended()
        with self._mutex:
            node = self._by_dbns.get(dbns) or {}
            for (field, working, encoded), (keep, exact) in zip(changed, kept, strict=True):
                log = node.get(field)
                if type(log) is not FieldLog or log.latest_seq != working.seq:
                    del block.working[field]  # another thread wrote it just now: it wins
                    continue
                self._write(
                    namespace,
                    dbns,
                    field,
                    None,
                    keep,
                    encoded.data,
                    context,
                    working.obj if encoded.mutable else None,
                    appended,
                    leased,
                    exact,
                )
        self._finish(appended.entries, appended.due)

    def _refresh(self, dbns: str, fields: tuple[str, ...]) -> None:
        block = self._blocks.get((_get_ident(), dbns))
        if block is None:
            return
        if not fields:
            block.working.clear()
        for field in fields:
            block.working.pop(field, None)


class _Appended:
    """Entries one operation appended, whose callbacks are still to be called, and
    whether a full batch is waiting for the driver."""

    __slots__ = ("due", "entries")

    def __init__(self) -> None:
        self.entries: list[Done] = []
        self.due = False


def _too_large(dbns: str, field: str, size: int, driver: DBDriver) -> ValueTooLargeError:
    return ValueTooLargeError(
        f"{field!r} of {_show_ns(dbns)}: the value is {size} bytes encoded, more than the "
        f"{driver.max_value_bytes} bytes {driver!r} can store (max_value_bytes); nothing "
        "was written"
    )


def _seqs_exhausted(driver: DBDriver, field: str) -> SeqOverflowError:
    return SeqOverflowError(
        f"cannot write {field!r}: {driver!r} already holds seq {driver.last_seq}, the "
        f"largest a seq can be (2**63 - 1); nothing was written. (A row with such a seq "
        "was put into the table by something other than appendmuch: renumber it, or "
        "dump the log and restore it into a new table with smaller seqs)"
    )


def _describe(row: Any) -> str:
    """Name a stored row in an error message: seq, namespace and field if it has them."""
    try:
        seq, dbns, field = row[0], row[1], row[2]
    except Exception:
        return repr(row)[:200]
    return f"seq {seq!r}, namespace {dbns!r}, field {field!r}"


def _at(exc: Exception, dbns: str, field: str) -> Exception:
    """The same kind of error, its message prefixed with the namespace and field."""
    return type(exc)(f"cannot store {field!r} of {_show_ns(dbns)}: {exc}")


def _show_ns(dbns: str) -> str:
    return f"Storage({', '.join(map(repr, dbns2tuple(dbns)))})"


def _load_namespace(
    cache: dict[str, Any], by_dbns: dict[str, dict[str, Any]], dbns: str, seq: int
) -> dict[str, Any]:
    if not is_valid_dbns(dbns):
        raise InvalidNameError(f"stored row seq {seq} has an invalid namespace {dbns!r}")
    node: dict[str, Any] = cache
    tokens = dbns2tuple(dbns)
    for depth, token in enumerate(tokens):
        child = node.get(token)
        if child is None:
            child = node[token] = {}
            by_dbns[tuple2dbns(tokens[: depth + 1])] = child
        elif type(child) is not dict:
            raise NamespaceCollisionError(
                f"stored row seq {seq}: {token!r} is both a field of "
                f"{tuple2dbns(tokens[:depth])!r} and a namespace token of {dbns!r}"
            )
        node = child
    return node
