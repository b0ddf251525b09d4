"""One of K writers on a shared log, for the linearisability and kill tests.

Started as ``python tests/peers/worker.py CONFIG_JSON``; config:

- ``location`` (tests/crash/childlib.py), ``driver`` (extra keywords: ``shared``,
  ``write_through``, ...), ``seed``, ``wid`` (this writer's id), ``gen`` (how many
  times a writer with this id was started before: keeps values unique);
- ``ops``: operations to make, then stop (``null``: until killed or ``stop``);
- ``stop`` (optional): a file; once it exists the worker stops as if ``ops`` were done;
- ``counters``: names of the hot counters (dicts ``{"n": ...}`` in namespace ``hot``,
  created by the parent);
- ``flush_every``: in batched mode, flush after 1..this many operations;
- ``acks``: a file; every acknowledged write is appended to it and fsynced before the
  worker goes on (write-through: when the assignment returned; batched: when
  ``flush()`` returned).  Lines: ``{"seq", "ns", "field", "hex", "t", "ctx"}`` for a
  plain write (value bytes; ``hex`` null for a tombstone), ``{"incr": counter}`` for an
  increment;
- ``out``: a directory for the final reports (``history-W.txt``: the cache's lines
  after the last ``sync()``; ``seen-W.json``: the seqs ``on_change`` reported;
  ``stats-W.json``: increments, attempts, conflicts).

Operations: plain writes to this writer's own namespace (read-your-writes asserted
after each), writes to a field every writer shares, deletes, and ``with``-block
increments of a random hot counter wrapped in ``retry_on_conflict``.

Protocol on stdout: ``@ready SEQ``, then (when ``ops`` is set) ``@done`` after the last
operation and its flush; it then waits for one stdin line (every writer is done), calls
``sync()``, writes its reports and prints ``@reported``.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import appendmuch
from appendmuch import Storage, Store, tuple2dbns
from sharedlib import Seen, history_lines, open_store

OWN_FIELDS = ("a", "b", "c")
SHARED_FIELDS = ("x", "y")


def marker(*words: object) -> None:
    sys.stdout.write("@" + " ".join(map(str, words)) + "\n")
    sys.stdout.flush()


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg["seed"])
        self.wid: int = cfg["wid"]
        self.tag = f"{self.wid}:{cfg.get('gen', 0)}"
        self.write_through = bool(cfg.get("driver", {}).get("write_through"))
        self.seen = Seen()
        self.store: Store = open_store(cfg["location"], self.seen, **cfg.get("driver", {}))
        self.own = self.store.storage("w", f"p{self.wid}")
        self.shared = self.store.storage("common")
        self.hot = self.store.storage("hot")
        #: plain writes and increments made since the last acknowledgement
        self.pending: list[tuple[Storage, str, Any]] = []
        self.pending_incr: list[str] = []
        self.stats: dict[str, Any] = {
            "increments": dict.fromkeys(cfg["counters"], 0),
            "attempts": 0,
            "conflicts": 0,
        }
        self.acks: IO[str] = open(cfg["acks"], "a", encoding="utf-8")  # noqa: SIM115

    # -- operations --------------------------------------------------------------------

    def step(self, i: int) -> None:
        rng = self.rng
        roll = rng.random()
        value = f"{self.tag}:{i}"
        if roll < 0.3:
            field = rng.choice(OWN_FIELDS)
            setattr(self.own, field, value)
            assert getattr(self.own, field) == value, "read-your-writes broken"
            self.pending.append((self.own, field, value))
        elif roll < 0.45:
            field = rng.choice(SHARED_FIELDS)
            setattr(self.shared, field, value)
            # own write, or a later one by another writer
            assert value in [v.data for v in self.shared.__history__()[field]]
            self.pending.append((self.shared, field, value))
        elif roll < 0.55:
            present = [f for f in OWN_FIELDS if f in self.own.__fields__()]
            if present:
                field = rng.choice(present)
                delattr(self.own, field)
                assert self.own.get(field) is None
        else:
            self.increment(rng.choice(self.cfg["counters"]))

    def increment(self, counter: str) -> None:
        hot = self.hot

        @appendmuch.retry_on_conflict(attempts=10_000)
        def bump() -> None:
            self.stats["attempts"] += 1
            with hot:
                getattr(hot, counter)["n"] += 1

        before = self.stats["attempts"]
        bump()
        self.stats["conflicts"] += self.stats["attempts"] - before - 1
        self.stats["increments"][counter] += 1
        self.pending_incr.append(counter)

    # -- acknowledgements ----------------------------------------------------------------

    def ack(self) -> None:
        """Report everything written since the last ack (it is committed now)."""
        lines = []
        for s, field, value in self.pending:
            found = [v for v in s.__history__()[field] if v.data == value]
            assert len(found) == 1, f"{value!r} in {field}: {found}"
            (v,) = found
            raw = self.store.codec.encode(v.data)
            entry = {
                "seq": v.seq,
                "ns": tuple2dbns(s.__namespace__),
                "field": field,
                "hex": raw.hex(),
                "t": v.time,
                "ctx": v.context,
            }
            lines.append(json.dumps(entry) + "\n")
        lines.extend(json.dumps({"incr": c}) + "\n" for c in self.pending_incr)
        if lines:
            self.acks.write("".join(lines))
            self.acks.flush()
            os.fsync(self.acks.fileno())
        self.pending.clear()
        self.pending_incr.clear()

    # -- the run -------------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.cfg
        marker("ready", self.seen.high)
        flush_every = cfg.get("flush_every", 8)
        due = self.rng.randint(1, flush_every)
        ops = cfg.get("ops")
        stop = Path(cfg["stop"]) if cfg.get("stop") else None
        i = 0
        while (ops is None or i < ops) and not (stop is not None and stop.exists()):
            i += 1
            self.step(i)
            if self.write_through:
                self.ack()
            elif i >= due:
                self.store.flush()
                self.ack()
                due = i + self.rng.randint(1, flush_every)
        self.store.flush()
        self.ack()
        marker("done")
        sys.stdin.readline()  # every writer is done
        self.report()
        marker("reported")

    def report(self) -> None:
        self.store.sync()
        out = Path(self.cfg["out"])
        (out / f"history-{self.wid}.txt").write_text("".join(history_lines(self.store)))
        (out / f"seen-{self.wid}.json").write_text(json.dumps(self.seen.seqs()))
        (out / f"stats-{self.wid}.json").write_text(json.dumps(self.stats))
        self.store.close()


if __name__ == "__main__":
    Worker(json.loads(sys.argv[1])).run()
