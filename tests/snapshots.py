"""Comparable snapshots of a Store's state, for "changed nothing" assertions."""

from __future__ import annotations

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
