"""Crash tests: a child process writes, the test kills it with SIGKILL, nothing acknowledged
may be lost.

The children (tests/crash/*.py) report every write once it is acknowledged under the
durability contract: in write-through mode when the assignment returned, in batched mode
when a later ``store.flush()`` returned.  The parent reads those reports, kills the child
at a random moment (seeded: the seed is printed and can be replayed with
``APPENDMUCH_CRASH_SEED=...``), and then checks, on an independent connection and
through a newly opened Store:

- every acknowledged write is stored with identical seq, value bytes, created_at and
  context (a replace-semantics field holds one row, at least as new as its latest
  acknowledged write);
- no seq is stored twice (the column is UNIQUE, and the rows are checked too);
- the log opens again (SQLite: the dead writer's lock file is left behind, its flock
  released by the OS; PostgreSQL: its advisory lock goes with its session, once the
  server has ended that session, see ``settle``), the reopened Store holds the lock (a
  second writer is refused), and a new write gets seq = largest stored + 1, is
  committed, and is loaded by a Store opened afterwards.

Scenarios, per backend: a batched writer, a write-through writer (plain writes, deletes,
``with``-block mutations, replace-semantics fields), kills while a large batch is being
flushed (it is stored all or not at all), kills during ``driver.restore`` of a big dump
(the table then holds none or all of it), kills while new logs are being created by
their first open, and a reopen right after a kill, without waiting for anything.

At the end the totals (kills per backend, acknowledged writes checked, writes lost) are
printed and written as JSON to ``<pytest basetemp>/crash-last-run.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Memory, Store, dbns2tuple
from appendmuch.errors import LockedError
from backends import SqlBackend, SqliteBackend, pg_conninfo, pg_settle, sql_place
from children import ChildProcess

CRASH_DIR = Path(__file__).parent / "crash"
SEED = int(os.environ.get("APPENDMUCH_CRASH_SEED") or random.SystemRandom().randrange(2**32))
BACKENDS = ["sqlite", "postgresql"]
#: kills per scenario and backend (55 per backend)
ROUNDS = {
    "batched": 14,
    "write_through": 14,
    "flush": 10,
    "restore": 6,
    "first_open": 8,
    "at_once": 3,
}
#: generous limit for a child to reach a marker (never a threshold on durability)
PATIENCE = 60.0
#: rows in the big dump of the restore scenario
DUMP_ROWS = 15000
#: application_name of the children's PostgreSQL sessions
CHILD_APP = "appendmuch-crash-child"

Row = tuple[int, str, str, bytes | None, float, str]


def is_replace(dbns: str, field: str) -> bool:
    """The children's replace predicate (see tests/crash/childlib.py)."""
    return field.startswith("r_")


# --------------------------------------------------------------------------- totals


@dataclass
class Tally:
    """What the crash tests did, per backend."""

    kills: Counter[str] = field(default_factory=Counter)
    acknowledged: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    moments: Counter[str] = field(default_factory=Counter)
    scenarios: set[tuple[str, str]] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": SEED,
            "kills": dict(self.kills),
            "acknowledged_writes": dict(self.acknowledged),
            "acknowledged_write_checks": dict(self.checks),
            "writes_lost": {name: self.lost[name] for name in self.kills},
            "kill_moments": dict(sorted(self.moments.items())),
            "scenarios_completed": sorted(f"{b}:{s}" for b, s in self.scenarios),
        }


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def summary(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tally]:
    """Print the seed first and the totals last (past output capture), and save them."""
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def show(text: str) -> None:
        if reporter is None or capture is None:
            print(text)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)

    show(f"\ncrash tests: seed {SEED} (replay with APPENDMUCH_CRASH_SEED={SEED})")
    yield TALLY
    if TALLY.kills:
        path = tmp_path_factory.getbasetemp() / "crash-last-run.json"
        path.write_text(json.dumps(TALLY.as_dict(), indent=2))
        show(f"\ncrash totals: {json.dumps(TALLY.as_dict())}\n(saved to {path})")


# --------------------------------------------------------------------------- locations


def table_exists(place: SqlBackend) -> bool:
    """Whether the log's table exists (without creating the SQLite file if it does not)."""
    if isinstance(place, SqliteBackend):
        if not place.path.exists():
            return False
        found = place.query(
            f"SELECT name FROM sqlite_master WHERE type = 'table' AND name = '{place.table}'"
        )
    else:
        found = place.query(f"SELECT to_regclass('\"{place.table}\"')")
        found = [row for row in found if row[0] is not None]
    return bool(found)


def seq_is_unique(place: SqlBackend) -> bool:
    """Whether the log's table has a UNIQUE index on exactly (seq)."""
    if place.kind == "sqlite":
        for _, name, unique, *_ in place.query(f'PRAGMA index_list("{place.table}")'):
            columns = [row[2] for row in place.query(f'PRAGMA index_info("{name}")')]
            if unique and columns == ["seq"]:
                return True
        return False
    found = place.query(
        "SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = i.indkey[0] "
        f"WHERE i.indrelid = '\"{place.table}\"'::regclass AND i.indisunique "
        "AND i.indnatts = 1 AND i.indpred IS NULL AND a.attname = 'seq'"
    )
    return bool(found)


def round_place(kind: str, directory: Path, places: list[SqlBackend]) -> SqlBackend:
    """A new log in a new ``directory`` (one round's), cleaned up with ``places``."""
    directory.mkdir()
    place = sql_place(kind, directory)
    places.append(place)
    return place


def child_start(place: SqlBackend, rng: random.Random) -> dict[str, Any]:
    """What every writer child is told: where the log is, and its random seed."""
    return {"location": place.location(CHILD_APP), "seed": rng.randrange(2**31)}


@pytest.fixture
def places() -> Iterator[list[SqlBackend]]:
    """Places made by a test, cleaned up afterwards (PostgreSQL tables dropped)."""
    made: list[SqlBackend] = []
    yield made
    for place in made:
        place.cleanup()


def child_conninfo() -> str:
    """The server's conninfo, naming the sessions as a crash child's (see settle())."""
    return f"{pg_conninfo()} application_name={CHILD_APP}"


def settle(kind: str) -> None:
    """Wait until the server has ended every session of the killed child.

    A batch the child had sent completely before it died is still run (and committed)
    by the server; only then does its session notice the client is gone.  Until then
    the table is still changing: poll, then look.  (SQLite: the process is gone, and
    with it everything it was doing.)
    """
    if kind != "postgresql":
        return
    pg_settle(pg_conninfo(), CHILD_APP, poll=0.002)


# --------------------------------------------------------------------------- children


class Child(ChildProcess):
    """A tests/crash child script; its report lines (acks) kept as they come."""

    def __init__(self, script: str, cfg: dict[str, Any], stderr: Path) -> None:
        self.lines: list[bytes] = []
        super().__init__(CRASH_DIR / script, cfg, stderr)

    def on_line(self, line: bytes) -> None:
        self.lines.append(line)

    def wait_marker(self, word: str, count: int = 1) -> float:
        """Wait for the ``count``-th ``@word`` line; return when it arrived."""
        seen = self.marker(word, count)
        if seen is not None:
            return seen[0]
        self.kill(expect_alive=False)
        pytest.fail(f"child never printed @{word} #{count}:\n{self.stderr()}")

    def count(self, word: str) -> int:
        with self._cond:
            return len(self.markers[word])

    def kill(self, *, expect_alive: bool = True) -> None:
        """SIGKILL the child and read everything it printed before it died."""
        early = self.proc.poll()
        self.reap(kill=True, timeout=None)
        if expect_alive and (early is not None or self.proc.returncode != -signal.SIGKILL):
            pytest.fail(
                f"the child ended by itself (status {self.proc.returncode}) before the kill:"
                f"\n{self.stderr()}"
            )

    def finish(self) -> None:
        """Let the child end by itself (it must succeed)."""
        self.reap()
        if self.proc.returncode != 0:
            pytest.fail(f"child failed (status {self.proc.returncode}):\n{self.stderr()}")

    def acks(self) -> list[Ack]:
        return [Ack.parse(line) for line in self.lines]


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Ack:
    """One acknowledged write, as the child reported it."""

    seq: int
    ns: str
    field: str
    length: int | None  # None: a tombstone
    sha: str | None
    hex: str | None
    t: float
    ctx: str
    rep: bool

    @classmethod
    def parse(cls, line: bytes) -> Ack:
        e = json.loads(line)
        return cls(
            e["seq"], e["ns"], e["field"], e["len"], e["sha"], e["hex"], e["t"], e["ctx"], e["rep"]
        )

    @classmethod
    def of_row(cls, row: Row) -> Ack:
        seq, ns, f, raw, t, ctx = row
        return cls(
            seq,
            ns,
            f,
            None if raw is None else len(raw),
            None if raw is None else hashlib.sha256(raw).hexdigest(),
            None if raw is None else raw.hex(),
            t,
            ctx,
            is_replace(ns, f),
        )

    def matches(self, row: Row | None) -> bool:
        """The stored row is exactly this write: seq, place, value bytes, time, context."""
        if row is None:
            return False
        seq, ns, f, raw, t, ctx = row
        if (seq, ns, f, t, ctx) != (self.seq, self.ns, self.field, self.t, self.ctx):
            return False
        if raw is None or self.length is None:
            return raw is None and self.length is None
        if self.hex is not None and raw.hex() != self.hex:
            return False
        return len(raw) == self.length and hashlib.sha256(raw).hexdigest() == self.sha


class Ledger:
    """The acknowledged writes of one log, checked again after every kill."""

    def __init__(self, backend: str, tally: Tally) -> None:
        self.backend = backend
        self.tally = tally
        self.plain: dict[int, Ack] = {}
        self.latest: dict[tuple[str, str], Ack] = {}
        self.seqs: set[int] = set()
        self.problems: list[str] = []
        #: the writes the parent made after each kill
        self.probes: list[Ack] = []

    def add(self, acks: list[Ack]) -> None:
        for ack in acks:
            if ack.seq in self.seqs:
                self.problems.append(f"seq {ack.seq} was acknowledged twice (reused)")
            self.seqs.add(ack.seq)
            self.tally.acknowledged[self.backend] += 1
            if ack.rep:
                known = self.latest.get((ack.ns, ack.field))
                if known is None or ack.seq > known.seq:
                    self.latest[ack.ns, ack.field] = ack
            else:
                self.plain[ack.seq] = ack

    def lose(self, what: str) -> None:
        self.tally.lost[self.backend] += 1
        self.problems.append(what)

    def check_rows(self, rows: list[Row], label: str) -> None:
        """Every acknowledged write is in ``rows``, unchanged; no seq twice; one row per
        replace-semantics field."""
        by_seq = {row[0]: row for row in rows}
        if len(by_seq) != len(rows):
            dupes = [seq for seq, n in Counter(row[0] for row in rows).items() if n > 1]
            self.problems.append(f"{label}: seqs stored twice: {dupes[:10]}")
        for ack in self.plain.values():
            if not ack.matches(by_seq.get(ack.seq)):
                self.lose(f"{label}: acknowledged {ack} stored as {by_seq.get(ack.seq)}")
        replaced: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for row in rows:
            if is_replace(row[1], row[2]):
                replaced[row[1], row[2]].append(row)
        for key, held in replaced.items():
            if len(held) != 1:
                self.problems.append(f"{label}: replace field {key} has {len(held)} rows")
        for key, ack in self.latest.items():
            held = replaced.get(key, [])
            newest = max(held, default=None)
            if (
                newest is None
                or newest[0] < ack.seq
                or (newest[0] == ack.seq and not ack.matches(newest))
            ):
                self.lose(f"{label}: acknowledged {ack} but the field holds {held}")
        self.tally.checks[self.backend] += len(self.plain) + len(self.latest)

    def check_store(self, store: Store, fresh: list[Ack], label: str) -> None:
        """The reopened Store's histories hold the newly acknowledged plain writes."""
        wanted: dict[str, list[Ack]] = defaultdict(list)
        for ack in fresh:
            if not ack.rep:
                wanted[ack.ns].append(ack)
        for ns, acks in wanted.items():
            history = store.storage(*dbns2tuple(ns)).__history__()
            by_seq = {value.seq: (f, value) for f in history for value in history[f]}
            for ack in acks:
                f, value = by_seq.get(ack.seq, (None, None))
                raw = None
                if value is not None and not value.unavailable:
                    raw = store.codec.encode(value.data)
                if value is None or not ack.matches(
                    (value.seq, ns, f or "", raw, value.time or 0.0, value.context)
                ):
                    self.lose(f"{label}: reopened Store lacks {ack} (has {value})")


def verify_after_kill(place: SqlBackend, ledger: Ledger, fresh: list[Ack], label: str) -> list[Row]:
    """Check the log after a kill: it reopens (the dead writer's lock is gone) and the
    reopened Store holds the lock, every acknowledged write is there, seqs are UNIQUE,
    and the next write gets seq = largest + 1 and is committed.  Returns the rows
    found (before that write).

    On PostgreSQL the killed child's server sessions are waited for first (see
    :func:`settle`); test_reopens_at_once_after_a_kill_mid_batch reopens without waiting.
    """
    settle(place.kind)
    existed = table_exists(place)
    store = Store(place.driver(), replace_predicate=is_replace)
    try:
        with pytest.raises(LockedError):
            Store(place.driver()).close()  # the reopened Store holds the lock
        assert seq_is_unique(place), f"{label}: no UNIQUE index on seq"
        if not existed:  # killed before its first open created it
            assert not ledger.seqs, f"{label}: acknowledged writes but no table"
        rows = place.rows()
        ledger.check_rows(rows, label)
        ledger.check_store(store, fresh, label)
        largest = max((row[0] for row in rows), default=0)
        probe = store.storage("probe")
        probe.n = largest
        value = probe.__history__()["n"][-1]
        assert value.seq == largest + 1, f"{label}: next seq {value.seq} after {largest}"
    finally:
        store.close()
    after = {row[0]: row for row in place.rows()}
    written = after.get(value.seq)
    assert written is not None, f"{label}: the write after reopening was not committed"
    ack = Ack.of_row(written)
    ledger.add([ack])
    ledger.probes.append(ack)
    return rows


def final_reopen(place: SqlBackend, ledger: Ledger, label: str) -> None:
    """The writes made after the kills survive a reopen: a new Store loads them."""
    settle(place.kind)
    store = Store(place.driver(read_only=True), replace_predicate=is_replace)
    try:
        ledger.check_store(store, ledger.probes, f"{label} final reopen")
    finally:
        store.close()


# --------------------------------------------------------------------------- scenarios


def rng_for(kind: str, scenario: str) -> random.Random:
    return random.Random(f"{SEED}:{kind}:{scenario}")


def kill(child: Child, kind: str) -> None:
    child.kill()
    TALLY.kills[kind] += 1


def finish_scenario(kind: str, scenario: str, problems: list[str]) -> None:
    assert not problems, f"seed {SEED}: {len(problems)} problems, first ones:\n" + "\n".join(
        problems[:10]
    )
    TALLY.scenarios.add((kind, scenario))


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.slow
class TestCrash:
    @pytest.mark.parametrize("mode", ["batched", "write_through"])
    def test_writer_killed_at_random(
        self, kind: str, mode: str, tmp_path: Path, places: list[SqlBackend]
    ) -> None:
        """A child writes every kind of operation until killed, again and again on the
        same log (each child reopens what the previous ones left)."""
        rng = rng_for(kind, mode)
        place = sql_place(kind, tmp_path)
        places.append(place)
        ledger = Ledger(kind, TALLY)
        for r in range(ROUNDS[mode]):
            cfg = {
                **child_start(place, rng),
                "mode": mode,
                "flush_every": 12,
            }
            child = Child("writer.py", cfg, tmp_path / f"stderr-{r}.txt")
            if rng.random() < 0.15:  # sometimes while it is still opening and loading
                TALLY.moments[f"{kind}:{mode}:from start"] += 1
            else:
                child.wait_marker("ready")
                TALLY.moments[f"{kind}:{mode}:while writing"] += 1
            time.sleep(rng.uniform(0.0, 0.25))  # let it run for a random time
            kill(child, kind)
            fresh = child.acks()
            ledger.add(fresh)
            verify_after_kill(place, ledger, fresh, f"{kind} {mode} kill {r}")
        final_reopen(place, ledger, f"{kind} {mode}")
        finish_scenario(kind, mode, ledger.problems)

    def test_killed_while_flushing_a_large_batch(
        self, kind: str, tmp_path: Path, places: list[SqlBackend]
    ) -> None:
        """Thousands of long rows queued in one batch (no size or time limit reached),
        killed shortly after ``store.flush()`` started: the batch is all in or all out,
        and every batch flushed before is intact."""
        rng = rng_for(kind, "flush")
        durations: list[float] = []
        problems: list[str] = []
        for r in range(ROUNDS["flush"]):
            place = round_place(kind, tmp_path / f"r{r}", places)
            ledger = Ledger(kind, TALLY)
            cfg = {
                **child_start(place, rng),
                "mode": "batched",
                "burst": [1500, 3000],
                "driver": {"batch_size": 100_000, "batch_interval": 3600.0},
            }
            child = Child("writer.py", cfg, tmp_path / f"stderr-{r}.txt")
            child.wait_marker("flushing", rng.randint(1, 2))
            estimate = statistics.median(durations) if durations else 0.03
            time.sleep(rng.uniform(0.0, estimate))  # somewhere in the flush, usually
            kill(child, kind)
            started, ended = child.markers["flushing"], child.markers["flushed"]
            durations.extend(
                end - start for (start, _), (end, _) in zip(started, ended, strict=False)
            )
            fresh = child.acks()
            ledger.add(fresh)
            rows = verify_after_kill(place, ledger, fresh, f"{kind} flush kill {r}")
            count, lo, hi = map(int, started[-1][1].split())
            if len(started) > len(ended):
                # killed in flush(), before it returned: the batch is all in or all out
                TALLY.moments[f"{kind}:flush:during flush"] += 1
                # r_n is written every 50th row and swapped in the queue: one row for all
                batch = count - (count + 49) // 50 + 1
                stored = [row for row in rows if lo < row[0] <= hi]
                if len(stored) not in (0, batch):
                    problems.append(f"round {r}: {len(stored)} rows of a {batch}-row batch stored")
            else:
                TALLY.moments[f"{kind}:flush:after flush"] += 1
            final_reopen(place, ledger, f"{kind} flush kill {r}")
            problems.extend(ledger.problems)
        finish_scenario(kind, "flush", problems)

    def test_killed_during_restore_of_a_big_dump(
        self, kind: str, tmp_path: Path, places: list[SqlBackend]
    ) -> None:
        """``driver.restore`` of a big dump into a log that already holds rows, killed at
        random: the table holds none or all of the dump's rows, the old rows intact."""
        rng = rng_for(kind, "restore")
        source = Store(Memory())
        for k in range(DUMP_ROWS + 40):
            s = source.storage("dump", f"p{k % 7}")
            s.k = k
            if k % 3 == 0:
                s.text = f"row {k} " * (k % 9)
        chunks = list(source.driver.dump())
        pre, big = b"".join(chunks[:40]), chunks[40:]
        dump_path = tmp_path / "big.msgpack"
        dump_path.write_bytes(b"".join(big))
        dump_rows = {row[0]: tuple(row) for row in source.driver.load_rows() if row[0] > 40}
        assert len(dump_rows) == len(big)

        def fresh_place(r: int) -> SqlBackend:
            """A new log holding 40 rows."""
            place = round_place(kind, tmp_path / f"r{r}", places)
            driver = place.driver()
            driver.restore(pre)
            driver.close()
            return place

        def restorer(place: SqlBackend, r: int, **cfg: Any) -> Child:
            cfg.update(location=place.location(CHILD_APP), dump=str(dump_path))
            return Child("restorer.py", cfg, tmp_path / f"stderr-{r}.txt")

        # one restore left to finish, to know how long a restore takes here
        place = fresh_place(0)
        child = restorer(place, 0, exit=True)
        child.finish()
        duration = child.markers["restored"][0][0] - child.markers["restoring"][0][0]
        assert len(place.rows()) == 40 + len(big)

        problems: list[str] = []
        for r in range(1, ROUNDS["restore"] + 1):
            place = fresh_place(r)
            ledger = Ledger(kind, TALLY)
            ledger.add([Ack.of_row(row) for row in place.rows()])  # the rows already there
            child = restorer(place, r)
            child.wait_marker("restoring")
            time.sleep(rng.uniform(0.1, 1.1) * duration)
            kill(child, kind)
            settle(kind)  # a restore sent in full is still committed by the server
            rows = place.rows()
            restored = [row for row in rows if row[0] in dump_rows]
            if restored != [dump_rows[row[0]] for row in restored]:
                problems.append(f"round {r}: restored rows differ from the dump")
            if len(restored) not in (0, len(dump_rows)):
                problems.append(f"round {r}: {len(restored)} of {len(dump_rows)} rows restored")
            moment = "all restored" if restored else "none restored"
            TALLY.moments[f"{kind}:restore:{moment}"] += 1
            verify_after_kill(place, ledger, [], f"{kind} restore kill {r}")
            final_reopen(place, ledger, f"{kind} restore kill {r}")
            problems.extend(ledger.problems)
        finish_scenario(kind, "restore", problems)

    def test_reopens_at_once_after_a_kill_mid_batch(
        self, kind: str, tmp_path: Path, places: list[SqlBackend]
    ) -> None:
        """A writer killed while the database is still busy with a big batch it had sent:
        a new Store opens on the log at once (an application restarted by a supervisor
        must not be told the log is "already open for writing" by the dead process),
        and nothing acknowledged is lost."""
        rng = rng_for(kind, "at_once")
        problems: list[str] = []
        for r in range(ROUNDS["at_once"]):
            place = round_place(kind, tmp_path / f"r{r}", places)
            ledger = Ledger(kind, TALLY)
            cfg = {
                **child_start(place, rng),
                "mode": "batched",
                "burst": [25_000, 25_000],
                "text": [0, 20],  # many small rows: little to send, much for the server to do
                "driver": {"batch_size": 100_000, "batch_interval": 3600.0},
            }
            child = Child("writer.py", cfg, tmp_path / f"stderr-{r}.txt")
            child.wait_marker("flushed")  # the first flush shows how long one takes
            took = child.markers["flushed"][0][0] - child.markers["flushing"][0][0]
            child.wait_marker("flushing", 2)
            time.sleep(rng.uniform(0.5, 0.9) * took)  # the server's part comes last
            kill(child, kind)
            try:
                Store(place.driver()).close()  # at once, before anything else
            except LockedError as exc:
                problems.append(f"round {r}: reopening right after the kill failed: {exc}")
            fresh = child.acks()
            ledger.add(fresh)
            verify_after_kill(place, ledger, fresh, f"{kind} at-once kill {r}")
            final_reopen(place, ledger, f"{kind} at-once kill {r}")
            problems.extend(ledger.problems)
        finish_scenario(kind, "at_once", problems)

    def test_killed_during_first_open(
        self, kind: str, tmp_path: Path, places: list[SqlBackend]
    ) -> None:
        """A child creates one new log after another (the first open creates the file or
        the table), killed at random: every log it started opens again and works."""
        rng = rng_for(kind, "first_open")
        encode = Store(Memory()).codec.encode
        problems: list[str] = []
        for r in range(ROUNDS["first_open"]):
            directory = tmp_path / f"r{r}"
            directory.mkdir()
            base = f"co{uuid.uuid4().hex[:10]}"
            if kind == "sqlite":
                template = {"kind": "sqlite", "path": str(directory / "log-{i}.sqlite3")}
            else:
                template = {
                    "kind": "postgresql",
                    "conninfo": child_conninfo(),
                    "prefix": base + "_{i}",
                }
                places.append(sql_place(kind, directory, prefix=base))  # cleans up base_*
            child = Child("opener.py", {"locations": template}, tmp_path / f"stderr-{r}.txt")
            child.wait_marker("ready")
            time.sleep(rng.uniform(0.0, 0.3))  # let it open a random number of logs
            kill(child, kind)
            started = child.count("opening")
            during = started > child.count("opened")
            TALLY.moments[f"{kind}:first_open:{'during' if during else 'after'} open"] += 1
            acks = child.acks()
            for i in range(started):
                place = sql_place(
                    kind, directory, filename=f"log-{i}.sqlite3", prefix=f"{base}_{i}"
                )
                ledger = Ledger(kind, TALLY)
                mine = [ack for ack in acks if ack.hex == encode(i).hex()]  # log i holds i
                ledger.add(mine)
                label = f"{kind} open kill {r} log {i}"
                if i >= started - 2:  # the logs the kill may have caught: reopen, write
                    verify_after_kill(place, ledger, mine, label)
                    final_reopen(place, ledger, label)
                elif mine:
                    ledger.check_rows(place.rows(), label)
                else:
                    problems.append(f"{label}: log {i} was closed but reported no write")
                problems.extend(ledger.problems)
        finish_scenario(kind, "first_open", problems)


@pytest.mark.slow
def test_totals() -> None:
    """No acknowledged write was lost anywhere; each backend that ran every scenario was
    killed at least 50 times."""
    assert sum(TALLY.lost.values()) == 0, TALLY.as_dict()
    for kind in BACKENDS:
        if all((kind, scenario) in TALLY.scenarios for scenario in ROUNDS):
            assert TALLY.kills[kind] >= 50, TALLY.as_dict()
    print(json.dumps(TALLY.as_dict(), indent=2))
