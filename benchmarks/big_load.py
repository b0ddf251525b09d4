"""Open a large SQLite log and report the time and peak memory it takes.

    python benchmarks/big_load.py --rows 10000000             # writes the file first
    python benchmarks/big_load.py --path existing.sqlite3     # just opens it

The file is written through appendmuch (1,000 namespaces, one small-int field each,
like the ``load`` workload of run.py).  Opening runs in a fresh subprocess, which
reports rows per second, the CPU time of the open and the peak resident memory added
per row (VmHWM after the open minus VmRSS before it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

_CHILD = r"""
import gc, json, sys, time
sys.path.insert(0, sys.argv[2])
from appendmuch import Sqlite3, Store

def status():
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

driver = Sqlite3(sys.argv[1])
gc.collect()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
rss0, _ = status()
t0, c0 = time.perf_counter(), time.process_time()
store = Store(driver)
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
rss1, peak = status()
rows = driver.last_seq
print(json.dumps({"rows": rows, "open_s": seconds, "open_cpu_s": cpu,
                  "rows_per_s": rows / seconds,
                  "peak_bytes_per_row": (peak - rss0) * 1024 / rows,
                  "kept_bytes_per_row": (rss1 - rss0) * 1024 / rows,
                  "peak_mib": (peak - rss0) / 1024}))
"""


def write_log(path: str, rows: int) -> None:
    from appendmuch import Sqlite3, Store

    store = Store(Sqlite3(path))
    players = [store.storage("bench", f"p{i}") for i in range(1000)]
    start = time.perf_counter()
    for i in range(rows):
        players[i % 1000].score = i % 100
    store.close()
    print(f"wrote {rows:,} rows in {time.perf_counter() - start:.1f} s", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to write first")
    parser.add_argument("--path", help="open this existing file instead of writing one")
    args = parser.parse_args()
    path = args.path
    cleanup = None
    if path is None:
        cleanup = tempfile.mkdtemp(prefix="appendmuch-bigload-")
        path = os.path.join(cleanup, "log.sqlite3")
        write_log(path, args.rows)
    try:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, path, str(ROOT / "src")],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout)
        print(json.dumps(result, indent=1))
    finally:
        if cleanup:
            for name in os.listdir(cleanup):
                os.remove(os.path.join(cleanup, name))
            os.rmdir(cleanup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
