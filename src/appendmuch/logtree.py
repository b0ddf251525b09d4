"""The in-memory log tree: building it from stored rows (the Store's loading side),
finding and making namespace nodes, and naming rows and namespaces in messages.

The tree is nested dicts keyed by namespace token, whose leaves are
:class:`~appendmuch.fieldlog.FieldLog` columns; ``Store.by_dbns`` names every node by
its dbns.  :class:`Loading` is a part of :class:`~appendmuch.store.Store` (a mixin):
its methods run on the Store and use its state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from .drivers.base import DBDriver, Row
from .errors import DecodeError, InvalidNameError, NamespaceCollisionError, ValueTooLargeError
from .fieldlog import GONE, KEPT_DECODED, FieldLog, Packed
from .names import dbns2tuple, is_valid_dbns, is_valid_field, tuple2dbns

if TYPE_CHECKING:
    from collections.abc import Callable

    from .codec import Codec
    from .storage import Storage
    from .store import ReplacePredicate

__all__ = ["Loading", "cannot_store", "describe_row", "load_namespace", "show_ns", "too_large"]

_loads = orjson.loads
_NAN = float("nan")
#: type id -> the exact type its JSON document decodes to (load fast path)
_SCALAR_IDS: dict[int, type] = {0: int, 2: str}


class Loading:
    """The Store's loading side: the tree rebuilt from stored rows, and stored rows
    taken into it (others' rows in shared mode, a restore's)."""

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

        def replaces(self, dbns: str, field: str) -> bool: ...

        def note_latest(self, dbns: str, field: str, data: Any) -> None: ...

    def rebuild(self, rows: Iterable[Row] | None = None) -> int:
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

        driver._saw_seq(seq)
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
        node, log = self.stored_field(dbns, field, seq)
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
            log.raw = raw if data.__class__ not in KEPT_DECODED and data is not GONE else None
            if log.runs is not None:
                log.runs.add(log, len(log.seqs) - 1)
        self.note_latest(dbns, field, data)

    def stored_field(
        self, dbns: str, field: str, seq: int
    ) -> tuple[dict[str, Any], FieldLog | None]:
        """The namespace node (made if new) and the field's log (None if new) for a
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
