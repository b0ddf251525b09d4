"""Plain assignments per second on Memory and SQLite, in CPU time.

    python benchmarks/write_rate.py                      # this checkout
    python benchmarks/write_rate.py --src ../other/src   # another checkout, to compare

Each run makes 500,000 assignments of an int to one field, timed in chunks of 50,000
with ``time.process_time`` (CPU time of the process, so other load on a shared machine
disturbs it less than wall time).  Prints the fastest chunk and the whole run (best of
``--runs``), as writes/s and ns per write.  Used to measure what the Store's lock costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOTAL, CHUNK = 500_000, 50_000


def run(store: Any) -> tuple[float, float]:
    """(fastest chunk, whole run) in writes per CPU second."""
    s = store.storage("bench", "p1")
    chunks = []
    start = time.process_time()
    for _ in range(TOTAL // CHUNK):
        t = time.process_time()
        for i in range(CHUNK):
            s.x = i
        chunks.append(time.process_time() - t)
    store.flush()
    whole = time.process_time() - start
    store.close()
    return CHUNK / min(chunks), TOTAL / whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=str(ROOT / "src"), help="appendmuch sources to time")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    from appendmuch import Memory, Sqlite3, Store

    directory = tempfile.mkdtemp()
    makers = {
        "memory": Memory,
        "sqlite": lambda: Sqlite3(os.path.join(directory, f"w{time.time_ns()}.sqlite3")),
    }
    for name, make in makers.items():
        chunk, whole = map(max, zip(*(run(Store(make())) for _ in range(args.runs)), strict=True))
        print(
            f"{name}: {chunk:,.0f} writes/s ({1e9 / chunk:.0f} ns) fastest chunk, "
            f"{whole:,.0f} writes/s ({1e9 / whole:.0f} ns) whole run"
        )


if __name__ == "__main__":
    main()
