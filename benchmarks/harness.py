"""The benchmark harness: timing helpers, the results table, scratch stores.

Each workload module (see ``WORKLOADS`` in ``run.py``) has a ``run(bench)`` function
that times something through appendmuch's public API and records it with
:meth:`Bench.record`, naming the floor it should be compared with.  Floors are plain
Python or raw database code that does the same physical work without appendmuch; they
are measured in the same run (on first use) so that ratios, not absolute times, are
what a reader compares on a shared, noisy machine.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

perf = time.perf_counter

#: namespaces the write and read workloads spread their fields over
NAMESPACES = 1000
#: the context string the raw baselines store, like a real call site label
CONTEXT = "__main__.bench:1"


@dataclass
class Result:
    """One measured figure."""

    name: str
    value: float
    unit: str
    #: "higher" or "lower" is better
    better: str
    #: name of the floor this figure is compared with, if any
    floor: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Options:
    """Command-line settings every workload may read."""

    scale: float = 1.0
    repeat: int = 3
    budget: float = 1.0
    pg_conninfo: str | None = None
    quiet: bool = False
    #: "cpu": time this process's CPU use (steady on a shared machine); "wall": elapsed
    clock: str = "cpu"


class Bench:
    """What a workload gets: options, scratch space, floors, and a place for results."""

    def __init__(self, options: Options) -> None:
        self.options = options
        #: operations per write/read measurement
        self.n = max(1000, int(20_000 * options.scale))
        self.results: dict[str, Result] = {}
        self.errors: dict[str, str] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="appendmuch-bench-"))
        self._floors: dict[str, Callable[[Bench], None]] = {}
        self._pg_tables: list[str] = []
        self.started = perf()
        #: the clock of in-process measurements (PostgreSQL ones always use wall time,
        #: since the server does part of the work)
        self.clock: Callable[[], float] = time.process_time if options.clock == "cpu" else perf

    # ------------------------------------------------------------------ recording

    def record(
        self,
        name: str,
        value: float,
        unit: str,
        better: str = "higher",
        *,
        floor: str | None = None,
        note: str = "",
        **extra: Any,
    ) -> None:
        """Keep a figure; with ``floor``, make sure that floor is measured too."""
        self.results[name] = Result(name, value, unit, better, floor, note, extra)
        if floor is not None and floor not in self.results:
            self.measure_floor(floor)
        if not self.options.quiet:
            print(f"  {name:<34} {fmt(value):>12} {unit}", file=sys.stderr, flush=True)

    def provide_floor(self, name: str, measure: Callable[[Bench], None]) -> None:
        """Register how to measure floor ``name`` (it records itself when run)."""
        self._floors[name] = measure

    def measure_floor(self, name: str) -> None:
        measure = self._floors.get(name)
        if measure is None:
            raise KeyError(f"no floor named {name!r} is registered")
        measure(self)

    # ------------------------------------------------------------------ timing

    def rate(self, work: Callable[[], object], n: int) -> float:
        """Operations per second of ``work`` (doing ``n`` operations): the best of
        ``repeat`` runs, each after a garbage collection."""
        best, clock = 0.0, self.clock
        for _ in range(self.options.repeat):
            gc.collect()
            start = clock()
            work()
            best = max(best, n / max(clock() - start, 1e-9))
        return best

    def per_call(self, call: Callable[[], object], minimum: int = 5) -> float:
        """Seconds per call of ``call``: the fastest of ten rounds sharing about
        ``budget`` seconds (the fastest round is the one least disturbed by other
        processes)."""
        gc.collect()
        clock, calls = self.clock, 0
        start = clock()
        while calls < minimum or clock() - start < self.options.budget / 10:
            call()
            calls += 1
        best = (clock() - start) / calls
        for _ in range(9):
            start = clock()
            for _ in range(calls):
                call()
            best = min(best, (clock() - start) / calls)
        return best

    # ------------------------------------------------------------------ scratch stores

    def sqlite_path(self, tag: str) -> Path:
        path = self.tmp / f"{tag}.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return path

    def pg_table(self, tag: str) -> str:
        """A table prefix of this run for PostgreSQL (dropped at the end)."""
        prefix = f"bench{os.getpid()}_{tag}".lower()
        self._pg_tables.append(prefix)
        return prefix

    def cleanup(self) -> None:
        if self._pg_tables and self.options.pg_conninfo:
            import psycopg

            with psycopg.connect(self.options.pg_conninfo, autocommit=True) as conn:
                for prefix in self._pg_tables:
                    tables = conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                        "AND starts_with(tablename, %s)",
                        (prefix,),
                    ).fetchall()
                    for (table,) in tables:
                        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ reporting

    def ratio(self, result: Result) -> float | None:
        """How many times slower than its floor (1.0 = at the floor)."""
        floor = self.results.get(result.floor) if result.floor else None
        if floor is None or not floor.value or not result.value:
            return None
        if result.better == "higher":
            return floor.value / result.value
        return result.value / floor.value

    def table(self) -> str:
        lines = [
            f"{'metric':<36} {'value':>14}  {'unit':<16} {'x floor':>8}  floor / note",
            "-" * 100,
        ]
        floors_first = sorted(self.results.values(), key=lambda r: not r.name.startswith("floor."))
        for result in floors_first:
            ratio = self.ratio(result)
            shown = "" if ratio is None else f"{ratio:.1f}"
            note = result.floor or result.note
            lines.append(
                f"{result.name:<36} {fmt(result.value):>14}  {result.unit:<16} {shown:>8}  {note}"
            )
        for name, error in self.errors.items():
            lines.append(f"ERROR in {name}: {error}")
        lines.append(f"elapsed {perf() - self.started:.1f} s, load average {os.getloadavg()}")
        return "\n".join(lines)

    def as_json(self) -> str:
        doc = {
            "python": sys.version.split()[0],
            "scale": self.options.scale,
            "repeat": self.options.repeat,
            "postgresql": bool(self.options.pg_conninfo),
            "results": {
                r.name: {
                    "value": r.value,
                    "unit": r.unit,
                    "better": r.better,
                    "floor": r.floor,
                    "x_floor": self.ratio(r),
                    "note": r.note,
                    **r.extra,
                }
                for r in self.results.values()
            },
            "errors": self.errors,
        }
        return json.dumps(doc, indent=1, default=str)


def fmt(value: float) -> str:
    """A number short enough for the table."""
    if math.isnan(value):
        return "nan"
    size = abs(value)
    if size >= 1e5:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def median(values: list[float]) -> float:
    return statistics.median(values)
