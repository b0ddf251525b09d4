"""Shared mode (several writers on one table): catch-up, conflicts, mode locks, info.

Stores with drivers of their own stand for processes (each driver has its own
connections, lock file handles and follower thread); the tests marked "processes"
run real child processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from appendmuch import (
    ConflictError,
    Memory,
    Sqlite3,
    Store,
    retry_on_conflict,
)
from appendmuch.errors import AppendmuchError, LockedError, ReadOnlyError, WriteError
from backends import Backend, PostgresBackend, SqliteBackend
from helpers import wait_for


def history(store: Store) -> list[tuple[Any, ...]]:
    """Every entry of the cache as (seq, namespace, field, data, unavailable)."""
    entries = []
    for dbns, node in store.by_dbns.items():
        for field, log in node.items():
            if not isinstance(log, dict):
                entries.extend((v.seq, dbns, field, v.data, v.unavailable) for v in log)
    return sorted(entries)


class Arrivals:
    """on_change recorder that can wait (without sleeping) for a seq to arrive."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, namespace: tuple[str, ...], field: str, value: Any) -> None:
        with self._cond:
            self.seqs.append(value.seq)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, seq: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: seq in self.seqs, timeout=30), (
                f"seq {seq} never arrived; got {self.seqs}"
            )


# ---------------------------------------------------------------------- public names


def test_conflict_error_is_exported_and_is_an_appendmuch_runtime_error() -> None:
    import appendmuch
    import appendmuch.errors

    assert appendmuch.ConflictError is appendmuch.errors.ConflictError
    assert issubclass(ConflictError, AppendmuchError)
    assert issubclass(ConflictError, RuntimeError)


def test_shared_must_be_a_bool_and_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="shared"):
        Sqlite3(tmp_path / "x.sqlite3", shared=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="database file"):
        Sqlite3(":memory:", shared=True)


def test_follow_interval_must_be_positive_and_is_used(tmp_path: Path) -> None:
    """SQLite's check for other writers' commits runs every ``follow_interval``
    seconds: a bad one is refused before anything is created; a chosen one delivers."""
    path = tmp_path / "x.sqlite3"
    for bad in (0, -0.5):
        with pytest.raises(ValueError, match="follow_interval must be positive"):
            Sqlite3(path, shared=True, follow_interval=bad)
    assert not path.exists()
    arrivals = Arrivals()
    a = Store(Sqlite3(path, shared=True))
    b = Store(Sqlite3(path, shared=True, follow_interval=0.05), on_change=arrivals)
    try:
        assert b.driver.follow_interval == 0.05
        a.storage("p").x = 7
        a.flush()
        arrivals.wait_for(a.driver.last_seq)  # (no sync(): b's follower found it)
        assert b.storage("p").x == 7
    finally:
        a.close()
        b.close()


def test_sync_returns_at_once_without_shared_mode(tmp_path: Path) -> None:
    for driver in (Memory(), Sqlite3(tmp_path / "single.sqlite3")):
        store = Store(driver)
        store.storage("a").x = 1
        store.sync()
        assert store.storage("a").x == 1
        store.close()


# ---------------------------------------------------------------------- retry helper


def test_retry_on_conflict_reruns_until_it_succeeds() -> None:
    calls = []

    @retry_on_conflict
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConflictError("newer write")
        return "done"

    assert flaky() == "done"
    assert len(calls) == 3


def test_retry_on_conflict_reraises_after_its_attempts() -> None:
    calls = []

    @retry_on_conflict(attempts=4)
    def always() -> None:
        calls.append(1)
        raise ConflictError("newer write")

    with pytest.raises(ConflictError):
        always()
    assert len(calls) == 4


def test_retry_on_conflict_lets_other_errors_through_and_checks_attempts() -> None:
    @retry_on_conflict
    def broken() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        broken()
    with pytest.raises(ValueError, match="attempts"):
        retry_on_conflict(attempts=0)


# ---------------------------------------------------------------------- catching up


def test_sync_brings_in_what_another_writer_committed(place: Backend) -> None:
    a, b = place.shared(), place.shared()
    try:
        a.storage("game").round = 1
        a.flush()
        b.sync()
        assert b.storage("game").round == 1
        b.storage("game").round = 2
        b.flush()
        a.sync()
        assert a.storage("game").round == 2
    finally:
        a.close()
        b.close()


def test_others_writes_arrive_by_themselves_through_on_change(place: Backend) -> None:
    arrivals = Arrivals()
    a, b = place.shared(), place.shared(on_change=arrivals)
    try:
        a.storage("p").x = 7
        seq = a.driver.last_seq
        a.flush()
        arrivals.wait_for(seq + 1)  # no sync(): the engine's thread delivered it
        assert b.storage("p").x == 7
        assert any("appendmuch-shared" in name for name in arrivals.threads)
    finally:
        a.close()
        b.close()


def test_a_held_storage_reads_the_value_another_writer_delivered(place: Backend) -> None:
    arrivals = Arrivals()
    a, b = place.shared(), place.shared(on_change=arrivals)
    try:
        pa, pb = a.storage("h"), b.storage("h")
        pa.score = 1
        a.flush()
        arrivals.wait_for(a.driver.last_seq)
        assert pb.score == 1  # now cached in the namespace's read dict
        pa.score = 2
        a.flush()
        arrivals.wait_for(a.driver.last_seq)
        assert pb.score == 2
        del pa.score
        a.flush()
        arrivals.wait_for(a.driver.last_seq)
        assert pb.get("score") is None
    finally:
        a.close()
        b.close()


def test_a_read_only_shared_open_follows_the_writers(place: Backend) -> None:
    arrivals = Arrivals()
    writer = place.shared()
    writer.storage("a").x = 1
    writer.flush()
    reader = Store(place.driver(read_only=True, shared=True), on_change=arrivals)
    try:
        assert reader.storage("a").x == 1
        writer.storage("a").x = 2
        writer.flush()
        arrivals.wait_for(writer.driver.last_seq)
        assert reader.storage("a").x == 2
        writer.storage("a").x = 3
        writer.flush()
        reader.sync()
        assert reader.storage("a").x == 3
        with pytest.raises(ReadOnlyError):
            reader.storage("a").x = 4
    finally:
        reader.close()
        writer.close()


def test_seqs_follow_commit_order_and_every_writer_holds_one_history(place: Backend) -> None:
    stores = [place.shared() for _ in range(3)]
    try:
        for i in range(30):
            writer = stores[i % 3]
            writer.storage("log", f"w{i % 3}").n = i
            writer.storage("log").last = i
            if i % 4 == 0:
                del writer.storage("log").last
            writer.flush()
        for store in stores:
            store.sync()
        first = history(stores[0])
        seqs = [entry[0] for entry in first]
        assert seqs == sorted(set(seqs))
        assert len(first) == 30 + 30 + 8
        for store in stores[1:]:
            assert history(store) == first
        assert [row[0] for row in place.raw_rows()] == seqs
    finally:
        for store in stores:
            store.close()


def test_on_change_sees_every_entry_in_seq_order(place: Backend) -> None:
    seen_a, seen_b = Arrivals(), Arrivals()
    a, b = place.shared(on_change=seen_a), place.shared(on_change=seen_b)
    try:
        for i in range(20):
            (a if i % 3 else b).storage("n").v = i
            if i % 5 == 0:
                a.flush()
                b.flush()
        a.flush()
        b.flush()
        a.sync()
        b.sync()
        everything = [row[0] for row in place.raw_rows()]
        assert seen_a.seqs == everything
        assert seen_b.seqs == everything
    finally:
        a.close()
        b.close()


def test_a_write_never_waits_for_another_writer(place: Backend) -> None:
    """While another writer holds the lease, an assignment returns at once (read back at
    once); its commit waits, and then takes the next seq after the holder's rows."""
    a, b = place.shared(), place.shared()
    try:
        hold(a)
        try:
            b.storage("k").x = 2  # (returns although a holds the lease)
            assert b.storage("k").x == 2
            assert b.driver.pending == 1
        finally:
            give_back(a)
        b.flush()
        a.sync()
        assert a.storage("k").x == 2
        assert [row[2] for row in place.raw_rows()] == ["x"]
    finally:
        a.close()
        b.close()


def hold(store: Store) -> None:
    """Take ``store``'s write lease in its engine thread and keep it (others wait)."""
    driver: Any = store.driver
    driver.in_writer(lambda: driver.lease_take(driver.sharing.hwm))


def give_back(store: Store) -> None:
    driver: Any = store.driver
    driver.in_writer(driver.lease_give_back)


def test_replaced_field_keeps_one_row_whoever_writes_it(place: Backend) -> None:
    def latest_only(dbns: str, field: str) -> bool:
        return field == "status"

    a = place.shared(replace_predicate=latest_only)
    b = place.shared(replace_predicate=latest_only)
    try:
        for i in range(6):
            (a if i % 2 else b).storage("s").status = f"v{i}"
            (a if i % 2 else b).flush()
        a.sync()
        b.sync()
        rows = [row for row in place.raw_rows() if row[2] == "status"]
        assert len(rows) == 1
        assert len(a.storage("s").__history__()["status"]) == 1
        assert a.storage("s").status == b.storage("s").status == "v5"
    finally:
        a.close()
        b.close()


def test_deleting_what_another_writer_deleted_raises_and_appends_nothing(
    place: Backend,
) -> None:
    a, b = place.shared(), place.shared()
    try:
        a.storage("d").x = 1
        a.flush()
        b.sync()
        del a.storage("d").x
        a.flush()
        rows = len(place.raw_rows())
        # b's cache may still have it (the follower may not have delivered the
        # tombstone yet): then taking the lease catches b up and the delete is refused
        with pytest.raises(AttributeError, match="no field 'x' to delete"):
            del b.storage("d").x
        b.flush()
        assert len(place.raw_rows()) == rows
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------- conflicts


def test_with_block_over_a_newer_write_raises_conflict_and_writes_nothing(
    place: Backend,
) -> None:
    a, b = place.shared(), place.shared()
    try:
        pa, pb = a.storage("c"), b.storage("c")
        pa.items = [1]
        a.flush()
        b.sync()
        rows_before = len(place.raw_rows())
        with pytest.raises(ConflictError, match="'items'"), pa:
            pa.items.append(2)  # read at the old seq
            with pb:
                pb.items.append(3)
            b.flush()
        assert len(place.raw_rows()) == rows_before + 1  # b's write only
        with pa:
            assert pa.items == [1, 3]  # the working copy was dropped
    finally:
        a.close()
        b.close()


def test_a_block_that_read_a_field_another_writer_changed_conflicts(place: Backend) -> None:
    """Reading counts, changed or not: a block that read ``items`` and wrote ``other``
    may have written ``other`` because of what ``items`` held, so when another writer
    changed ``items`` meanwhile the block raises ConflictError and writes nothing.  A
    block that only reads never conflicts."""
    a, b = place.shared(), place.shared()
    try:
        pa, pb = a.storage("c"), b.storage("c")
        pa.items = [1]
        pa.other = {"k": 1}
        a.flush()
        b.sync()
        with pytest.raises(ConflictError, match="'items'"), pa:
            assert pa.items == [1]
            pa.other["k"] = 2
            pb.items = [9]
            b.flush()
            a.sync()
        with pa:  # reads only: no conflict whatever others write
            assert pa.items == [9]
            assert pa.other == {"k": 1}
            pb.items = [10]
            b.flush()
            a.sync()
        assert [row[2] for row in place.raw_rows()] == ["items", "other", "items", "items"]
    finally:
        a.close()
        b.close()


def test_retry_on_conflict_rereads_and_loses_no_increment(place: Backend) -> None:
    a, b = place.shared(), place.shared()
    try:
        pa, pb = a.storage("hot"), b.storage("hot")
        pa.counter = {"n": 0}
        a.flush()
        b.sync()
        attempts = []

        @retry_on_conflict
        def increment() -> None:
            attempts.append(1)
            with pa:
                pa.counter["n"] += 1
                if len(attempts) == 1:  # another writer gets in between, once
                    with pb:
                        pb.counter["n"] += 1
                    b.flush()

        increment()
        assert len(attempts) == 2
        a.flush()
        b.sync()
        with pb:
            assert pb.counter == {"n": 2}
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------- failures


def test_rows_of_a_failed_commit_are_renumbered_after_others_commits(
    place: Backend,
) -> None:
    """A commit fails (the table refuses one row) and stays queued; another writer
    commits meanwhile; the failed rows are committed later, after the other's rows
    under the next seqs, and both caches agree."""
    arrivals = Arrivals()
    a, b = place.shared(on_change=arrivals), place.shared()
    try:
        a.storage("r").base = 0
        a.flush()
        b.sync()
        _refuse_field(place, "mine")
        a.storage("r").mine = "a"
        with pytest.raises(WriteError):
            a.flush()  # nothing of the round is written; the row stays queued
        assert a.storage("r").mine == "a" and a.driver.pending == 1
        b.storage("r").theirs = "b"
        b.flush()
        _unrefuse_field(place)
        a.flush()  # catches up with b's row, commits its own after it
        b.sync()
        assert history(a) == history(b)
        rows = place.raw_rows()
        assert [row[2] for row in rows] == ["base", "theirs", "mine"]
        assert len({row[0] for row in rows}) == 3
        assert arrivals.seqs == [row[0] for row in rows]  # one report each, in seq order
    finally:
        _unrefuse_field(place)
        a.close()
        b.close()


def test_batches_refused_while_others_commit_end_up_written_once_in_one_order(
    place: Backend,
) -> None:
    """Batches fail (one row is refused) while later batches of the same writer, in
    flight with them, may commit: once the refusal ends, every row is stored exactly
    once, and both writers and the table hold one history."""
    a = Store(place.driver(shared=True, batch_size=5))
    b = place.shared()
    try:
        _refuse_field(place, "bad")
        for i in range(40):
            if i == 3:
                a.storage("q").bad = i
            else:
                a.storage("q", f"n{i}").v = i  # (never waits, never fails)
            if i == 20:
                b.storage("q").other = "b"  # another writer commits in between
                b.flush()
        with pytest.raises(WriteError):
            a.flush()
        assert a.driver.last_error is not None
        _unrefuse_field(place)
        with contextlib.suppress(WriteError):
            a.flush()  # a batch sent before the refusal ended may fail once more
        a.flush()
        b.sync()
        rows = place.raw_rows()
        fields = sorted((row[1], row[2]) for row in rows)
        expected = [("q", "bad"), ("q", "other")] + [("q/n" + str(i), "v") for i in range(40)]
        assert fields == sorted(p for p in expected if p != ("q/n3", "v"))
        assert len({row[0] for row in rows}) == len(rows)
        assert (
            history(a)
            == history(b)
            == sorted((row[0], row[1], row[2], a.codec.decode(row[3]), False) for row in rows)
        )
    finally:
        _unrefuse_field(place)
        a.close()
        b.close()


def test_rows_a_failed_close_saved_are_replayed_under_new_seqs(
    place: Backend, tmp_path: Path
) -> None:
    from appendmuch.recovery import replay

    saves = tmp_path / "saves"
    saves.mkdir()
    a = Store(place.driver(shared=True, recovery_dir=saves))
    b = place.shared()
    try:
        a.storage("r").base = 0
        a.flush()
        _refuse_field(place, "saved")
        a.storage("r").saved = "a"
        with pytest.raises(WriteError) as info:
            a.close()
        path = info.value.recovery_file
        assert path is not None
        _unrefuse_field(place)
        b.storage("r").other = "b"  # takes the seq the saved row had
        b.flush()
        driver = place.driver(shared=True, recovery_dir=saves)
        try:
            assert replay(path, driver) == 1
        finally:
            driver.close()
        b.sync()
        assert b.storage("r").saved == "a"
        rows = place.raw_rows()
        assert [row[2] for row in rows] == ["base", "other", "saved"]
        assert len({row[0] for row in rows}) == 3
    finally:
        _unrefuse_field(place)
        b.close()


def _refuse_field(place: Backend, field: str) -> None:
    """Make the database refuse rows of ``field`` (a real constraint, no mock)."""
    if isinstance(place, SqliteBackend):
        import sqlite3

        with sqlite3.connect(place.path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON appendmuch_values "
                f"WHEN NEW.field = '{field}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    else:
        import psycopg

        assert isinstance(place, PostgresBackend)
        with psycopg.connect(place.conninfo, autocommit=True) as conn:
            conn.execute(
                f"CREATE FUNCTION {place.prefix}_refuse() RETURNS trigger LANGUAGE plpgsql "
                f"AS $$ BEGIN IF NEW.field = '{field}' THEN RAISE EXCEPTION 'refused'; "
                "END IF; RETURN NEW; END $$"
            )
            conn.execute(
                f'CREATE TRIGGER refuse BEFORE INSERT ON "{place.prefix}_values" '
                f"FOR EACH ROW EXECUTE FUNCTION {place.prefix}_refuse()"
            )


def _unrefuse_field(place: Backend) -> None:
    if isinstance(place, SqliteBackend):
        import sqlite3

        with sqlite3.connect(place.path) as conn:
            conn.execute("DROP TRIGGER IF EXISTS refuse")
    else:
        import psycopg

        assert isinstance(place, PostgresBackend)
        with psycopg.connect(place.conninfo, autocommit=True) as conn:
            conn.execute(f'DROP TRIGGER IF EXISTS refuse ON "{place.prefix}_values"')
            conn.execute(f"DROP FUNCTION IF EXISTS {place.prefix}_refuse()")


def _break_commit(place: Backend, store: Store) -> None:
    """Make the next commit of ``store`` fail for real."""
    if isinstance(place, SqliteBackend):
        import sqlite3

        with sqlite3.connect(place.path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON appendmuch_values "
                "WHEN NEW.field = 'mine' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    else:
        import psycopg

        assert isinstance(place, PostgresBackend)
        pid = store.driver._writer.info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(place.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _unbreak_commit(place: Backend) -> None:
    if isinstance(place, SqliteBackend):
        import sqlite3

        with sqlite3.connect(place.path) as conn:
            conn.execute("DROP TRIGGER IF EXISTS refuse")


# ---------------------------------------------------------------------- modes


def test_single_writer_open_of_a_shared_table_is_refused_naming_shared_mode(
    place: Backend,
) -> None:
    a = place.shared()
    try:
        a.storage("x").y = 1
        a.flush()
        with pytest.raises(LockedError, match="shared"):
            Store(place.driver(lock_timeout=0.2) if _pg(place) else place.driver())
    finally:
        a.close()


def test_shared_open_of_a_single_writer_table_is_refused_naming_that_mode(
    place: Backend,
) -> None:
    single = Store(place.driver())
    try:
        kwargs: dict[str, Any] = {"lock_timeout": 0.2} if _pg(place) else {}
        with pytest.raises(LockedError, match="single-writer"):
            Store(place.driver(shared=True, **kwargs))
    finally:
        single.close()
    after = place.shared()  # once it is closed, shared writers may open
    after.close()


def _pg(place: Backend) -> bool:
    return isinstance(place, PostgresBackend)


def test_driver_reports_the_writers_attached(place: Backend) -> None:
    a, b = place.shared(), place.shared()
    try:
        assert a.driver.lock_holders() == ("shared", 2)  # type: ignore[attr-defined]
    finally:
        a.close()
        b.close()
    probe = place.driver(read_only=True) if _pg(place) else place.driver()
    try:
        assert probe.lock_holders() == ("none", 0)  # type: ignore[attr-defined]
    finally:
        probe.close()


def test_cli_info_says_the_table_is_shared_and_how_many_writers(
    place: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    from appendmuch.cli import main

    a, b = place.shared(), place.shared()
    try:
        a.storage("i").x = 1
        a.flush()
        if isinstance(place, SqliteBackend):
            args = ["info", "--json", str(place.path)]
        else:
            assert isinstance(place, PostgresBackend)
            from test_cli import pg_url

            args = ["info", "--json", pg_url(place.conninfo), "--table-prefix", place.prefix]
        assert main(args) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["writer_mode"] == "shared"
        assert info["writers"] == 2
        assert main([arg for arg in args if arg != "--json"]) == 0
        assert "shared (2 writers attached in shared mode)" in capsys.readouterr().out
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------- processes

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from appendmuch import PostgreSQL, Sqlite3, Store, retry_on_conflict

    kind, where, prefix, count, name = sys.argv[1:6]
    if kind == "sqlite":
        driver = Sqlite3(where, shared=True)
    else:
        driver = PostgreSQL(where, table_prefix=prefix, shared=True, min_size=1, max_size=2)
    store = Store(driver)
    hot = store.storage("hot")
    mine = store.storage("by", name)
    attempts = 0

    @retry_on_conflict(attempts=100000)
    def increment():
        global attempts
        attempts += 1
        with hot:
            hot.counter["n"] += 1

    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(int(count)):
        increment()
        mine.i = i
    store.flush()
    store.sync()
    print(json.dumps({"attempts": attempts, "last": store.driver.last_seq}), flush=True)
    store.close()
    """
)


def _child_args(place: Backend) -> list[str]:
    if isinstance(place, SqliteBackend):
        return ["sqlite", str(place.path), "-"]
    assert isinstance(place, PostgresBackend)
    return ["postgresql", place.conninfo, place.prefix]


def _spawn(tmp_path: Path, source: str, *args: str, name: str = "child") -> subprocess.Popen[str]:
    """Run ``source`` (saved as ``{name}.py``) in a child process with piped stdio."""
    script = tmp_path / f"{name}.py"
    if not script.exists():
        # (written once: rewriting it while an earlier child starts up would hand that
        # child a truncated script, which runs nothing and exits 0)
        script.write_text(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _ready(child: subprocess.Popen[str]) -> None:
    """Wait for the child's "ready" line; if it died instead, fail with its stderr."""
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != "ready":
        _, err = child.communicate(timeout=60)
        raise AssertionError(f"child said {line!r} (exit {child.returncode}):\n{err}")


def test_processes_increment_one_counter_without_losing_an_update(
    place: Backend, tmp_path: Path
) -> None:
    setup = place.shared()
    setup.storage("hot").counter = {"n": 0}
    setup.flush()
    children = [_spawn(tmp_path, CHILD, *_child_args(place), "60", f"c{k}") for k in range(3)]
    try:
        for child in children:
            _ready(child)
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        setup.sync()
        with setup.storage("hot") as hot:
            assert hot.counter == {"n": 180}
        rows = place.raw_rows()
        assert [row[0] for row in rows] == sorted({row[0] for row in rows})
        assert history(setup) == history(_fresh(place))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        setup.close()


def _fresh(place: Backend) -> Store:
    store = Store(place.driver(read_only=True))
    store.close()
    return store


#: the start of a child script: a shared-mode Store on the log _child_args names
OPEN_SHARED = textwrap.dedent(
    """
    import sys
    from appendmuch import PostgreSQL, Sqlite3, Store

    kind, where, prefix = sys.argv[1:4]
    if kind == "sqlite":
        driver = Sqlite3(where, shared=True)
    else:
        driver = PostgreSQL(where, table_prefix=prefix, shared=True, min_size=1, max_size=2)
    store = Store(driver)
    """
)
HOLDER = OPEN_SHARED + textwrap.dedent(
    """
    store.storage("victim").lost = "never committed"
    # the engine takes the lease and keeps it (as a round's commit would, killed then)
    driver.in_writer(lambda: driver.lease_take(driver.sharing.hwm))
    print("holding", flush=True)
    sys.stdin.readline()
    """
)


def test_a_writer_killed_while_holding_the_lease_loses_only_its_own_rows(
    place: Backend, tmp_path: Path
) -> None:
    survivor = place.shared()
    survivor.storage("s").before = 1
    survivor.flush()
    holder = _spawn(tmp_path, HOLDER, *_child_args(place), name="holder")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        survivor.storage("s").after = 2  # never waits
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        survivor.flush()  # waits for the lease the kill released
        fields = [row[2] for row in place.raw_rows()]
        assert fields == ["before", "after"]
        assert survivor.storage("s").after == 2
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        survivor.close()


WAITER = OPEN_SHARED + textwrap.dedent(
    """
    print("ready", flush=True)
    sys.stdin.readline()
    store.storage("waiter").x = 1
    try:
        store.flush()  # waits for the lease the test holds
    except KeyboardInterrupt:
        print("interrupted", driver.pending, flush=True)
    sys.stdin.readline()
    store.storage("waiter").x = 2
    store.flush()
    print("written", flush=True)
    store.close()
    """
)


def test_a_writer_interrupted_while_waiting_for_the_lease_does_not_keep_it(
    place: Backend, tmp_path: Path
) -> None:
    """Ctrl-C in flush() while another writer holds the lease: the flush gives up at
    once, the row stays queued and is committed once the lease is free, and the
    interrupted process keeps no lease (the holder writes on)."""
    holder = place.shared()
    holder.storage("h").x = 0
    holder.flush()
    waiter = _spawn(tmp_path, WAITER, *_child_args(place), name="waiter")
    try:
        assert waiter.stdout is not None and waiter.stdin is not None
        assert waiter.stdout.readline().strip() == "ready"
        hold(holder)
        try:
            waiter.stdin.write("write\n")
            waiter.stdin.flush()
            _wait_until_waiting(place, waiter.pid)
            waiter.send_signal(signal.SIGINT)
            assert waiter.stdout.readline().split() == ["interrupted", "1"]
        finally:
            give_back(holder)
        holder.storage("h").x = 2
        holder.flush()  # would wait for ever if the waiter kept the lease
        waiter.stdin.write("go\n")
        waiter.stdin.flush()
        assert waiter.stdout.readline().strip() == "written"
        assert waiter.wait(timeout=60) == 0
        fields = [(row[1], row[2]) for row in place.raw_rows()]
        assert fields.count(("waiter", "x")) == 2  # both: the first was queued, not lost
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        holder.close()


def _wait_until_waiting(place: Backend, pid: int) -> None:
    """Return once process ``pid`` waits for a lock (SQLite: a blocked flock in
    /proc/locks; PostgreSQL: an ungranted advisory lock)."""

    def waiting() -> bool:
        if isinstance(place, SqliteBackend):
            with open("/proc/locks") as locks:
                return any("->" in line and f" {pid} " in line for line in locks)
        import psycopg

        assert isinstance(place, PostgresBackend)
        with psycopg.connect(place.conninfo, autocommit=True) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
        return bool(count)

    wait_for(waiting, f"process {pid} to wait for the lease", 30, 0.01)
