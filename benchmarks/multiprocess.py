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
- hot-counter increments/s with 1, 2 and 4 processes for each ``with``-block pattern of
  tests/patterns.py (in place, scalar, new object, create-or-bump), each retried under
  ``@retry_on_conflict``, with conflicts and retries per 1,000 increments; the counter
  is checked afterwards (no increment lost);
- an occasional ``write_through`` writer (one write every 10 ms) beside 3 processes
  writing in tight loops: how long each of its writes takes (its wait for the write
  lease, and the commit), p50/p99, and the visibility latency seen meanwhile from an
  idle process;
- an application-shaped workload, requests/s with 1, 2 and 4 processes: each request
  is about 0.2 ms of application CPU, 20 reads, 1 assignment, and one in ten a
  ``with``-block increment of a counter all processes share; each process serves its
  own participants.  The default single-writer mode (1 process) is the baseline.

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


def incrementer(location: Location, pattern: str, seconds: float, barrier: Any, out: Any) -> None:
    """Increment the hot counter with ``pattern`` for ``seconds``; report
    (increments, attempts)."""
    import appendmuch
    from patterns import PATTERNS

    store = make_store(location, shared=True)
    hot = store.storage("hot")
    step = PATTERNS[pattern]
    attempts = 0

    @appendmuch.retry_on_conflict(attempts=100_000)
    def once() -> None:
        nonlocal attempts
        attempts += 1
        step(hot)

    barrier.wait()
    done = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        once()
        done += 1
    store.close()
    out.put((done, attempts))


def busy(location: Location, wid: int, stop: Any, ready: Any) -> None:
    """Write as fast as possible (batched) until ``stop`` is set."""
    store = make_store(location, shared=True)
    s = store.storage("busy", f"p{wid}")
    ready.release()
    i = 0
    while not stop.is_set():
        for _ in range(200):
            s.x = i
            i += 1
    store.close()


def app_worker(
    location: Location, kw: dict[str, Any], wid: int, seconds: float, barrier: Any, out: Any
) -> None:
    """Serve "requests" for ``seconds``; report how many (see request())."""
    import appendmuch

    store = make_store(location, **kw)
    participants = [store.storage("app", f"w{wid}", f"p{i}") for i in range(50)]
    for number, p in enumerate(participants):
        for f in range(20):
            setattr(p, f"f{f}", number * f)
    shared_counter = store.storage("app", "totals")
    store.flush()

    @appendmuch.retry_on_conflict(attempts=100_000)
    def count() -> None:
        with shared_counter:
            shared_counter.n = shared_counter.get("n", 0) + 1

    barrier.wait()
    served = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        p = participants[served % 50]
        spin(APP_CPU)
        total = 0
        for f in range(20):
            total += getattr(p, f"f{f}")
        p.f0 = total % 1000
        if served % 10 == 0:
            count()
        served += 1
    store.flush()
    store.close()
    out.put(served)


#: seconds of application CPU per request
APP_CPU = 0.0002


def spin(seconds: float) -> None:
    """Busy CPU for ``seconds`` (thread time), standing for the application's work."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


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
    spans: list[tuple[float, float]] = [out.get(timeout=600) for _ in workers]
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


def hot_counter(
    location: Location, pattern: str, procs: int, seconds: float
) -> tuple[float, float, float]:
    """Increments/s of ``procs`` processes bumping one counter with ``pattern``, and
    conflicts and retries per 1,000 increments (every conflict is retried)."""
    from patterns import count, prepare

    store = make_store(location, shared=True)
    prepare(store.storage("hot"))
    store.close()
    ctx = spawn()
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [
        ctx.Process(target=incrementer, args=(location, pattern, seconds, barrier, out))
        for _ in range(procs)
    ]
    for p in workers:
        p.start()
    results = [out.get(timeout=600) for _ in workers]
    for p in workers:
        p.join()
    done = sum(r[0] for r in results)
    conflicts = sum(r[1] for r in results) - done
    check = make_store(location, shared=True)
    counted = count(check.storage("hot"), pattern)
    check.close()
    assert counted == done, f"{pattern}: lost increments: {counted} != {done}"
    per_1000 = 1000 * conflicts / max(done, 1)
    return done / seconds, per_1000, per_1000  # (each conflict was retried once)


def occasional(location: Location, writes: int) -> tuple[float, float, float, float]:
    """An occasional write_through writer beside 3 busy ones: its writes' p50/p99
    (ms), and visibility p50/p99 (ms) seen by an idle process meanwhile."""
    make_store(location, shared=True).close()
    ctx = spawn()
    stop = ctx.Event()
    ready = ctx.Semaphore(0)
    busies = [ctx.Process(target=busy, args=(location, w, stop, ready)) for w in range(3)]
    for p in busies:
        p.start()
    for _ in busies:
        ready.acquire(timeout=120)
    seen = ctx.Event()
    out = ctx.Queue()
    watcher = ctx.Process(target=observer, args=(location, writes, seen, out))
    watcher.start()
    seen.wait(timeout=120)
    store = make_store(location, shared=True, write_through=True)
    s = store.storage("latency")
    took: list[float] = []
    committed: dict[int, float] = {}
    try:
        for i in range(writes):
            start = time.monotonic()
            s.sample = i
            committed[i] = time.monotonic()
            took.append((committed[i] - start) * 1000)
            time.sleep(0.01)
        arrived = out.get(timeout=180)
        watcher.join()
    finally:
        stop.set()  # (the busy writers end even when a measurement failed)
        for p in busies:
            p.join()
        store.close()
    lat = sorted((arrived[i] - committed[i]) * 1000 for i in committed if i in arrived)
    took.sort()
    return (*_p50_p99(took), *_p50_p99(lat))


def _p50_p99(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def application(location: Location, procs: int, seconds: float, kw: dict[str, Any]) -> float:
    """Requests/s of ``procs`` processes serving the application-shaped workload."""
    make_store(location, **kw).close()
    ctx = spawn()
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [
        ctx.Process(target=app_worker, args=(location, kw, w, seconds, barrier, out))
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    served: list[int] = [out.get(timeout=600) for _ in workers]
    for p in workers:
        p.join()
    check = make_store(location, **kw)
    with check.storage("app", "totals") as totals:
        counted = totals.get("n", 0)
    check.close()
    expected = sum(-(-n // 10) for n in served)  # (requests 0, 10, 20, ... counted)
    assert counted == expected, f"lost increments: {counted} != {expected}"
    return sum(served) / seconds


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

    def wanted(group: str) -> bool:
        return args.only in (None, group)

    for mode, n in (("batched", args.writes), ("write-through", args.wt_writes)):
        if not wanted("throughput"):
            break
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
    if wanted("latency"):
        latencies(backend, args, add)
    if wanted("counters"):
        counters(backend, args, add)
    if wanted("application"):
        applications(backend, args, add)
    return rows


Add = Callable[..., None]


def latencies(backend: Backend, args: argparse.Namespace, add: Add) -> None:
    p50, p99 = visibility(backend.fresh(), args.samples)
    add("visibility latency p50 / p99", f"{p50:.1f} / {p99:.1f} ms", f"({args.samples} samples)")
    w50, w99, v50, v99 = occasional(backend.fresh(), args.samples)
    add(
        "occasional write_through writer beside 3 busy: write p50 / p99",
        f"{w50:.1f} / {w99:.1f} ms",
        f"(visibility meanwhile p50 / p99 {v50:.1f} / {v99:.1f} ms)",
    )


def counters(backend: Backend, args: argparse.Namespace, add: Add) -> None:
    from patterns import PATTERNS

    for pattern in PATTERNS:
        rates = {}
        for procs in (1, 2, 4):
            rate, conflicts, retries = hot_counter(backend.fresh(), pattern, procs, args.seconds)
            rates[procs] = rate
            plural = "es" if procs > 1 else ""
            add(
                f"hot counter {pattern}, {procs} process{plural}",
                f"{rate:,.0f} increments/s",
                f"({conflicts:.0f} conflicts, {retries:.0f} retries per 1,000)",
            )


def applications(backend: Backend, args: argparse.Namespace, add: Add) -> None:
    app: dict[int, list[float]] = {0: [], 1: [], 2: [], 4: []}
    for _ in range(args.rounds):
        app[0].append(application(backend.fresh(), 1, args.app_seconds, {}))
        for procs in (1, 2, 4):
            app[procs].append(
                application(backend.fresh(), procs, args.app_seconds, {"shared": True})
            )
    add(
        "application, single-writer mode, 1 process",
        f"{statistics.median(app[0]):,.0f} requests/s",
        f"({_spread(app[0])})",
    )
    for procs in (1, 2, 4):
        ratio = statistics.median(r / b for r, b in zip(app[procs], app[1], strict=True))
        plural = "es" if procs > 1 else ""
        add(
            f"application, shared, {procs} process{plural}",
            f"{statistics.median(app[procs]):,.0f} requests/s",
            f"({ratio:.2f}x of 1 shared process; {_spread(app[procs])})",
        )


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
        "--seconds", type=float, default=2.0, help="seconds of each hot-counter run"
    )
    parser.add_argument(
        "--app-seconds", type=float, default=3.0, help="seconds of each application run"
    )
    parser.add_argument(
        "--only",
        choices=["throughput", "latency", "counters", "application"],
        default=None,
        help="run one group of measurements",
    )
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])]
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
