"""Walking nested dicts such as the cache tree (``store.cache``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .fieldlog import FieldLog

__all__ = ["flatten", "iter_fields"]


def flatten(d: Mapping[str, Any], trail: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Map the path of every leaf below ``d`` (``trail`` + keys) to that leaf.

    A leaf is any value that is not a dict: on ``store.cache`` the paths are
    ``(*namespace, field)`` and the leaves the fields' Value sequences.  Pass a
    namespace dict's namespace as ``trail``.  The result is a new dict, so results
    can be merged (``found |= flatten(node, ns)``).  As in appendmuch 0.0.8.

    >>> flatten({"a": {"b": 1, "c": [1]}, "d": "x"})
    {('a', 'b'): 1, ('a', 'c'): [1], ('d',): 'x'}
    >>> flatten({"k": "v"}, ("p",))
    {('p', 'k'): 'v'}
    """
    out: dict[tuple[str, ...], Any] = {}
    _flatten_into(out, d, tuple(trail))
    return out


def _flatten_into(
    out: dict[tuple[str, ...], Any], d: Mapping[str, Any], path: tuple[str, ...]
) -> None:
    for key, child in d.items():
        if isinstance(child, dict):
            _flatten_into(out, child, (*path, key))
        else:
            out[(*path, key)] = child


def iter_fields(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, FieldLog]]:
    """Yield ``(namespace_tuple, field, log)`` for every field below ``tree``.

    ``tree`` is ``store.cache`` or any namespace dict in it (then pass its namespace
    as ``prefix``).  Namespaces come depth first, fields in order of first write.

    >>> from appendmuch import Memory, Store
    >>> store = Store(Memory())
    >>> store.storage("game", "p1").score = 1
    >>> store.storage("game").round = 3
    >>> [(ns, f, len(log)) for ns, f, log in iter_fields(store.cache)]
    [(('game', 'p1'), 'score', 1), (('game',), 'round', 1)]
    """
    for name, child in tree.items():
        if type(child) is FieldLog:
            yield prefix, name, child
        else:
            yield from iter_fields(child, (*prefix, name))
