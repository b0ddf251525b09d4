"""Opening a SQLite log: rows per second next to a raw SELECT + decode, and resident
memory per row, measured in a fresh process (see ``procmem.py``)."""

from __future__ import annotations

import subprocess
import sys

from floors import select_decode_rate
from harness import NAMESPACES, SRC, Bench
from procmem import measure_open

_WRITE = """
import sys
sys.path.insert(0, sys.argv[2])
from appendmuch import Sqlite3, Store
store = Store(Sqlite3(sys.argv[1]))
players = [store.storage("bench", f"p{i}") for i in range(int(sys.argv[4]))]
for i in range(int(sys.argv[3])):
    players[i % len(players)].score = i % 100
store.close()
"""


def run(bench: Bench) -> None:
    n = 10 * bench.n  # enough rows for the memory figures to rise above noise
    path = bench.sqlite_path("load")
    # written by another process so that this one stays small (see procmem.py)
    subprocess.run(
        [sys.executable, "-c", _WRITE, str(path), str(SRC), str(n), str(NAMESPACES)],
        check=True,
    )
    runs = [measure_open(path) for _ in range(bench.options.repeat)]
    rows = runs[0]["rows"]
    if rows != n:
        raise AssertionError(f"load: {rows} rows read, {n} written")
    seconds = "open_cpu_s" if bench.options.clock == "cpu" else "open_s"
    best = min(runs, key=lambda r: r[seconds])
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    floor = select_decode_rate(bench, path, "appendmuch_values", rows)
    bench.record(
        "floor.sqlite_select_decode",
        floor,
        "rows/s",
        note="the same file: SELECT ... ORDER BY seq, orjson.loads, dict of lists",
    )
    rate = rows / best[seconds]
    bench.record("load.rows_per_s", rate, "rows/s", floor="floor.sqlite_select_decode")
    bench.record(
        "load.settled_bytes_per_row",
        min((r["settled"] - r["rss_before"]) / rows for r in runs),
        "bytes/row",
        "lower",
        note=f"resident memory added by the open; the file holds {size / rows:.0f} bytes/row",
    )
    bench.record(
        "load.peak_bytes_per_row",
        min((r["peak"] - r["rss_before"]) / rows for r in runs),
        "bytes/row",
        "lower",
        note="peak resident memory during the open, minus before",
    )
