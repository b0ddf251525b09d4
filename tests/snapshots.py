"""Comparable snapshots of a Store's state, for "changed nothing" assertions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from appendmuch import Store, iter_fields


def cache_snapshot(store: Store) -> list[tuple[Any, ...]]:
    """Every entry of the in-memory log: (namespace, field, seq, time, unavailable,
    encoded data, context), sorted by seq.  Data is compared by its encoding so that
    mutable values are compared by content."""
    out: list[tuple[Any, ...]] = []
    for namespace, field, log in iter_fields(store.cache):
        for value in log:
            data = None if value.unavailable else store.codec.encode(value.data)
            out.append(
                (namespace, field, value.seq, value.time, value.unavailable, data, value.context)
            )
    out.sort(key=lambda entry: entry[2])
    return out


def state(store: Store) -> tuple[Any, ...]:
    """Cache entries, stored rows (after a flush) and the sequence counter."""
    store.flush()
    rows = sorted(tuple(row) for row in store.driver.load_rows())
    return cache_snapshot(store), rows, store.driver.last_seq


@contextlib.contextmanager
def unchanged(store: Store, calls: list[Any] | None = None) -> Iterator[None]:
    """Asserts that the block leaves ``store``'s :func:`state` as it was and, given
    ``calls`` (an ``on_change`` record, emptied first), reports nothing."""
    if calls is not None:
        calls.clear()
    before = state(store)
    yield
    assert state(store) == before
    if calls is not None:
        assert calls == []
