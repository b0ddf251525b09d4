"""The project's benchmarks: appendmuch next to floors measured in the same run.

    python benchmarks/run.py                    # Memory and SQLite, a few minutes
    python benchmarks/run.py --pg               # also PostgreSQL (starts a throwaway server)
    python benchmarks/run.py --only within,load --scale 10 --json-out figures.json
    python benchmarks/run.py --multiprocess --pg # several processes, shared mode
                                                # (benchmarks/multiprocess.py)

Every figure with a floor is also shown as "x floor": how many times slower than the
same physical work done without appendmuch (plain dicts, raw sqlite3, raw psycopg).
Compare those ratios, not absolute times: the machine may be shared and noisy.
Everything runs from this repository alone (``src/`` is put first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "src")]

from harness import Bench, Options  # noqa: E402


@dataclass(frozen=True)
class Workload:
    """A module of this directory with ``run(bench)``."""

    name: str
    module: str
    #: run when no --only is given
    default: bool = True


#: Workloads in the order they run.  A new benchmark is a module with ``run(bench)``
#: listed here; one that should only run on request sets ``default=False`` and is
#: picked with ``--only NAME``.  A benchmark that is its own script (several processes,
#: say) gets a small module here whose ``run`` starts the script with ``subprocess``
#: and records what it prints with ``bench.record``.
WORKLOADS: list[Workload] = [
    Workload("floors", "floors"),
    Workload("write", "writes"),
    Workload("read", "reads"),
    Workload("within", "queries"),
    Workload("mutable", "mutable"),
    Workload("load", "loading"),
]


def main(argv: list[str] | None = None) -> int:
    names = [w.name for w in WORKLOADS]
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog=f"workloads: {', '.join(names)}",
    )
    parser.add_argument(
        "--pg",
        action="store_true",
        help="start a throwaway PostgreSQL "
        "server for the PostgreSQL workloads (or set APPENDMUCH_PG_CONNINFO)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAMES",
        help="comma-separated workloads to run (default: all default ones)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size factor: 20,000 x scale operations; >= 10 adds a 100,000-entry history",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per rate (best kept)")
    parser.add_argument(
        "--budget", type=float, default=1.0, help="seconds spent timing each per-call figure"
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="time CPU used by this process (default; steady when other processes "
        "compete for the cores) or elapsed time; PostgreSQL figures always use elapsed",
    )
    parser.add_argument("--json-out", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="only the final table")
    args = parser.parse_args(argv)

    chosen = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    selected = [w for w in WORKLOADS if (w.name in chosen if chosen else w.default)]

    conninfo = os.environ.get("APPENDMUCH_PG_CONNINFO") or None
    cluster = None
    if args.pg and conninfo is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgserver import TempCluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            print("--pg: PostgreSQL is not installed", file=sys.stderr)
            return 2
        cluster = TempCluster(bindir)
        conninfo = cluster.start()
    options = Options(
        args.scale, max(1, args.repeat), args.budget, conninfo, args.quiet, args.clock
    )
    bench = Bench(options)
    import floors

    floors.register(bench)
    try:
        for workload in selected:
            if not args.quiet:
                print(f"[{workload.name}]", file=sys.stderr, flush=True)
            try:
                importlib.import_module(workload.module).run(bench)
            except Exception as exc:
                bench.errors[workload.name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
    finally:
        bench.cleanup()
        if cluster is not None:
            cluster.stop()
    print(bench.table())
    if args.json_out:
        Path(args.json_out).write_text(bench.as_json() + "\n")
    return 1 if bench.errors else 0


def run_multiprocess(argv: list[str]) -> int:
    """``--multiprocess [--pg] [-- ARGS]``: benchmarks/multiprocess.py (several processes
    in shared mode) with ARGS; PostgreSQL only with ``--pg`` or APPENDMUCH_PG_CONNINFO."""
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    pg = "--pg" in own or bool(os.environ.get("APPENDMUCH_PG_CONNINFO"))
    script = ROOT / "benchmarks" / "multiprocess.py"
    command = [sys.executable, str(script), *([] if pg else ["--no-pg"]), *rest]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    if "--multiprocess" in sys.argv[1:]:  # python benchmarks/run.py --multiprocess [--pg]
        sys.exit(run_multiprocess(sys.argv[1:]))
    sys.exit(main())
