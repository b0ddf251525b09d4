"""Temporal queries: field values as they were while a context held.

``within(storage, round=1).score`` is the value ``score`` had at the end of the most
recent stretch of the log during which ``round`` was 1; ``within.strict`` only
counts writes of ``score`` made during that stretch.  Stretches come from the
per-value run index of :mod:`appendmuch.timeline`, and the queried field is found
by binary search on its seqs, so a query costs O(log n) however long the history.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import FieldNotFoundError
from .fieldlog import GONE, FieldLog
from .timeline import Cond, all_stretches, latest_stretch, runs_of

if TYPE_CHECKING:
    from .storage import Storage

__all__ = ["Within", "within"]

_MISSING: Any = object()


def _node(storage: Storage) -> dict[str, Any] | None:
    return storage.__store__.by_dbns.get(storage.__dbns__)


def _conds(node: dict[str, Any] | None, context: dict[str, Any]) -> list[Cond] | None:
    """The run lists of each context field, or None if some value never occurred."""
    conds: list[Cond] = []
    for field, value in context.items():
        log = node.get(field) if node is not None else None
        if type(log) is not FieldLog:
            return None
        flat = runs_of(log, value)
        if not flat:
            return None
        conds.append((log, flat))
    return conds


class Within:
    """A live view of a Storage restricted to where a context held.

    Read fields as attributes or with :meth:`get`; iterate a further field with
    :meth:`along`.  Each read looks at the log as it is at that moment.
    Values are returned as copies, so reading mutable values needs no ``with``.
    """

    __slots__ = ("__context__", "__storage__", "__strict__")

    __storage__: Storage
    __context__: dict[str, Any]
    __strict__: bool

    def __init__(self, storage: Storage, context: dict[str, Any], strict: bool) -> None:
        object.__setattr__(self, "__storage__", storage)
        object.__setattr__(self, "__context__", context)
        object.__setattr__(self, "__strict__", strict)

    @property
    def __context_fields__(self) -> dict[str, Any]:
        """The context, ``{field: value, ...}`` (the name appendmuch 0.0.8 gave it)."""
        return self.__context__

    def _lookup(self, name: str) -> Any:
        with self.__storage__.__store__.lock:  # the logs and their run index, as one
            node = _node(self.__storage__)
            log = node.get(name) if node is not None else None
            if type(log) is not FieldLog:
                return _MISSING
            conds = _conds(node, self.__context__)
            if conds is None:
                return _MISSING
            stretch = latest_stretch(conds)
            if stretch is None:
                return _MISSING
            start, end = stretch
            position = log.position_before(end)
            if position < 0 or (self.__strict__ and log.seqs[position] < start):
                return _MISSING
            data = log.value_at(position)
        return _MISSING if data is GONE else data

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = self._lookup(name)
        if value is _MISSING:
            raise FieldNotFoundError(f"{self!r} has no value for {name!r}")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self!r} is read-only")

    def get(self, name: str, default: Any = None) -> Any:
        """The field's value in this context, or ``default`` if it has none.  O(log n)."""
        value = self._lookup(name)
        return default if value is _MISSING else value

    def along(self, field: str) -> Iterator[tuple[Any, Within]]:
        """For each write of ``field`` made while this context held, in seq order:
        ``(value, within(storage, **context, field=value))``, same strictness.

        O(runs of the context + writes yielded).
        """
        with self.__storage__.__store__.lock:  # the log as of now, without holding it
            node = _node(self.__storage__)
            log = node.get(field) if node is not None else None
            if type(log) is not FieldLog:
                return
            conds = _conds(node, self.__context__)
            if conds is None:
                return
            stretches = all_stretches(conds)
            seqs, end = log.seqs, len(log)
            positions: list[int] = []
            for start, stop in stretches:
                position = log.position_before(start) + 1
                while position < end and seqs[position] < stop:
                    positions.append(position)
                    position += 1
        value_at = log.value_at  # entries never change once appended (the log only grows)
        for position in positions:
            value = value_at(position)
            if value is not GONE:
                yield (
                    value,
                    Within(self.__storage__, {**self.__context__, field: value}, self.__strict__),
                )

    def __repr__(self) -> str:
        kind = "within.strict" if self.__strict__ else "within"
        args = [repr(self.__storage__)] + [f"{k}={v!r}" for k, v in self.__context__.items()]
        return f"{kind}({', '.join(args)})"


class _WithinFactory:
    """``within(storage, **context)``; ``within.strict(...)``; ``within.along(storage, f)``."""

    __slots__ = ("_strict", "strict")

    def __init__(self, strict: bool) -> None:
        self._strict = strict
        self.strict: _WithinFactory = self

    def __call__(self, storage: Storage, /, **context: Any) -> Within:
        """Query ``storage`` as it was while every ``field=value`` of ``context`` held.

        >>> from appendmuch import Memory, Store, within
        >>> p = Store(Memory()).storage("game", "p1")
        >>> p.round = 1; p.score = 10; p.round = 2; p.score = 25
        >>> within(p, round=1).score, within(p, round=2).score
        (10, 25)
        """
        return Within(storage, context, self._strict)

    def along(self, storage: Storage, field: str, /) -> Iterator[tuple[Any, Within]]:
        """``(value, within(storage, field=value))`` for every non-deleted write of
        ``field``, in seq order (a value written twice is yielded twice).

        >>> from appendmuch import Memory, Store, within
        >>> p = Store(Memory()).storage("game", "p1")
        >>> p.round = 1; p.score = 10; p.round = 2; p.score = 25
        >>> [(r, ctx.score) for r, ctx in within.along(p, "round")]
        [(1, 10), (2, 25)]
        """
        return Within(storage, {}, self._strict).along(field)

    def __repr__(self) -> str:
        return "within.strict" if self._strict else "within"


#: The temporal query entry point (``within.strict`` for strict contexts).
within = _WithinFactory(False)
within.strict = _WithinFactory(True)
