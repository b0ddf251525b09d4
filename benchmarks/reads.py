"""Latest-value reads: through held Storage objects, and through a new
``store.storage(...)`` handle per read."""

from __future__ import annotations

from harness import NAMESPACES, Bench

from appendmuch import Memory, Store


def run(bench: Bench) -> None:
    n = bench.n
    store = Store(Memory())
    names = [f"p{i}" for i in range(NAMESPACES)]
    held = [store.storage("bench", name) for name in names]
    for i, player in enumerate(held):
        player.score = i
        player.label = f"player-{i}"
    if held[7].score != 7 or store.storage("bench", "p7").label != "player-7":
        raise AssertionError("reads: wrong value read back")

    def read_held() -> None:
        for i in range(n):
            held[i % NAMESPACES].score  # noqa: B018

    def read_fresh() -> None:
        storage = store.storage
        for i in range(n):
            storage("bench", names[i % NAMESPACES]).score  # noqa: B018

    bench.record("read.held", bench.rate(read_held, n), "reads/s", floor="floor.dict_get")
    bench.record("read.fresh_handle", bench.rate(read_fresh, n), "reads/s", floor="floor.dict_get")
    store.close()
