"""``with storage: storage.items.append(k)``: one working copy, one append per block."""

from __future__ import annotations

from harness import Bench

from appendmuch import Memory, Storage, Store


def _cycles_per_s(bench: Bench, player: Storage) -> float:
    counter = iter(range(10**9))

    def cycle() -> None:
        with player:
            player.items.append(next(counter))

    return 1 / bench.per_call(cycle, minimum=10)


def run(bench: Bench) -> None:
    for length in (100, 10_000):
        store = Store(Memory())
        player = store.storage("bench", "m")
        with player:
            player.items = list(range(length))
        bench.record(
            f"mutable.len{length}",
            _cycles_per_s(bench, player),
            "cycles/s",
            note=f"with-block appending to a list of {length:,}+ elements",
        )
        store.close()
