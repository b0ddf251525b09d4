"""The in-memory log tree and its reads: building it from stored rows, taking stored
rows into it, the latest values, the namespaces' scalar dicts, reads inside ``with``
blocks, field lists and histories; also naming rows and namespaces in messages.

The tree is nested dicts keyed by namespace token, whose leaves are
:class:`~appendmuch.fieldlog.FieldLog` columns; ``Store.by_dbns`` names every node by
its dbns.  :class:`LogTree` is a part of :class:`~appendmuch.store.Store` (a mixin):
its methods run on the Store and use its state.  :class:`~appendmuch.storage.Storage`
and :mod:`~appendmuch.within` read through its package-internal methods.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from .blocks import ABSENT, NOT_NOTED, Block, Working
from .copying import safe_deepcopy
from .drivers.base import DBDriver, Row
from .errors import (
    DecodeError,
    FieldNotFoundError,
    InvalidNameError,
    MutableAccessError,
    NamespaceCollisionError,
    ValueTooLargeError,
)
from .fieldlog import GONE, KEPT_DECODED, FieldLog, Packed, Unreadable
from .history import History
from .names import dbns2tuple, is_valid_dbns, is_valid_field, tuple2dbns

if TYPE_CHECKING:
    from collections.abc import Callable

    from .codec import Codec
    from .shared import SharedSide
    from .storage import Storage
    from .store import ReplacePredicate

__all__ = [
    "SCALAR_TYPES",
    "LogTree",
    "cannot_store",
    "describe_row",
    "load_namespace",
    "show_ns",
    "too_large",
]

_loads = orjson.loads
_NAN = float("nan")
#: type id -> the exact type its JSON document decodes to (load fast path)
_SCALAR_IDS: dict[int, type] = {0: int, 2: str}
#: values kept in the namespaces' scalar dicts (immutable, never guarded)
SCALAR_TYPES = frozenset({int, float, str, bool, type(None)})
_get_ident = threading.get_ident


class LogTree:
    """The Store's in-memory log tree and its reads: the tree rebuilt from stored rows,
    stored rows taken into it (others' rows in shared mode), and every read."""

    if TYPE_CHECKING:  # the Store's own, which these methods use
        driver: DBDriver
        codec: Codec
        cache: dict[str, Any]
        replace_predicate: ReplacePredicate | None
        by_dbns: dict[str, dict[str, Any]]
        _decode: Callable[[bytes], Any]
        _handles: dict[tuple[str, ...], Storage]
        raws: dict[tuple[str, str], tuple[int, bytes]]
        scalars: dict[str, dict[str, Any]]
        blocks: dict[tuple[int, str], Block]
        lock: threading.RLock
        _shared_side: SharedSide | None

        def replaces(self, dbns: str, field: str) -> bool: ...

        def current_block(self, dbns: str) -> Block | None: ...

    def rebuild(self, rows: Iterable[Row] | None = None) -> int:
        """Package-internal (not public API).

        The body of :meth:`load`; returns the largest seq loaded (0 if none).

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
        replaces = self.replaces if self.replace_predicate is not None else None
        seq = 0
        source = driver.load_rows() if rows is None else rows
        try:
            for row in source:
                try:
                    seq, dbns, field, value, created_at, context = row
                    node = by_dbns.get(dbns)
                    if node is None:
                        node = load_namespace(cache, by_dbns, dbns, seq)
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
                        f"stored row {describe_row(row)} cannot be loaded: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        finally:
            # A driver's row iterator may hold its lock while suspended: an error
            # (or Ctrl-C) mid-way must not leave it held for other threads.
            close = getattr(source, "close", None)
            if close is not None:
                close()

        driver.saw_seq(seq)
        self.cache.clear()
        self.cache.update(cache)
        self.by_dbns = by_dbns
        for scalars in self.scalars.values():
            scalars.clear()
        self._handles.clear()
        self.raws.clear()
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

    def stored_field(
        self, dbns: str, field: str, seq: int
    ) -> tuple[dict[str, Any], FieldLog | None]:
        """Package-internal (not public API).

        The namespace node (made if new) and the field's log (None if new) for a
        stored row with ``seq``; a name the tree cannot hold raises before anything
        but the namespace path changes."""
        node = self.by_dbns.get(dbns)
        if node is None:
            node = load_namespace(self.cache, self.by_dbns, dbns, seq)
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

    # ------------------------------------------------------------------ reading

    def note_latest(self, dbns: str, field: str, data: Any) -> None:
        """Package-internal (not public API).

        Keep the namespace's scalar dict (if any) in step with a new latest
        entry appended from stored rows."""
        scalars = self.scalars.get(dbns)
        if scalars is not None:
            if data.__class__ in SCALAR_TYPES and not (self.blocks and self._covered(dbns)):
                scalars[field] = data
            else:
                scalars.pop(field, None)

    def read_value(self, dbns: str, field: str, log: FieldLog, data: Any) -> Any:
        """Package-internal (not public API).

        Slow path of a read: the latest data is not a plain scalar."""
        if data.__class__ is Unreadable:  # (raises the codec's error, naming the row)
            return self._decode_stored(log.latest_seq, dbns, field, data)
        if not self.codec.is_mutable(data):
            return data
        block = self.current_block(dbns)
        if block is None:
            raise MutableAccessError(
                f"{field!r} of {show_ns(dbns)} holds a mutable {type(data).__name__}: wrap "
                "the storage in a context manager (with storage: ...) to read it, so that "
                "changes to it are saved"
            )
        working = block.working.get(field)
        if working is not None and (working.seq == log.latest_seq or self._shared_side is not None):
            # (shared mode: a copy outdated by another writer stays the block's copy;
            # the block's end raises ConflictError)
            return working.obj
        with self.lock:  # the latest data and its seq, as one (another thread may write)
            node = self.by_dbns.get(dbns)
            current = node.get(field) if node is not None else None
            if type(current) is FieldLog:
                log = current
            data, seq = log.latest, log.latest_seq
        block.reads.setdefault(field, seq)
        if data is GONE:
            raise FieldNotFoundError(f"{show_ns(dbns)} has no field {field!r} (it was deleted)")
        if not self.codec.is_mutable(data):
            return data
        known = self.raws.get((dbns, field))
        if known is not None and known[0] == seq:
            baseline = known[1]
        else:
            baseline = self.codec.encode_unverified(data).data
            self.raws[dbns, field] = (seq, baseline)
        copy = safe_deepcopy(data)
        block.working[field] = Working(copy, baseline, seq)
        return copy

    def read_in_block(self, dbns: str, field: str, log: FieldLog | None) -> Any:
        """Package-internal (not public API).

        A read while ``with`` blocks are open: if this thread has one on ``dbns``, note
        the version of ``field`` (before its data is read: a write in between then
        shows as a conflict, never as a lost update), and (shared mode) answer from the
        writes the block keeps.  NOT_NOTED lets the ordinary read go on."""
        block = self.current_block(dbns)
        if block is None:
            return NOT_NOTED
        if block.staged:
            staged = block.staged_value(field)
            if staged is not None:
                if staged.data is GONE:
                    raise FieldNotFoundError(
                        f"{show_ns(dbns)} has no field {field!r} (it was deleted)"
                    )
                working = block.working.get(field)
                return working.obj if working is not None else staged.data
        self.note_read(dbns, field, log, block)
        return NOT_NOTED

    def note_read(
        self, dbns: str, field: str, log: FieldLog | None, block: Block | None = None
    ) -> None:
        """Package-internal (not public API).

        Note that this thread's block on ``dbns`` read ``field`` as it is now (a field
        found missing counts as read)."""
        if block is None:
            block = self.blocks.get((_get_ident(), dbns))
            if block is None:
                return
        if field not in block.reads:
            block.reads[field] = log.seqs[-1] if log is not None else ABSENT

    def _covered(self, dbns: str) -> bool:
        """Whether a ``with`` block of any thread is open on ``dbns`` (its reads go
        through ``__getattr__``, to be noted, so the namespace's read dict stays empty)."""
        return any(key[1] == dbns for key in self.blocks.copy())

    def remember_scalar(self, dbns: str, field: str, log: FieldLog, data: Any) -> None:
        """Package-internal (not public API).

        Put a scalar just read from ``log`` into the namespace's scalar dict,
        unless a write (in another thread) has superseded it meanwhile."""
        with self.lock:
            node = self.by_dbns.get(dbns)
            scalars = self.scalars.get(dbns)
            if (
                scalars is not None
                and node is not None
                and node.get(field) is log
                and log.latest is data
                and not (self.blocks and self._covered(dbns))
            ):
                scalars[field] = data

    def missing_error(self, storage: Any, field: str) -> AttributeError:
        """Package-internal: The error of reading ``field``, missing (or deleted) in ``storage``."""
        node = self.by_dbns.get(storage.__dbns__)
        log = node.get(field) if node is not None else None
        if type(log) is FieldLog:
            return FieldNotFoundError(f"{storage!r} has no field {field!r} (it was deleted)")
        return FieldNotFoundError(f"{storage!r} has no field {field!r}")

    def field_names(self, dbns: str) -> list[str]:
        """Package-internal: ``Storage.__fields__``, the live fields of ``dbns``."""
        node = self.by_dbns.get(dbns)
        if node is None:
            return []
        with self.lock:  # another thread may add a field meanwhile
            return [
                name
                for name, log in node.items()
                if type(log) is FieldLog and log.latest is not GONE
            ]

    def history_of(self, dbns: str) -> History:
        """Package-internal: ``Storage.__history__``, a snapshot of ``dbns``'s entries."""
        side = self._shared_side
        if side is not None and side.pending:
            self.driver.flush()  # (own writes in a history have their final seqs)
        with self.lock:  # every seq up to last_seq is in the tree by now
            return History(self.by_dbns.get(dbns), self.driver.last_seq)


def too_large(dbns: str, field: str, size: int, driver: DBDriver) -> ValueTooLargeError:
    """The error for a value bigger than ``driver`` stores (nothing was written)."""
    return ValueTooLargeError(
        f"{field!r} of {show_ns(dbns)}: the value is {size} bytes encoded, more than the "
        f"{driver.max_value_bytes} bytes {driver!r} can store (max_value_bytes); nothing "
        "was written"
    )


def describe_row(row: Any) -> str:
    """Name a stored row in an error message: seq, namespace and field if it has them."""
    try:
        seq, dbns, field = row[0], row[1], row[2]
    except Exception:
        return repr(row)[:200]
    return f"seq {seq!r}, namespace {dbns!r}, field {field!r}"


def cannot_store(exc: Exception, dbns: str, field: str) -> Exception:
    """The same kind of error, its message prefixed with the namespace and field."""
    return type(exc)(f"cannot store {field!r} of {show_ns(dbns)}: {exc}")


def show_ns(dbns: str) -> str:
    """A namespace as error messages name it: ``Storage('a', 'b')``."""
    return f"Storage({', '.join(map(repr, dbns2tuple(dbns)))})"


def load_namespace(
    cache: dict[str, Any], by_dbns: dict[str, dict[str, Any]], dbns: str, seq: int
) -> dict[str, Any]:
    """The node of ``dbns`` in the tree, made (and named in ``by_dbns``) where missing;
    ``seq``: the stored row it is for, named by the errors."""
    if not is_valid_dbns(dbns):
        raise InvalidNameError(f"stored row seq {seq} has an invalid namespace {dbns!r}")
    node: dict[str, Any] = cache
    tokens = dbns2tuple(dbns)
    for depth, token in enumerate(tokens):
        child = node.get(token)
        if child is None:
            child = {}
            node[token] = child
        elif type(child) is not dict:
            raise NamespaceCollisionError(
                f"stored row seq {seq}: {token!r} is both a field of "
                f"{tuple2dbns(tokens[:depth])!r} and a namespace token of {dbns!r}"
            )
        # Named once linked into the tree, and again by every walk that finds it
        # unnamed: an interrupt between the two steps leaves nothing lookups by name
        # miss for long (every write of a namespace not found by name walks here).
        key = tuple2dbns(tokens[: depth + 1])
        if by_dbns.get(key) is not child:
            by_dbns[key] = child
        node = child
    return node
