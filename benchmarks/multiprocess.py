"""Several processes writing one log in shared mode (issue 10): one command, one table.

    python benchmarks/multiprocess.py                  # SQLite, and PostgreSQL if installed
    python benchmarks/multiprocess.py --writes 80000 --wt-writes 2000 --samples 300
    python benchmarks/multiprocess.py --rounds 5       # more rounds on a noisy machine
    python benchmarks/multiprocess.py --no-pg          # SQLite only

Measured, on SQLite (a WAL file in a temporary directory) and PostgreSQL (the server of
APPENDMUCH_PG_CONNINFO, or a throwaway one started here):

- aggregate writes/s with 1, 2 and 4 writer processes in shared mode, batched and
  write-through (each process writes its own namespace; the clock runs from the
  moment all are ready to the moment the last one's ``flush()`` returned);
- one process in shared mode next to one in the default single-writer mode;
- each of those in ``--rounds`` rounds (each round runs every configuration once, in
  turn): rates are the rounds' medians, ratios the median of each round's ratio;
- cross-process visibility: a write-through writer assigns, and the time from the
  assignment's return to ``on_change`` in another process (no ``sync()``), p50/p99;
- conflicts and retries per 1,000 increments of one hot counter by 4 processes
  (``with`` block, ``@retry_on_conflict``).

Processes are real (multiprocessing, spawn); times are wall clock on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

Location = dict[str, Any]


def make_store(location: Location, on_change: Callable[..., Any] | None = None, **kw: Any) -> Any:
    from appendmuch import PostgreSQL, Sqlite3, Store

    if location["kind"] == "sqlite":
        driver: Any = Sqlite3(location["path"], **kw)
    else:
        driver = PostgreSQL(
            location["conninfo"], table_prefix=location["prefix"], min_size=1, max_size=4, **kw
        )
    return Store(driver, on_change=on_change)


# --------------------------------------------------------------------------- children


def writer(
    location: Location, kw: dict[str, Any], wid: int, n: int, barrier: Any, out: Any
) -> None:
    """Write ``n`` values to this process's own namespace; report (start, end)."""
    store = make_store(location, **kw)
    s = store.storage("bench", f"p{wid}")
    barrier.wait()
    start = time.monotonic()
    for i in range(n):
        s.x = i
    store.flush()
    end = time.monotonic()
    store.close()
    out.put((start, end))


def incrementer(location: Location, wid: int, n: int, barrier: Any, out: Any) -> None:
    """``n`` increments of the hot counter; report (attempts, increments, gave up)."""
    import appendmuch

    store = make_store(location, shared=True, write_through=True)
    hot = store.storage("hot")
    attempts = 0
    gave_up = 0

    @appendmuch.retry_on_conflict(attempts=1000)
    def bump() -> None:
        nonlocal attempts
        attempts += 1
        with hot:
            hot.counter["n"] += 1

    barrier.wait()
    for _ in range(n):
        try:
            bump()
        except appendmuch.ConflictError:
            gave_up += 1
    store.close()
    out.put((attempts, n - gave_up, gave_up))


def observer(location: Location, samples: int, ready: Any, out: Any) -> None:
    """Record when each sample write arrives through ``on_change`` (no sync())."""
    arrived: dict[int, float] = {}
    done = threading.Event()

    def on_change(namespace: tuple[str, ...], field: str, value: Any) -> None:
        if field == "sample":
            arrived[value.data] = time.monotonic()
            if len(arrived) == samples:
                done.set()

    store = make_store(location, on_change, shared=True)
    ready.set()
    done.wait(timeout=120)
    out.put(dict(arrived))
    store.close()


# --------------------------------------------------------------------------- measurements


def spawn() -> Any:
    return multiprocessing.get_context("spawn")


def aggregate(location: Location, procs: int, n: int, kw: dict[str, Any]) -> float:
    """Writes/s of ``procs`` processes writing ``n`` values each."""
    make_store(location, **kw).close()  # the table exists before the writers open it
    ctx = spawn()
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [
        ctx.Process(target=writer, args=(location, kw, w, n, barrier, out)) for w in range(procs)
    ]
    for p in workers:
        p.start()
    spans = [out.get(timeout=600) for _ in workers]
    for p in workers:
        p.join()
    start = min(s for s, _ in spans)
    end = max(e for _, e in spans)
    return procs * n / (end - start)


def visibility(location: Location, samples: int) -> tuple[float, float]:
    """p50 and p99 (ms) from a write-through assignment's return to on_change elsewhere."""
    ctx = spawn()
    ready = ctx.Event()
    out = ctx.Queue()
    watcher = ctx.Process(target=observer, args=(location, samples, ready, out))
    watcher.start()
    ready.wait(timeout=120)
    store = make_store(location, shared=True, write_through=True)
    s = store.storage("latency")
    committed: dict[int, float] = {}
    for i in range(samples):
        s.sample = i
        committed[i] = time.monotonic()
        time.sleep(0.005)  # spaced writes: each one's own delivery is measured
    arrived = out.get(timeout=180)
    watcher.join()
    store.close()
    lat = sorted((arrived[i] - committed[i]) * 1000 for i in committed if i in arrived)
    if len(lat) < samples:
        print(f"  visibility: only {len(lat)} of {samples} samples arrived", file=sys.stderr)
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def contention(location: Location, increments: int, procs: int = 4) -> tuple[float, float, int]:
    """Conflicts and retries per 1,000 successful increments of one hot counter."""
    store = make_store(location, shared=True, write_through=True)
    store.storage("hot").counter = {"n": 0}
    store.close()
    ctx = spawn()
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    each = increments // procs
    workers = [
        ctx.Process(target=incrementer, args=(location, w, each, barrier, out))
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    results = [out.get(timeout=600) for _ in workers]
    for p in workers:
        p.join()
    attempts = sum(r[0] for r in results)
    done = sum(r[1] for r in results)
    gave_up = sum(r[2] for r in results)
    conflicts = attempts - done  # every failed attempt raised ConflictError once
    retries = conflicts - gave_up  # ... and all but the abandoned ones were re-run
    check = make_store(location, shared=True)
    with check.storage("hot") as hot:
        assert hot.counter["n"] == done, f"lost updates: {hot.counter['n']} != {done}"
    check.close()
    return 1000 * conflicts / max(done, 1), 1000 * retries / max(done, 1), gave_up


# --------------------------------------------------------------------------- locations


class Backend:
    def __init__(self, kind: str, tmp: Path, conninfo: str | None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.conninfo = conninfo
        self.made: list[str] = []

    def fresh(self) -> Location:
        name = f"b{uuid.uuid4().hex[:10]}"
        self.made.append(name)
        if self.kind == "sqlite":
            return {"kind": "sqlite", "path": str(self.tmp / f"{name}.sqlite3")}
        return {"kind": "postgresql", "conninfo": self.conninfo, "prefix": name}

    def cleanup(self) -> None:
        if self.kind != "postgresql" or self.conninfo is None:
            return
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for name in self.made:
                for (table,) in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (name + "%",)
                ).fetchall():
                    conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def _spread(rates: list[float]) -> str:
    return " ".join(f"{rate / 1000:.1f}k" for rate in rates)


def run(backend: Backend, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    name = backend.kind

    def add(what: str, value: str, note: str = "") -> None:
        rows.append((f"{name}: {what}", value, note))
        print(f"  {name}: {what}: {value} {note}", flush=True)

    for mode, n in (("batched", args.writes), ("write-through", args.wt_writes)):
        kw = {"write_through": mode == "write-through"}
        # Rounds in turn, each measuring every configuration once: on a shared, noisy
        # machine a ratio is read within a round, then the rounds' median is taken.
        rates: dict[int, list[float]] = {0: [], 1: [], 2: [], 4: []}  # 0: single-writer
        for _ in range(args.rounds):
            rates[0].append(aggregate(backend.fresh(), 1, n, kw))
            for procs in (1, 2, 4):
                rates[procs].append(aggregate(backend.fresh(), procs, n, {"shared": True, **kw}))
        rounds = f"median of {args.rounds} rounds" if args.rounds > 1 else "1 round"
        add(
            f"single-writer mode, 1 process, {mode}",
            f"{statistics.median(rates[0]):,.0f} writes/s",
            f"({rounds}: {_spread(rates[0])})",
        )
        for procs in (1, 2, 4):
            base = rates[0] if procs == 1 else rates[1]
            ratio = statistics.median(r / b for r, b in zip(rates[procs], base, strict=True))
            note = "of single-writer" if procs == 1 else "x of 1 shared process"
            shown = f"{ratio:.0%} {note}" if procs == 1 else f"{ratio:.2f}{note}"
            plural = "es" if procs > 1 else ""
            add(
                f"shared, {procs} process{plural}, {mode}",
                f"{statistics.median(rates[procs]):,.0f} writes/s",
                f"({shown}; {_spread(rates[procs])})",
            )
    p50, p99 = visibility(backend.fresh(), args.samples)
    add("visibility latency p50 / p99", f"{p50:.1f} / {p99:.1f} ms", f"({args.samples} samples)")
    conflicts, retries, gave_up = contention(backend.fresh(), args.increments)
    add(
        "hot counter, 4 processes",
        f"{conflicts:.0f} conflicts, {retries:.0f} retries per 1,000 increments",
        f"({gave_up} gave up)",
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=40000, help="batched writes per process")
    parser.add_argument(
        "--wt-writes", type=int, default=1000, help="write-through writes per process"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the throughput runs (medians)"
    )
    parser.add_argument("--samples", type=int, default=200, help="visibility latency samples")
    parser.add_argument(
        "--increments", type=int, default=1000, help="hot-counter increments (all processes)"
    )
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )

    conninfo = os.environ.get("APPENDMUCH_PG_CONNINFO")
    cluster = None
    if not args.no_pg and not conninfo:
        from pgserver import TempCluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            print("PostgreSQL is not installed: SQLite only", file=sys.stderr)
        else:
            cluster = TempCluster(bindir)
            conninfo = cluster.start()
    table: list[tuple[str, str, str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="appendmuch-mp-") as tmp:
            kinds = [] if args.no_sqlite else ["sqlite"]
            if conninfo and not args.no_pg:
                kinds.append("postgresql")
            for kind in kinds:
                print(f"{kind}:", flush=True)
                backend = Backend(kind, Path(tmp), conninfo)
                try:
                    table.extend(run(backend, args))
                finally:
                    backend.cleanup()
    finally:
        if cluster is not None:
            cluster.stop()
    width = max(len(what) for what, _, _ in table)
    vwidth = max(len(value) for _, value, _ in table)
    print(f"\n{'measurement':<{width}}  {'result':<{vwidth}}  note")
    for what, value, note in table:
        print(f"{what:<{width}}  {value:<{vwidth}}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
