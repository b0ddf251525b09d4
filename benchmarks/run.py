"""Run the shared benchmark harness on this checkout, optionally with a throwaway
PostgreSQL server.

    python benchmarks/run.py                       # quick run, Memory and SQLite
    python benchmarks/run.py --pg                  # also PostgreSQL (starts a server)
    python benchmarks/run.py --pg -- --scale 10 --only within,along
    python benchmarks/run.py --harness /path/to/bench.py -- --json-out a.json
    python benchmarks/run.py --multiprocess --pg   # several processes, shared mode
                                                   # (benchmarks/multiprocess.py)

Everything after ``--`` goes to the harness.  The harness (``bench.py``) times the
public API next to "floor" baselines that use no appendmuch at all, in the same run;
read the "x floor" column (floor rate / our rate), not absolute times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HARNESS = ROOT.parent / "shared" / "bench" / "bench.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--harness",
        default=os.environ.get("APPENDMUCH_BENCH_HARNESS", str(DEFAULT_HARNESS)),
        help="path of bench.py (default: ../shared/bench/bench.py beside the checkout, "
        "or $APPENDMUCH_BENCH_HARNESS)",
    )
    parser.add_argument(
        "--pg",
        action="store_true",
        help="start a throwaway PostgreSQL server for the PostgreSQL workloads "
        "(unless APPENDMUCH_PG_CONNINFO is set)",
    )
    parser.add_argument("harness_args", nargs="*", help="arguments for the harness (after --)")
    args = parser.parse_args(argv)

    harness = Path(args.harness)
    if not harness.is_file():
        print(f"benchmark harness not found at {harness}; pass --harness PATH", file=sys.stderr)
        return 2
    env = dict(os.environ)
    cluster = None
    if args.pg and not env.get("APPENDMUCH_PG_CONNINFO"):
        sys.path.insert(0, str(ROOT / "tests"))
        from pgserver import TempCluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            print("--pg: PostgreSQL is not installed", file=sys.stderr)
            return 2
        cluster = TempCluster(bindir)
        env["APPENDMUCH_PG_CONNINFO"] = cluster.start()
    try:
        command = [
            sys.executable,
            str(harness),
            "--impl-path",
            str(ROOT / "src"),
            "--label",
            "appendmuch-checkout",
            *args.harness_args,
        ]
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        if cluster is not None:
            cluster.stop()


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
