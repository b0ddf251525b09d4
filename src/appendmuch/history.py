"""Read-only snapshots of a namespace's history (``Storage.__history__()``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .fieldlog import FieldLog
from .value import Value

__all__ = ["History"]


class History(Mapping[str, tuple[Value, ...]]):
    """field -> tuple of Values sorted by seq, frozen at the moment it was taken.

    Taking one copies the namespace's table of logs (one C-level dict copy) and notes
    the newest seq; a field's tuple is built on first lookup from its entries up to
    that seq, so later writes never show.  This relies on logs being append-only and
    on replace-semantics fields getting a new log object for each write.

    Cost: O(fields) in C to take, O(k) to look up a field with k entries.
    """

    __slots__ = ("_built", "_fields", "_logs", "_until")

    def __init__(self, namespace: Mapping[str, Any] | None, until: int) -> None:
        self._logs: dict[str, Any] = dict(namespace) if namespace is not None else {}
        self._until = until
        self._built: dict[str, tuple[Value, ...]] = {}
        self._fields: list[str] | None = None

    def _log(self, field: object) -> FieldLog | None:
        log = self._logs.get(field)  # type: ignore[call-overload]
        if type(log) is FieldLog and log.seqs[0] <= self._until:
            return log
        return None

    def __getitem__(self, field: str) -> tuple[Value, ...]:
        built = self._built.get(field)
        if built is None:
            log = self._log(field)
            if log is None:
                raise KeyError(field)
            built = self._built[field] = log.values_until(self._until)
        return built

    def _names(self) -> list[str]:
        if self._fields is None:
            self._fields = [name for name in self._logs if self._log(name) is not None]
        return self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, field: object) -> bool:
        return self._log(field) is not None

    def __repr__(self) -> str:
        return f"History({ {name: self[name] for name in self._names()}!r})"
