"""Shared mode (issue 10): K writer processes, one linear history.

K >= 4 processes (tests/peers/worker.py) each make a fixed number of random plain
writes (their own namespace and fields every writer shares), deletes, and ``with``-block
increments of a few hot counters wrapped in ``retry_on_conflict``, on one SQLite file
or one PostgreSQL table, write-through or batched.  When all are done each calls
``sync()`` and dumps its whole history.  Then:

- every process's history is identical, byte for byte, and equals the database's rows
  and what a fresh reopen loads (contract 1);
- each counter equals the number of increments that returned (0 lost updates, 5);
- seqs are unique, and the only gaps are rolled-back work (at most one per conflict);
- read-your-writes held (each worker asserts it after each write, 2);
- each process's ``on_change`` saw every entry written after it opened, in seq order (4);
- every write a worker acknowledged is stored as it was acknowledged.

The seed is printed; ``APPENDMUCH_SHARED_SEED=...`` replays a run.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from backends import SqlBackend
from sharedlib import WorkerProcess, history_lines, read_acks, row_lines

#: kill loops and long runs of several processes: the slow tier
pytestmark = pytest.mark.slow

SEED = int(os.environ.get("APPENDMUCH_SHARED_SEED") or random.SystemRandom().randrange(2**32))
WRITERS = 4
OPS = 120
COUNTERS = ["c0", "c1", "c2"]


@pytest.mark.parametrize("mode", ["write_through", "batched"])
def test_k_writers_one_linear_history(place: SqlBackend, mode: str, tmp_path: Path) -> None:
    print(f"shared linear: seed {SEED} (replay with APPENDMUCH_SHARED_SEED={SEED})")
    rng = random.Random(f"{SEED}:{place.kind}:{mode}")
    run(place, mode, rng, tmp_path)


def run(place: SqlBackend, mode: str, rng: random.Random, tmp_path: Path) -> None:
    setup = place.open(shared=True)
    hot = setup.storage("hot")
    for counter in COUNTERS:
        setattr(hot, counter, {"n": 0})
    setup.close()
    out = tmp_path / "out"
    out.mkdir()
    workers = []
    for wid in range(WRITERS):
        cfg: dict[str, Any] = {
            "location": place.location(f"appendmuch-linear-{wid}"),
            "driver": {"shared": True, "write_through": mode == "write_through"},
            "seed": rng.randrange(2**31),
            "wid": wid,
            "ops": OPS,
            "counters": COUNTERS,
            "flush_every": 6,
            "acks": str(tmp_path / f"acks-{wid}.jsonl"),
            "out": str(out),
        }
        workers.append(WorkerProcess(cfg, tmp_path / f"worker-{wid}.stderr"))
    opened: list[int] = []
    try:
        opened = [int(worker.wait_marker("ready")) for worker in workers]
        for worker in workers:
            worker.wait_marker("done")
        for worker in workers:
            worker.release()
        for worker in workers:
            worker.finish()
    finally:
        for worker in workers:
            worker.kill()

    histories = [(out / f"history-{w}.txt").read_bytes() for w in range(WRITERS)]
    for w, history in enumerate(histories[1:], 1):
        assert history == histories[0], f"writer {w} holds another history than writer 0"
    rows = place.rows()
    assert "".join(row_lines(rows)).encode() == histories[0], "the database differs"
    fresh = place.open(read_only=True)
    try:
        assert "".join(history_lines(fresh)).encode() == histories[0], "a reopen differs"
        counters = {c: fresh.storage("hot").__history__()[c] for c in COUNTERS}
    finally:
        fresh.close()

    stats = [json.loads((out / f"stats-{w}.json").read_text()) for w in range(WRITERS)]
    for counter in COUNTERS:
        made = sum(s["increments"][counter] for s in stats)
        assert counters[counter][-1].data == {"n": made}, f"{counter}: lost updates"
    conflicts = sum(s["conflicts"] for s in stats)

    seqs = [row[0] for row in rows]
    assert seqs == sorted(set(seqs)), "seqs not unique"
    gaps = (seqs[-1] - seqs[0] + 1) - len(seqs)
    assert gaps <= conflicts, f"{gaps} seqs missing, only {conflicts} conflicts rolled back"

    for w in range(WRITERS):
        seen = json.loads((out / f"seen-{w}.json").read_text())
        assert seen == sorted(set(seen)), f"writer {w}: on_change out of seq order"
        expected = [seq for seq in seqs if seq > opened[w]]  # older ones were loaded
        assert [seq for seq in seen if seq > opened[w]] == expected, (
            f"writer {w}: on_change missed entries or reported ones never stored"
        )

    by_seq = {row[0]: row for row in rows}
    for w in range(WRITERS):
        for ack in read_acks(tmp_path / f"acks-{w}.jsonl"):
            if "incr" in ack:
                continue
            row = by_seq.get(ack["seq"])
            assert row is not None, f"acknowledged {ack} is not stored"
            _, ns, field, raw, t, ctx = row
            assert (ns, field, bytes(raw).hex(), t, ctx) == (
                ack["ns"],
                ack["field"],
                ack["hex"],
                ack["t"],
                ack["ctx"],
            ), f"acknowledged {ack} stored as {row}"
    increments = sum(sum(s["increments"].values()) for s in stats)
    print(
        f"{place.kind} {mode}: {len(rows)} rows, {increments} increments, "
        f"{conflicts} conflicts retried, {gaps} seq gaps"
    )
