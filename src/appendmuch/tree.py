"""Walking the cache tree (``store.cache``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .fieldlog import FieldLog

__all__ = ["flatten"]


def flatten(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, FieldLog]]:
    """Yield ``(namespace_tuple, field, log)`` for every field below ``tree``.

    ``tree`` is ``store.cache`` or any namespace dict in it (then pass its namespace
    as ``prefix``).  Namespaces come depth first, fields in order of first write.

    >>> from appendmuch import Memory, Store
    >>> store = Store(Memory())
    >>> store.storage("game", "p1").score = 1
    >>> store.storage("game").round = 3
    >>> [(ns, f, len(log)) for ns, f, log in flatten(store.cache)]
    [(('game', 'p1'), 'score', 1), (('game',), 'round', 1)]
    """
    for name, child in tree.items():
        if type(child) is FieldLog:
            yield prefix, name, child
        else:
            yield from flatten(child, (*prefix, name))
