"""Shared mode (issue 10): SIGKILL one of K writers at random moments.

K writer processes (tests/peers/worker.py: plain writes, deletes, hot-counter
increments with ``retry_on_conflict``) share one SQLite file or PostgreSQL table; two
flush in batches, one writes through.  Again and again a random one is killed at a
random moment, and then:

- every write any worker acknowledged (reported to an fsynced file only after
  ``flush()`` returned, or the assignment returned in write-through mode) is stored
  with its seq, value bytes, time and context (contract 7: 0 acknowledged writes lost);
- no seq is stored twice;
- the surviving writers keep going: each acknowledges further writes;
- the killed writer is restarted: it opens (catching up with everything committed so
  far) and carries on writing.

At the end the survivors stop, ``sync()`` and dump their histories: identical byte for
byte, equal to the database; each counter holds at least every acknowledged increment
and at most those plus what the killed writers may have committed unacknowledged.
The seed is printed; ``APPENDMUCH_SHARED_SEED=...`` replays a run.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from backends import SqlBackend
from sharedlib import PATIENCE, WorkerProcess, read_acks, row_lines

#: kill loops and long runs of several processes: the slow tier
pytestmark = pytest.mark.slow

SEED = int(os.environ.get("APPENDMUCH_SHARED_SEED") or random.SystemRandom().randrange(2**32))
WRITERS = 3
KILLS = 20
FLUSH_EVERY = 6
COUNTERS = ["c0", "c1"]


class Crew:
    """The K writers of one log, restarted as they are killed."""

    def __init__(self, place: SqlBackend, tmp_path: Path, rng: random.Random) -> None:
        self.place = place
        self.tmp = tmp_path
        self.rng = rng
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.stop = tmp_path / "stop"
        self.gens = [0] * WRITERS
        self.running: list[WorkerProcess] = []
        self.acks_files: list[Path] = []

    def app(self, wid: int) -> str:
        return f"appendmuch-kill-{wid}-{self.gens[wid]}"

    def start(self, wid: int) -> WorkerProcess:
        acks = self.tmp / f"acks-{wid}-{self.gens[wid]}.jsonl"
        self.acks_files.append(acks)
        cfg: dict[str, Any] = {
            "location": self.place.location(self.app(wid)),
            "driver": {"shared": True, "write_through": wid == WRITERS - 1},
            "seed": self.rng.randrange(2**31),
            "wid": wid,
            "gen": self.gens[wid],
            "ops": None,
            "stop": str(self.stop),
            "counters": COUNTERS,
            "flush_every": FLUSH_EVERY,
            "acks": str(acks),
            "out": str(self.out),
        }
        worker = WorkerProcess(cfg, self.tmp / f"worker-{wid}-{self.gens[wid]}.stderr")
        if wid < len(self.running):
            self.running[wid] = worker
        else:
            self.running.append(worker)
        return worker

    def acks(self) -> list[dict[str, Any]]:
        return [ack for path in self.acks_files for ack in read_acks(path)]


def check_acknowledged(acks: list[dict[str, Any]], rows: list[tuple[Any, ...]], label: str) -> int:
    """Every acknowledged plain write is stored as acknowledged; no seq twice."""
    seqs = [row[0] for row in rows]
    dupes = [seq for seq, n in Counter(seqs).items() if n > 1]
    assert not dupes, f"{label}: seqs stored twice: {dupes[:10]}"
    by_seq = {row[0]: row for row in rows}
    checked = 0
    for ack in acks:
        if "incr" in ack:
            continue
        row = by_seq.get(ack["seq"])
        want = (ack["seq"], ack["ns"], ack["field"], ack["hex"], ack["t"], ack["ctx"])
        got = None if row is None else (row[0], row[1], row[2], bytes(row[3]).hex(), *row[4:])
        assert got == want, f"{label}: acknowledged write lost or changed: {want} stored as {got}"
        checked += 1
    return checked


def wait_for_acks(path: Path, worker: WorkerProcess, more_than: int = 0) -> None:
    """Poll (bounded) until a worker has acknowledged more than ``more_than`` writes."""
    deadline = time.monotonic() + PATIENCE
    while len(read_acks(path)) <= more_than:
        assert worker.proc.poll() is None, f"writer died:\n{worker.stderr()}"
        assert time.monotonic() < deadline, f"no write acknowledged in {path.name}"
        time.sleep(0.01)


def test_kill_one_of_k_writers(place: SqlBackend, tmp_path: Path) -> None:
    print(f"shared kill: seed {SEED} (replay with APPENDMUCH_SHARED_SEED={SEED})")
    rng = random.Random(f"{SEED}:{place.kind}")
    run_kills(place, place.kind, rng, tmp_path)


def run_kills(place: SqlBackend, kind: str, rng: random.Random, tmp_path: Path) -> None:
    setup = place.open(shared=True)
    for counter in COUNTERS:
        setattr(setup.storage("hot"), counter, {"n": 0})
    setup.close()
    crew = Crew(place, tmp_path, rng)
    checked = 0
    try:
        for wid in range(WRITERS):
            crew.start(wid).wait_marker("ready")
        for k in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.4))  # a random moment in the writers' work
            wid = rng.randrange(WRITERS)
            victim = crew.running[wid]
            assert victim.proc.poll() is None, f"writer {wid} died:\n{victim.stderr()}"
            victim.kill()
            place.settle(crew.app(wid))
            label = f"seed {SEED} {kind} kill {k} (writer {wid})"
            acks = crew.acks()
            checked = check_acknowledged(acks, place.rows(), label)
            high = max((ack["seq"] for ack in acks if "seq" in ack), default=0)
            # the others keep going: each survivor acknowledges more writes
            for other in range(WRITERS):
                if other != wid:
                    path = tmp_path / f"acks-{other}-{crew.gens[other]}.jsonl"
                    wait_for_acks(path, crew.running[other], more_than=len(read_acks(path)))
            crew.gens[wid] += 1
            restarted = crew.start(wid)
            opened = int(restarted.wait_marker("ready"))
            assert opened >= high, f"{label}: restarted at seq {opened}, {high} was acknowledged"
        # every restarted writer carries on: wait (bounded) for its first acknowledgement
        for wid in range(WRITERS):
            if crew.gens[wid]:
                wait_for_acks(tmp_path / f"acks-{wid}-{crew.gens[wid]}.jsonl", crew.running[wid])
        # the survivors stop, catch up and report
        crew.stop.touch()
        for worker in crew.running:
            worker.wait_marker("done")
        for worker in crew.running:
            worker.release()
        for worker in crew.running:
            worker.finish()
    finally:
        for worker in crew.running:
            worker.kill()
    rows = place.rows()
    acks = crew.acks()
    checked = check_acknowledged(acks, rows, f"seed {SEED} {kind} final")
    histories = [(crew.out / f"history-{w}.txt").read_bytes() for w in range(WRITERS)]
    assert all(h == histories[0] for h in histories), "the survivors' histories differ"
    assert "".join(row_lines(rows)).encode() == histories[0], "the database differs"
    acked = Counter(ack["incr"] for ack in acks if "incr" in ack)
    final = {c: json.loads(bytes(r[3][1:])) for r in rows for c in COUNTERS if r[2] == c}
    for counter in COUNTERS:
        n = final[counter]["n"]
        assert acked[counter] <= n <= acked[counter] + KILLS * FLUSH_EVERY, (
            f"{counter} = {n}, {acked[counter]} increments acknowledged"
        )
    print(f"{kind}: {KILLS} kills, {checked} acknowledged writes checked, 0 lost, {len(rows)} rows")
