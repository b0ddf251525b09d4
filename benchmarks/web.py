"""The web view at scale: page times on a large log, its memory, and what it costs a writer.

    python benchmarks/web.py                        # a 1,000,000-row log in a temp dir
    python benchmarks/web.py --rows 200000          # smaller
    python benchmarks/web.py --db big.sqlite3       # reuse a log this script wrote
    python benchmarks/web.py --skip-writer --json-out web.json
    python benchmarks/web.py --writer-only          # step 4 alone

Runs from this repository alone (``src`` is put on the path; the ``web`` extra must be
installed).  What it does:

1. writes a log of ``--rows`` rows through appendmuch (unless ``--db`` exists):
   10 sessions of players (``session/sN/player/pM``) writing ``round``, ``score``,
   ``choice`` and a ``history`` list appended to in a ``with`` block, 25 rounds each,
   plus ``lab/series`` whose ``x`` has 10,000 versions;
2. starts ``python -m appendmuch serve`` on it and reports the open time and the
   server's resident memory, next to a process that only opens the same Store
   read-only (the Store's own memory);
3. times each page over HTTP (the first request, then the median of ``--repeat``),
   and the server's memory again after ``--soak`` more requests (no copy of the log
   per request: it must not grow);
4. measures a single writer's throughput (``--writer-rows`` batched writes into a new
   SQLite file) with and without a server following that file, alternating the two
   ``--rounds`` times, and reports the medians, their ratio, and the writer's own
   spread (each run alone against the median of the others): a ratio inside that
   spread is noise.

Figures are wall-clock times on whatever machine runs it: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
}

ROUNDS_PER_PLAYER = 25
SERIES = 10_000

_STORE_ONLY = r"""
import gc, json, sys, time
from appendmuch import Sqlite3, Store
from appendmuch.rendering import LenientCodec
t0 = time.perf_counter()
store = Store(Sqlite3(sys.argv[1], read_only=True, shared=True), codec=LenientCodec())
seconds = time.perf_counter() - t0
gc.collect()
with open("/proc/self/status") as fh:
    rss = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
print(json.dumps({"open_s": seconds, "rss": rss, "rows": store.driver.last_seq}))
store.close()
"""

_WRITER = r"""
import json, sys, time
from appendmuch import Sqlite3, Store
rows = int(sys.argv[2])
store = Store(Sqlite3(sys.argv[1]))
handles = [store.storage("w", f"n{i}") for i in range(1000)]
t0, c0 = time.perf_counter(), time.process_time()
for i in range(rows):
    handles[i % 1000].value = i
store.flush()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
store.close()
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "writes_per_s": rows / wall}))
"""


def write_log(path: Path, rows: int) -> None:
    """The benchmark's log (see the module docstring)."""
    from appendmuch import Sqlite3, Store

    per_player = ROUNDS_PER_PLAYER * 4
    players = max((rows - SERIES) // (10 * per_player), 1)
    started = time.perf_counter()
    with Store(Sqlite3(path)) as store:
        for session in range(10):
            for number in range(players):
                player = store.storage("session", f"s{session}", "player", f"p{number}")
                for round_ in range(ROUNDS_PER_PLAYER):
                    player.round = round_
                    player.score = (number * 7 + round_ * 13) % 100
                    player.choice = "ABCD"[(number + round_) % 4]
                    with player:
                        if round_ == 0:
                            player.history = [round_]
                        else:
                            player.history.append(round_)
        series = store.storage("lab", "series")
        for i in range(SERIES):
            series.x = (i * 37) % 1000 / 10
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s", flush=True)


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


class Server:
    """``python -m appendmuch serve PATH --port 0`` and the address it printed."""

    def __init__(self, path: Path) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appendmuch", "serve", str(path), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r" at (http://\S+)", line)
        if match is None:
            raise RuntimeError(f"the server did not start: {line}{self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.open_s = time.perf_counter() - self.started
        self.base = match.group(1).rstrip("/")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def time_pages(base: str, pages: dict[str, str], repeat: int) -> dict[str, dict[str, float]]:
    import httpx2

    out: dict[str, dict[str, float]] = {}
    with httpx2.Client(base_url=base, timeout=120) as client:
        for name, path in pages.items():
            times = []
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                answer = client.get(path)
                times.append(time.perf_counter() - t0)
                if answer.status_code != 200:
                    raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
            out[name] = {
                "first_ms": times[0] * 1000,
                "median_ms": statistics.median(times[1:]) * 1000,
                "max_ms": max(times[1:]) * 1000,
                "bytes": len(answer.content),
            }
            got = out[name]
            print(
                f"  {name:<34} first {got['first_ms']:7.1f} ms   median {got['median_ms']:7.1f}"
                f" ms   max {got['max_ms']:7.1f} ms   {len(answer.content):>9,} bytes",
                flush=True,
            )
    return out


def pages_for(rows: int) -> dict[str, str]:
    players = max((rows - SERIES) // (10 * ROUNDS_PER_PLAYER * 4), 1)
    middle = players // 2
    ns = f"session/s5/player/p{middle}"
    return {
        "overview": "/",
        "tree (top)": "/tree",
        f"tree ({players:,} children)": "/tree?prefix=session/s5/player&limit=5000",
        "search by field": "/tree?field=hist&limit=200",
        "namespace page (latest)": f"/ns/{ns}",
        "namespace page (step 50)": f"/ns/{ns}?step=50",
        "namespace state fragment": f"/ns/{ns}?step=51&partial=state",
        "log page (end)": "/log",
        "log page (jump to the middle)": f"/log?seq={rows // 2}",
        "log page (namespace prefix)": "/log?ns=session/s5",
        "log page (field, from the middle)": f"/log?field=score&after={rows // 2}",
        "log page (code location)": "/log?context=write_log&after=1000",
        "field page (10,000 versions)": "/field/lab/series/x",
        "field API (5,000 versions)": "/api/field/lab/series/x?limit=5000",
        "field page (list diffs)": f"/field/{ns}/history",
        "api overview": "/api/overview",
    }


def store_only(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _STORE_ONLY, str(path)],
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def writer_run(directory: Path, rows: int, with_server: bool, number: int) -> dict[str, Any]:
    from appendmuch import Sqlite3, Store

    path = directory / f"writer-{number}.sqlite3"
    with Store(Sqlite3(path)) as store:
        store.storage("w", "start").value = 0
    server = Server(path) if with_server else None
    try:
        out = subprocess.run(
            [sys.executable, "-c", _WRITER, str(path), str(rows)],
            capture_output=True,
            text=True,
            env=ENV,
            check=True,
        )
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        if server is not None:
            import httpx2

            done = time.perf_counter()
            while httpx2.get(server.base + "/api/overview").json()["rows"] < rows + 1:
                time.sleep(0.01)
            result["server_caught_up_s"] = time.perf_counter() - done
    finally:
        if server is not None:
            server.stop()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return result


def measure_pages(args: argparse.Namespace, work: Path, report: dict[str, Any]) -> None:
    """Steps 1-3: write (or reuse) the big log, open it, time the pages, watch memory."""
    path = args.db or work / "web-bench.sqlite3"
    if not path.exists():
        write_log(path, args.rows)
    report.update(db=str(path), size_bytes=path.stat().st_size)

    alone = store_only(path)
    report["rows"] = rows = alone["rows"]
    print(f"{rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB file", flush=True)
    print(
        f"a read-only Store alone: open {alone['open_s']:.1f} s, "
        f"{alone['rss'] / 2**20:.0f} MiB resident",
        flush=True,
    )
    report["store_only"] = alone
    server = Server(path)
    try:
        after_open = rss_of(server.proc.pid)
        print(
            f"server: open {server.open_s:.1f} s (Store + index), "
            f"{after_open / 2**20:.0f} MiB resident",
            flush=True,
        )
        report["server_open_s"] = server.open_s
        report["server_rss_after_open"] = after_open
        print("pages (HTTP, wall clock):", flush=True)
        pages = pages_for(rows)
        report["pages"] = time_pages(server.base, pages, args.repeat)
        after_pages = rss_of(server.proc.pid)
        import httpx2

        with httpx2.Client(base_url=server.base, timeout=120) as client:
            paths = list(pages.values())
            for i in range(args.soak):
                client.get(paths[i % len(paths)])
        after_soak = rss_of(server.proc.pid)
        report["server_rss_after_pages"] = after_pages
        report["server_rss_after_soak"] = after_soak
        print(
            f"server memory: {after_pages / 2**20:.0f} MiB after the pages, "
            f"{after_soak / 2**20:.0f} MiB after {args.soak} more requests",
            flush=True,
        )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="the log to serve (written first if missing)")
    parser.add_argument("--repeat", type=int, default=7, help="timed requests per page")
    parser.add_argument("--soak", type=int, default=200, help="requests before the memory check")
    parser.add_argument("--writer-rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9, help="writer runs with and without")
    parser.add_argument("--skip-writer", action="store_true")
    parser.add_argument("--writer-only", action="store_true", help="only step 4")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="appendmuch-web-bench-"))
    report: dict[str, Any] = {}
    if not args.writer_only:
        measure_pages(args, work, report)
    if not args.skip_writer:
        print(
            f"a single writer, {args.writer_rows:,} batched writes, without / with a server "
            "following it (alternating):",
            flush=True,
        )
        runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for round_ in range(args.rounds):
            for kind in ("without", "with"):
                result = writer_run(
                    work, args.writer_rows, kind == "with", 2 * round_ + (kind == "with")
                )
                runs[kind].append(result)
                extra = (
                    f", server caught up {result['server_caught_up_s'] * 1000:.0f} ms after"
                    if "server_caught_up_s" in result
                    else ""
                )
                print(f"  {kind:<7} {result['writes_per_s']:>10,.0f} writes/s{extra}", flush=True)
        medians = {kind: statistics.median(r["writes_per_s"] for r in runs[kind]) for kind in runs}
        ratios = [
            w["writes_per_s"] / wo["writes_per_s"]
            for w, wo in zip(runs["with"], runs["without"], strict=True)
        ]
        # The writer's own spread: each run without the server against the median of
        # the others without it.  A ratio inside this band is noise.
        alone = [r["writes_per_s"] for r in runs["without"]]
        band = [
            rate / statistics.median(alone[:i] + alone[i + 1 :])
            for i, rate in enumerate(alone)
            if len(alone) > 1
        ]
        report["writer"] = {"runs": runs, "medians": medians, "ratios": ratios, "noise": band}
        print(
            f"  median: {medians['without']:,.0f} without, {medians['with']:,.0f} with "
            f"({statistics.median(ratios):.2f}x; rounds {', '.join(f'{r:.2f}' for r in ratios)})",
            flush=True,
        )
        if band:
            print(
                f"  noise: the runs without the server alone ranged {min(band):.2f}x to "
                f"{max(band):.2f}x of the median of the others",
                flush=True,
            )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
