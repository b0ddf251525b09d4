"""Memory of an opened log that holds growing lists: an online experiment.

    python benchmarks/memory_workload.py                       # 2,000 x 50, ~606,000 rows
    python benchmarks/memory_workload.py --participants 200 --rounds 20
    python benchmarks/memory_workload.py --path log.sqlite3 --keep   # reuse a written file

Each participant (a namespace) gets ``treatment``, ``stage`` and an empty ``decisions``
list, then per round: ``round``, ``stage``, ``choice``, ``payoff``, ``stage`` again, and
a ``with`` block that appends a dict to ``decisions`` (6 rows per round).  The log is
written by one process and opened by a fresh one (``procmem.py``), which reports the
open time, peak resident memory (``VmHWM``, see ``procmem.py``) and settled resident
memory after the open (``/proc/self/statm``); both are also shown as multiples of the
file size.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from procmem import measure_open  # noqa: E402

MIB = 1024 * 1024


def write(path: Path, participants: int, rounds: int) -> int:
    """Write the experiment's log to ``path``; return the number of rows."""
    from appendmuch import Sqlite3, Store

    rng = random.Random(2026)
    store = Store(Sqlite3(path))
    players = [store.storage("experiment", f"p{i:05d}") for i in range(participants)]
    for i, player in enumerate(players):
        player.treatment = ("low", "high")[i % 2]
        player.stage = "instructions"
        player.decisions = []
    for r in range(1, rounds + 1):
        for player in players:
            choice = rng.choice("ABC")
            payoff = round(rng.uniform(0, 20), 2)
            player.round = r
            player.stage = "decide"
            player.choice = choice
            player.payoff = payoff
            player.stage = "feedback"
            with player:
                player.decisions.append({"round": r, "choice": choice, "payoff": payoff})
    rows = store.driver.last_seq
    store.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--participants", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--path", help="SQLite file to use (written first unless it exists)")
    parser.add_argument("--keep", action="store_true", help="keep the file written")
    parser.add_argument("--opens", type=int, default=1, help="fresh opens to measure (best kept)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--_write", dest="write_only", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_only:
        print(write(Path(args.write_only), args.participants, args.rounds))
        return 0

    scratch = None
    if args.path:
        path = Path(args.path)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="appendmuch-memory-")
        path = Path(scratch.name) / "experiment.sqlite3"
    try:
        if not path.exists():
            start = time.perf_counter()
            # written by a child so that the measuring processes start small
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--_write",
                    str(path),
                    "--participants",
                    str(args.participants),
                    "--rounds",
                    str(args.rounds),
                ],
                check=True,
            )
            print(f"wrote {path} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        size = path.stat().st_size
        runs = [measure_open(path) for _ in range(max(1, args.opens))]
        best = min(runs, key=lambda r: r["settled"])
        figures = {
            "rows": best["rows"],
            "file_bytes": size,
            "open_s": min(r["open_s"] for r in runs),
            "open_cpu_s": min(r["open_cpu_s"] for r in runs),
            "peak_rss": best["peak"],
            "settled_rss": best["settled"],
            "rss_before_open": best["rss_before"],
            "settled_per_file": best["settled"] / size,
            "peak_per_file": best["peak"] / size,
        }
        per_row = size / figures["rows"]
        if args.json:
            print(json.dumps(figures))
        else:
            print(
                f"rows              {figures['rows']:,}\n"
                f"file size         {size / MIB:,.1f} MiB ({per_row:.0f} bytes/row)\n"
                f"open time         {figures['open_s']:.2f} s "
                f"({figures['open_cpu_s']:.2f} s of CPU)\n"
                f"peak RSS          {best['peak'] / MIB:,.1f} MiB "
                f"({figures['peak_per_file']:.2f}x the file)\n"
                f"settled RSS       {best['settled'] / MIB:,.1f} MiB "
                f"({figures['settled_per_file']:.2f}x the file; "
                f"{best['rss_before'] / MIB:.1f} MiB before the open, so the open added "
                f"{(best['settled'] - best['rss_before']) / size:.2f}x the file)"
            )
    finally:
        if scratch is not None and not args.keep:
            scratch.cleanup()
        elif scratch is not None:
            print(f"kept {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
