"""Open a SQLite log in a fresh process and report its time and memory.

    python benchmarks/procmem.py PATH      # prints one JSON object

Run as a script it opens ``PATH`` with ``Store(Sqlite3(PATH, read_only=True))`` and
prints: ``open_s`` (and ``open_cpu_s``, CPU time); ``rss_before`` (resident bytes
after importing appendmuch, before the open); ``peak`` (the peak resident bytes of
the process, ``VmHWM``); ``settled`` (resident bytes after the open and a garbage
collection, from ``/proc/self/statm``); and ``rows``.  :func:`measure_open` runs it
from another process.  The peak is read from ``/proc/self/status`` rather than
``ru_maxrss``: on Linux a child's ``ru_maxrss`` starts at the resident size of the
process it was forked from, which would make the figure depend on who runs it.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident() -> int:
    """Resident bytes of this process now (/proc/self/statm)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def peak_resident() -> int:
    """Peak resident bytes of this process's address space (VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: KiB


def measure_open(path: str | Path, timeout: float = 3600) -> dict[str, Any]:
    """Open ``path`` in a fresh subprocess and return what it reported."""
    out = subprocess.run(
        [sys.executable, str(HERE / "procmem.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"opening {path} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _child(path: str) -> None:
    sys.path.insert(0, str(SRC))
    from appendmuch import Sqlite3, Store

    driver = Sqlite3(path, read_only=True)
    gc.collect()
    before = resident()
    start, cpu = time.perf_counter(), time.process_time()
    store = Store(driver)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    gc.collect()
    settled = resident()
    print(
        json.dumps(
            {
                "open_s": seconds,
                "open_cpu_s": cpu_seconds,
                "rss_before": before,
                "peak": peak_resident(),
                "settled": settled,
                "rows": driver.last_seq,
            }
        )
    )
    store.close()


if __name__ == "__main__":
    _child(sys.argv[1])
