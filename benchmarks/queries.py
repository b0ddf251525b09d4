"""Temporal queries and history: ``within`` and ``within.strict`` at several history
sizes, a full ``within.along`` pass, and ``__history__()`` of a wide namespace."""

from __future__ import annotations

import random
from typing import Any

from harness import Bench

from appendmuch import Memory, Storage, Store, within


def history_sizes(bench: Bench) -> list[int]:
    sizes = [100, 1_000, 10_000]
    if bench.options.scale >= 10:
        sizes.append(100_000)
    return sizes


def _rounds(size: int) -> Storage:
    """One namespace where round k (1..size) scored 10 k."""
    player = Store(Memory()).storage("bench", f"h{size}")
    for k in range(1, size + 1):
        player.round = k
        player.score = 10 * k
    return player


def _query_time(bench: Bench, player: Storage, factory: Any, size: int, seed: int) -> float:
    """Microseconds per ``factory(player, round=k).score`` for random rounds k."""
    picks = iter(random.Random(seed).choices(range(1, size + 1), k=1_000_000))

    def query() -> None:
        k = next(picks)
        if factory(player, round=k).score != 10 * k:
            raise AssertionError(f"within(round={k}).score is wrong")

    return bench.per_call(query) * 1e6


def _along_time(bench: Bench, player: Storage, size: int) -> float:
    """Seconds for one full ``within.along(player, "round")`` pass reading each score."""
    start = bench.clock()
    count = 0
    for k, context in within.along(player, "round"):
        if context.score != 10 * k:
            raise AssertionError(f"along: round {k} has the wrong score")
        count += 1
    if count != size:
        raise AssertionError(f"along yielded {count} pairs, expected {size}")
    return bench.clock() - start


def _list_history(bench: Bench) -> None:
    """A field whose older values are lists (held as stored bytes, decoded on demand):
    round k's ``items`` is the list of the ten numbers k .. k+9."""
    size = 1_000
    store = Store(Memory())
    player = store.storage("bench", "lists")
    for k in range(1, size + 1):
        player.round = k
        player.items = list(range(k, k + 10))

    picks = iter(random.Random(7).choices(range(1, size + 1), k=1_000_000))

    def query() -> None:
        k = next(picks)
        if within(player, round=k).items[0] != k:
            raise AssertionError(f"within(round={k}).items is wrong")

    def along() -> None:
        for k, context in within.along(player, "round"):
            if context.items[0] != k:
                raise AssertionError(f"along: round {k} has the wrong items")

    def history() -> None:
        if len(player.__history__()["items"]) != size:
            raise AssertionError("history: wrong length")

    bench.record("within.list.H1000", bench.per_call(query) * 1e6, "us/query", "lower")
    bench.record("along.list.H1000", bench.per_call(along), "s/pass", "lower")
    bench.record(
        "history.list.H1000",
        bench.per_call(history) * 1e3,
        "ms/call",
        "lower",
        note="__history__()['items'] of 1,000 lists of 10 ints",
    )
    store.close()


def run(bench: Bench) -> None:
    for size in history_sizes(bench):
        player = _rounds(size)
        for name, factory in (("within", within), ("within.strict", within.strict)):
            us = _query_time(bench, player, factory, size, 12345)
            bench.record(f"{name}.H{size}", us, "us/query", "lower")
        bench.record(f"along.H{size}", _along_time(bench, player, size), "s/pass", "lower")
        player.__store__.close()

    _list_history(bench)

    store = Store(Memory())
    wide = store.storage("bench", "wide")
    names = [f"f{i}" for i in range(1000)]
    for j in range(5):
        for name in names:
            setattr(wide, name, j)

    def snapshot() -> None:
        wide.__history__()["f0"]

    bench.record(
        "history.F1000x5",
        bench.per_call(snapshot) * 1e3,
        "ms/call",
        "lower",
        note="__history__() of 1,000 fields x 5 entries, one field looked up",
    )
    store.close()
