"""A process forked while a Store is open (multiprocessing's default start method on
Linux does exactly this) finds the inherited Store inert.

The child (a real ``os.fork()``, in tests/crash/forker.py) cannot write or flush through
the inherited Store (``WriteError`` saying to open a new Store), and when it exits it
neither writes the parent's queue through the inherited connection nor removes the
parent's lock file nor ends the parent's database session.  The parent goes on writing
as if nothing happened, and the table holds exactly the parent's rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from appendmuch import Store
from backends import Backend, PostgresBackend, SqliteBackend

FORKER = Path(__file__).parent / "crash" / "forker.py"
SQL_BACKENDS = ["sqlite", "postgresql"]


def location(backend: Backend) -> dict[str, Any]:
    if isinstance(backend, SqliteBackend):
        return {
            "kind": "sqlite",
            "path": str(backend.path),
            "lock": f"{backend.path}-appendmuch_values.lock",
        }
    assert isinstance(backend, PostgresBackend)
    return {"kind": "postgresql", "conninfo": backend.conninfo, "prefix": backend.prefix}


def test_a_forked_child_finds_the_store_inert(backend: Backend) -> None:
    if backend.name == "memory":
        return  # nothing shared with the parent: a copy of the log in memory
    done = subprocess.run(
        [sys.executable, str(FORKER), json.dumps(location(backend))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reports = {r["who"]: r for r in map(json.loads, done.stdout.splitlines())}
    child, parent = reports["child"], reports["parent"]
    assert child["write"].startswith("refused:") and "forked" in child["write"]
    assert child["flush"].startswith("refused:")
    assert parent["child_status"] == "0"
    assert parent["lock_kept"] == "True", "the child removed the parent's lock file"
    assert "Traceback" not in done.stderr, done.stderr
    store = Store(backend.driver())
    try:
        f = store.storage("f")
        assert (f.a, f.b, f.d) == (1, 2, 4)
        assert f.get("c") is None
        assert [row[0] for row in backend.raw_rows()] == [1, 2, 3]
    finally:
        store.close()
