"""Ctrl-C as a notebook user meets it: real signals at random moments, anywhere.

SIGALRM fires every 0.1 to 3 ms and raises KeyboardInterrupt whenever the application
is inside a call into the library (an assignment, a ``with`` block, ``flush()``), so
the interrupts land in the Store, the drivers, the database libraries and the
``threading`` module alike.  The application catches them and goes on, as a notebook
does.  Afterwards another thread (a web server's worker, an ``atexit`` handler) must
be able to ``flush()`` and ``close()`` within a bound: no lock may be left held by the
interrupted thread.  Every write that returned must then be stored exactly once, and
what the Store held in memory must be what the database holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appendmuch.errors import ConflictError, WriteError
from backends import Backend, sql_place
from helpers import CtrlC
from test_interrupts import stored_rows

#: seconds of interrupts per backend (APPENDMUCH_CTRL_C_SECONDS to change)
SECONDS = float(os.environ.get("APPENDMUCH_CTRL_C_SECONDS", "3"))
#: another thread's flush() and close() must end within this (a limit, not a threshold)
BOUND = 60.0


@pytest.fixture(params=[1, 2])
def seed(request: pytest.FixtureRequest) -> Iterator[int]:
    yield request.param


@pytest.mark.slow
def test_random_interrupts_then_another_thread_flushes_and_closes(
    backend: Backend, seed: int
) -> None:
    store = backend.store()
    p = store.storage("w", "p")
    p.x = 0
    with p:
        p.items = []
    acked_x: list[int] = []
    acked_items: list[int] = []
    failures: list[str] = []
    i = 0
    with CtrlC(seed, spare_gc=True) as ctrl_c:
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            i += 1
            try:
                ctrl_c.armed = True
                if i % 50 == 0:
                    with p:
                        p.items.append(i)
                        p.x = i
                    ctrl_c.armed = False
                    acked_items.append(i)
                    acked_x.append(i)
                elif i % 200 == 0:
                    store.flush()
                else:
                    p.x = i
                    ctrl_c.armed = False
                    acked_x.append(i)
            except KeyboardInterrupt:
                ctrl_c.armed = False
            except (WriteError, ConflictError) as exc:  # (at most while a connection is replaced)
                ctrl_c.armed = False  # (before anything that could be interrupted)
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                ctrl_c.armed = False
    assert ctrl_c.landed >= 20, f"only {ctrl_c.landed} interrupts landed"
    assert len(failures) <= 1, [f[60:120] for f in failures[:12]]

    done: dict[str, Any] = {}

    def finish() -> None:
        try:
            store.flush()
            done["history"] = {
                field: [(v.seq, v.unavailable, v.data) for v in values]
                for field, values in p.__history__().items()
            }
            store.close()
            done["ok"] = True
        except BaseException as exc:  # reported below
            done["error"] = exc

    other = threading.Thread(target=finish, daemon=True)
    other.start()
    other.join(BOUND)
    assert not other.is_alive(), "flush()/close() from another thread hung: a lock was left held"
    assert done.get("ok"), done.get("error")

    rows = [row for row in stored_rows(backend) if row[1] == "w/p"]
    decode = store.codec.decode
    stored_x = [decode(row[3]) for row in rows if row[2] == "x"]
    assert len(stored_x) == len(set(stored_x)), "a write was stored twice"
    lost = sorted(set(acked_x) - set(stored_x))
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    latest_items = [decode(row[3]) for row in rows if row[2] == "items"][-1]
    assert set(acked_items) <= set(latest_items)
    # the cache held exactly what the database holds
    on_disk = {
        field: [
            (row[0], row[3] is None, None if row[3] is None else decode(row[3]))
            for row in rows
            if row[2] == field
        ]
        for field in ("x", "items")
    }
    assert done["history"] == on_disk
    print(f"{backend.name}: {ctrl_c.landed} interrupts survived in {i} operations")


class _InterruptedExit:
    """Make ``Storage.__exit__`` raise KeyboardInterrupt as it begins, once: where a
    real Ctrl-C lands when the signal arrives just as the ``with`` body ends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, storage: Any) -> None:
        self.monkeypatch = monkeypatch
        self.cls = type(storage)
        self.original = self.cls.__exit__

    def __enter__(self) -> None:
        original = self.original
        monkeypatch = self.monkeypatch
        cls = self.cls

        def exit_interrupted(self: Any, *exc: object) -> None:
            monkeypatch.setattr(cls, "__exit__", original)
            raise KeyboardInterrupt

        monkeypatch.setattr(cls, "__exit__", exit_interrupted)

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.setattr(self.cls, "__exit__", self.original)


def test_a_block_whose_exit_was_interrupted_keeps_nothing_that_follows(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block stays open (its ``__exit__`` never ran), but it is the ``with``
    statement that ended: the writes after it are ordinary ones, the next ``with``
    on the same line opens a new block, and nothing waits for the lost end."""
    store = backend.store()
    p = store.storage("w", "p")
    p.n = 0
    for round_ in range(3):
        try:
            with _InterruptedExit(monkeypatch, p) if round_ == 0 else contextlib.nullcontext():
                with p:
                    p.n = p.n + 1
        except KeyboardInterrupt:
            pass
        p.after = round_  # an ordinary write, never kept for that block's end
    store.flush()
    other = backend.reopen(store)
    try:
        assert other.storage("w", "p").after == 2
        # the interrupted block was closed as failed (single-writer mode had written
        # its assignment already); the two blocks after it were not nested in it
        assert other.storage("w", "p").n == (3 if not backend.name.endswith("shared") else 2)
        assert [v.data for v in other.storage("w", "p").__history__()["after"]] == [0, 1, 2]
    finally:
        other.close()


#: seconds of real signals per run of a process (the issue asks for at least 10)
PROCESS_SECONDS = float(os.environ.get("APPENDMUCH_CTRL_C_PROCESS_SECONDS", "10"))
CHILD = Path(__file__).resolve().parent / "peers" / "ctrl_c_child.py"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "mode", "seed"),
    [
        *(("postgresql", mode, seed) for mode in ("single", "shared") for seed in (1, 2, 3)),
        ("sqlite", "single", 1),
        ("sqlite", "shared", 1),
    ],
)
def test_a_process_under_real_signals_goes_on_and_prints_nothing(
    kind: str, mode: str, seed: int, tmp_path: Path
) -> None:
    """A process writes for 10 s while real signals raise KeyboardInterrupt anywhere
    (inside psycopg, the pool, sqlite3, threading); it catches them and goes on.  Every
    write goes on working (at most one WriteError while a connection is replaced, never
    a LockedError against its own session), another thread's flush() and close() work,
    every acknowledged write is in the table exactly once (none in a recovery file), and
    nothing at all is printed to stderr."""
    place = sql_place(kind, tmp_path)
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(CHILD),
                json.dumps(place.location("appendmuch-ctrl-c")),
                str(seed),
                str(PROCESS_SECONDS),
                mode,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=PROCESS_SECONDS + 180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stderr == "", done.stderr[-3000:]
        report = json.loads(done.stdout)
        assert report["interrupts"] >= 100, report["interrupts"]
        errors = report["errors"]
        assert not any(key.startswith("LockedError") for key in errors), errors
        assert sum(errors.values()) <= 1, errors
        assert report["ending"] == {"flush": "ok", "close": "ok", "hung": False}
        stored = [
            int(bytes(row[3])[1:]) for row in place.rows() if row[2] == "x" and row[3] is not None
        ]
        assert len(stored) == len(set(stored)), "a write was stored twice"
        lost = sorted(set(report["acked"]) - set(stored))
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
        assert not [name for name in os.listdir(tmp_path) if ".recovery-" in name]
        print(
            f"{kind} {mode} seed {seed}: {report['interrupts']} interrupts in "
            f"{report['operations']} operations"
        )
    finally:
        place.cleanup()
