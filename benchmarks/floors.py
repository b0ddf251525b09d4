"""Floors: the same physical work done without appendmuch.

``dict_set`` / ``dict_get``: one plain dict per namespace.  ``sqlite_executemany``:
raw ``sqlite3`` inserts into the table layout appendmuch uses (WAL, synchronous=NORMAL,
batches of 100 rows, values encoded with orjson).  ``sqlite_select_decode``: reading
that table back in seq order and decoding every value into dicts of lists.
``pg_executemany``: psycopg ``executemany`` of batches of 100 rows, one transaction
each, into the same layout on PostgreSQL.
"""

from __future__ import annotations

import gc
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
from harness import CONTEXT, NAMESPACES, Bench, perf

SQLITE_TABLE = (
    "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL UNIQUE, "
    "namespace TEXT NOT NULL, field TEXT NOT NULL, value BLOB, created_at REAL NOT NULL, "
    "context TEXT NOT NULL)"
)
PG_TABLE = (
    "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, seq BIGINT NOT NULL UNIQUE, "
    "namespace TEXT NOT NULL, field TEXT NOT NULL, value BYTEA, "
    "created_at DOUBLE PRECISION NOT NULL, context TEXT NOT NULL)"
)
INSERT = "INSERT INTO {table} (seq, namespace, field, value, created_at, context) VALUES "
BATCH = 100


def _namespaces() -> list[str]:
    return [f"bench/p{i}" for i in range(NAMESPACES)]


def dict_set(bench: Bench) -> None:
    n = bench.n

    def work() -> None:
        dicts: list[dict[str, int]] = [{} for _ in range(NAMESPACES)]
        for i in range(n):
            dicts[i % NAMESPACES]["score"] = i % 100

    bench.record("floor.dict_set", bench.rate(work, n), "ops/s")


def dict_get(bench: Bench) -> None:
    n = bench.n
    dicts = [{"score": i} for i in range(NAMESPACES)]

    def work() -> None:
        for i in range(n):
            dicts[i % NAMESPACES]["score"]

    bench.record("floor.dict_get", bench.rate(work, n), "ops/s")


def _sqlite_write(bench: Bench, tag: str) -> float:
    """Rows per second of raw inserts into a fresh file; leaves the file in place."""
    path = bench.sqlite_path(tag)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SQLITE_TABLE)
    sql = INSERT.format(table="t") + "(?, ?, ?, ?, ?, ?)"
    names, dumps, now, n = _namespaces(), orjson.dumps, time.time, bench.n
    gc.collect()
    clock = bench.clock
    start = clock()
    batch: list[tuple[Any, ...]] = []
    for i in range(n):
        row = (i + 1, names[i % NAMESPACES], "score", b"\x00" + dumps(i % 100), now(), CONTEXT)
        batch.append(row)
        if len(batch) == BATCH or i == n - 1:
            conn.execute("BEGIN")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
            batch.clear()
    conn.close()
    return n / (clock() - start)


def sqlite_executemany(bench: Bench) -> None:
    best = max(_sqlite_write(bench, f"floor{r}") for r in range(bench.options.repeat))
    bench.record("floor.sqlite_executemany", best, "rows/s", note="same table layout")


def select_decode_rate(bench: Bench, path: Path, table: str, rows: int) -> float:
    """Rows per second of reading ``table`` back in seq order, decoding every value."""
    loads = orjson.loads

    def work() -> None:
        conn = sqlite3.connect(path)
        cache: dict[str, dict[str, list[Any]]] = {}
        for seq, ns, name, value, created, ctx in conn.execute(
            f"SELECT seq, namespace, field, value, created_at, context FROM {table} ORDER BY seq"
        ):
            fields = cache.get(ns)
            if fields is None:
                fields = cache[ns] = {}
            entries = fields.get(name)
            if entries is None:
                entries = fields[name] = []
            entries.append((seq, created, loads(value[1:]), ctx))
        conn.close()

    return bench.rate(work, rows)


def sqlite_select_decode(bench: Bench) -> None:
    path = bench.tmp / "floor-read.sqlite3"
    if not path.exists():
        _sqlite_write(bench, "floor-read")
    bench.record(
        "floor.sqlite_select_decode",
        select_decode_rate(bench, path, "t", bench.n),
        "rows/s",
        note="SELECT ... ORDER BY seq, orjson.loads, dict of lists",
    )


def pg_executemany(bench: Bench) -> None:
    import psycopg

    conninfo = bench.options.pg_conninfo
    if not conninfo:
        raise RuntimeError("the PostgreSQL floor needs --pg or APPENDMUCH_PG_CONNINFO")
    names, dumps, now, n = _namespaces(), orjson.dumps, time.time, bench.n
    rates = []
    for r in range(bench.options.repeat):
        table = bench.pg_table(f"floor{r}")
        sql = INSERT.format(table=table) + "(%s, %s, %s, %s, %s, %s)"
        with psycopg.connect(conninfo) as conn:
            with conn.transaction():
                conn.execute(PG_TABLE.format(table=table))
            gc.collect()
            start = perf()
            batch: list[tuple[Any, ...]] = []
            with conn.cursor() as cursor:
                for i in range(n):
                    value = b"\x00" + dumps(i % 100)
                    batch.append((i + 1, names[i % NAMESPACES], "score", value, now(), CONTEXT))
                    if len(batch) == BATCH or i == n - 1:
                        with conn.transaction():
                            cursor.executemany(sql, batch)
                        batch.clear()
            rates.append(n / (perf() - start))
    bench.record("floor.pg_executemany", max(rates), "rows/s", note="same table layout")


def register(bench: Bench) -> None:
    """Make every floor available to the workloads (measured on first use)."""
    for name, measure in (
        ("floor.dict_set", dict_set),
        ("floor.dict_get", dict_get),
        ("floor.sqlite_executemany", sqlite_executemany),
        ("floor.sqlite_select_decode", sqlite_select_decode),
        ("floor.pg_executemany", pg_executemany),
    ):
        bench.provide_floor(name, measure)


def run(bench: Bench) -> None:
    """Measure every floor that is not measured yet."""
    for name in ("floor.dict_set", "floor.dict_get", "floor.sqlite_executemany"):
        if name not in bench.results:
            bench.measure_floor(name)
