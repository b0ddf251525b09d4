"""Writes: ``storage.score = i`` spread over 1,000 namespaces, ``close()`` included."""

from __future__ import annotations

import gc
from collections.abc import Callable

from harness import NAMESPACES, Bench, perf

from appendmuch import Memory, PostgreSQL, Sqlite3, Store
from appendmuch.drivers import DBDriver


def _rate(bench: Bench, make_driver: object, clock: Callable[[], float]) -> float:
    n = bench.n
    best = 0.0
    for r in range(bench.options.repeat):
        driver: DBDriver = make_driver(r)  # type: ignore[operator]
        store = Store(driver)
        players = [store.storage("bench", f"p{i}") for i in range(NAMESPACES)]
        gc.collect()
        start = clock()
        for i in range(n):
            players[i % NAMESPACES].score = i % 100
        store.close()
        best = max(best, n / (clock() - start))
    return best


def run(bench: Bench) -> None:
    bench.record(
        "write.memory",
        _rate(bench, lambda r: Memory(), bench.clock),
        "writes/s",
        floor="floor.dict_set",
    )
    bench.record(
        "write.sqlite",
        _rate(bench, lambda r: Sqlite3(bench.sqlite_path(f"write{r}")), bench.clock),
        "writes/s",
        floor="floor.sqlite_executemany",
    )
    conninfo = bench.options.pg_conninfo
    if conninfo:
        bench.record(
            "write.postgresql",
            _rate(
                bench, lambda r: PostgreSQL(conninfo, table_prefix=bench.pg_table(f"w{r}")), perf
            ),
            "writes/s",
            floor="floor.pg_executemany",
        )
