"""Several processes opening one fresh table in shared mode at the same moment.

Single-writer mode takes the writer lock before creating the table, so only one
process ever creates it; shared mode lets every writer in at once, and each of them
finds the table missing.  Here K real processes, released together by a barrier, open
the same fresh table (a new file for SQLite) in each of several rounds, write a few
values and close (in one round in four the table exists already and they race to add
its replace index); read-only opens race with them.  Every writer must succeed, the
table must end up with exactly the right indexes, and a fresh Store must hold exactly
what was written.  No sleeps: the barrier releases the processes, and the waits are
bounds on a failure, not timings.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Sqlite3, Store
from appendmuch.drivers.layout import index_name
from appendmuch.errors import DatabaseError, RecoveryPendingError
from sharedlib import open_store, walk

#: writer processes per round (plus one read-only process)
WRITERS = 6
#: fresh tables the writers race to create, per backend
ROUNDS = 10
#: plain values each writer appends to its field ``x`` per round
VALUES = 3
#: bound on any wait for a child process (a failure, never a timing)
PATIENCE = 120.0
#: the replace field every writer sets twice (one row each must remain)
REPLACE = "r_last"
#: the replace index of the rounds that ask for one
SPECS = [(REPLACE, "w%")]


def _round_kwargs(number: int) -> dict[str, Any]:
    """Driver options of round ``number``: plain, with a tblextra, with replace indexes,
    or both, so that every variant of table creation is raced.  (In the rounds with
    both, the table exists already, without the index: see :func:`_prepare`.)"""
    kwargs: dict[str, Any] = {"shared": True}
    if number % 2:
        kwargs["replace_index_specs"] = SPECS
    if number % 4 >= 2:
        kwargs["tblextra"] = "_x"
    return kwargs


def _location(kind: str, base: dict[str, Any], number: int) -> dict[str, Any]:
    """Round ``number``'s fresh log: a new SQLite file, or a new PostgreSQL prefix."""
    if kind == "sqlite":
        return {"kind": "sqlite", "path": f"{base['dir']}/round{number}.sqlite3"}
    return {**base, "prefix": f"{base['prefix']}r{number}"}


def _write_round(index: int, location: dict[str, Any], number: int) -> list[Any]:
    """One writer's work in one round: open, write, close; what it wrote."""
    store = open_store(location, **_round_kwargs(number))
    try:
        node = store.storage("w", f"p{index}")
        written = []
        for i in range(VALUES):
            value = number * 1000 + index * 10 + i
            node.x = value
            written.append(value)
        node.r_last = -1
        node.r_last = index
    finally:
        store.close()
    return written


def _read_round(location: dict[str, Any], number: int, finished: Any) -> list[Any]:
    """The read-only opens racing the writers (in shared mode, following them, every
    third round): tried again while there is nothing to read yet and some writer of the
    round has not finished; how often there was nothing, and what the first open that
    succeeded saw."""
    kwargs = _round_kwargs(number)
    kwargs["shared"] = number % 3 == 0
    absent = 0
    while True:
        last = finished.value >= (number + 1) * WRITERS  # every writer is done
        try:
            store = open_store(location, read_only=True, **kwargs)
        except DatabaseError as exc:
            text = str(exc)
            # the only sane failure: nothing to read yet (no file, or no table in it)
            if not last and ("no SQLite database" in text or "there is no table" in text):
                absent += 1
                continue
            raise
        break
    try:
        seen = sorted(
            (namespace, field, value.data)
            for namespace, field, values in walk(store.cache)
            for value in values
        )
    finally:
        store.close()
    return ["read", absent, seen]


def _child(
    index: int,
    kind: str,
    base: dict[str, Any],
    barrier: Any,
    finished: Any,
    results: Any,
) -> None:
    """A child process: every round, wait at the barrier, then open and write (or, as the
    last index, open read-only); report each round's outcome."""
    for number in range(ROUNDS):
        try:
            barrier.wait(PATIENCE)
        except threading.BrokenBarrierError:
            results.put((index, number, "error", "the barrier broke"))
            return
        location = _location(kind, base, number)
        try:
            if index == WRITERS:
                outcome = _read_round(location, number, finished)
            else:
                outcome = ["wrote", _write_round(index, location, number)]
        except Exception as exc:  # reported, and the next round goes on
            outcome = ["error", f"{type(exc).__name__}: {exc}"]
        if index < WRITERS:
            with finished.get_lock():
                finished.value += 1
        results.put((index, number, *outcome))


def _prepare(kind: str, base: dict[str, Any]) -> None:
    """Create the table of every fourth round beforehand, without its replace index:
    there the writers race to add the index to a table that exists."""
    for number in range(3, ROUNDS, 4):
        kwargs = _round_kwargs(number)
        del kwargs["shared"], kwargs["replace_index_specs"]
        open_store(_location(kind, base, number), **kwargs).close()


def _race(kind: str, base: dict[str, Any]) -> dict[tuple[int, int], list[Any]]:
    """Run every round with WRITERS + 1 spawned processes; outcome by (index, round)."""
    _prepare(kind, base)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS + 1)
    finished = ctx.Value("i", 0)  # writer rounds done, over all rounds
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(index, kind, base, barrier, finished, results))
        for index in range(WRITERS + 1)
    ]
    for proc in procs:
        proc.start()
    outcomes: dict[tuple[int, int], list[Any]] = {}
    try:
        while len(outcomes) < (WRITERS + 1) * ROUNDS:
            try:
                index, number, *outcome = results.get(timeout=PATIENCE)
            except queue.Empty:
                break
            outcomes[index, number] = outcome
    finally:
        for proc in procs:
            proc.join(PATIENCE)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return outcomes


def _check(kind: str, base: dict[str, Any], outcomes: dict[tuple[int, int], list[Any]]) -> None:
    failures = [
        f"round {number}, process {index}: {outcome[1:]}"
        for (index, number), outcome in sorted(outcomes.items())
        if outcome[0] == "error"
    ]
    missing = (WRITERS + 1) * ROUNDS - len(outcomes)
    assert not failures and not missing, (
        f"{len(failures)} of {(WRITERS + 1) * ROUNDS} opens failed, {missing} never "
        "reported:\n" + "\n".join(failures)
    )
    for number in range(ROUNDS):
        location = _location(kind, base, number)
        kwargs = _round_kwargs(number)
        del kwargs["shared"]
        expected = []
        for index in range(WRITERS):
            outcome = outcomes[index, number]
            assert outcome[0] == "wrote"
            expected += [(("w", f"p{index}"), "x", value) for value in outcome[1]]
            expected.append((("w", f"p{index}"), REPLACE, index))
        store = open_store(location, read_only=True, **kwargs)
        try:
            held = sorted(
                (namespace, field, value.data)
                for namespace, field, values in walk(store.cache)
                for value in values
            )
            assert held == sorted(expected), f"round {number}"
            seqs = [value.seq for _, _, values in walk(store.cache) for value in values]
            assert len(set(seqs)) == len(seqs), f"round {number}: a seq twice"
            _check_indexes(store, number)
        finally:
            store.close()
        seen = outcomes[WRITERS, number][2]  # ["read", times there was nothing, seen]
        # a consistent part of the log: nothing the log does not hold
        assert not set(map(_key, seen)) - set(map(_key, expected)), f"round {number}"


def _key(entry: Any) -> tuple[Any, ...]:
    namespace, field, value = entry
    return (tuple(namespace), field, value)


def _check_indexes(store: Store, number: int) -> None:
    """The table has its seq and id constraints and the replace index, if asked for."""
    driver = store.driver
    table = driver.table  # type: ignore[attr-defined]
    wanted = {index_name(table, field, like) for field, like in SPECS} if number % 2 else set()
    if isinstance(driver, Sqlite3):
        rows = driver.connection.execute(f'PRAGMA index_list("{table}")').fetchall()
        names = {row[1] for row in rows}
        uniques = {row[1] for row in rows if row[2]}
        extra = {name for name in names if not name.startswith("sqlite_autoindex_")}
        assert extra == wanted, f"round {number}: indexes {sorted(names)}"
        assert len(uniques) == len(names), f"round {number}: {rows}"
        return
    import psycopg

    with psycopg.connect(driver.conninfo, autocommit=True) as conn:  # type: ignore[attr-defined]
        names = {
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = %s",
                (table,),
            )
        }
    assert names == {f"{table}_pkey", f"{table}_seq_key", *wanted}, f"round {number}"


def test_sqlite_first_open_by_many_processes(tmp_path: Path) -> None:
    """K processes create one fresh SQLite file and table at once, ROUNDS times."""
    base = {"dir": str(tmp_path)}
    _check("sqlite", base, _race("sqlite", base))


def test_postgresql_first_open_by_many_processes() -> None:
    """K processes create one fresh PostgreSQL table at once, ROUNDS times."""
    from backends import PostgresBackend, pg_conninfo

    backend = PostgresBackend(pg_conninfo())
    base = {"kind": "postgresql", "conninfo": backend.conninfo, "prefix": backend.prefix}
    try:
        _check("postgresql", base, _race("postgresql", base))
    finally:
        backend.cleanup()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])


class _RefusedAfterAnotherJoined(Sqlite3):
    """A shared-mode driver whose open fails after connecting (as a pending recovery
    file makes it fail), just after another shared writer joined the file it created."""

    other: Store | None = None

    def _refuse_if_recovery_pending(self) -> None:
        self.other = Store(Sqlite3(self.database, shared=True))
        raise RecoveryPendingError("refused for the test", recovery_files=[])


def test_a_failed_shared_open_keeps_the_file_another_writer_uses(tmp_path: Path) -> None:
    """A failed first open removes the file it created only in single-writer mode: in
    shared mode another writer may already be writing to it."""
    path = tmp_path / "new.sqlite3"
    driver = _RefusedAfterAnotherJoined(path, shared=True)
    with pytest.raises(RecoveryPendingError):
        Store(driver)
    other = driver.other
    assert other is not None
    other.storage("a").x = 1
    other.close()
    reader = Store(Sqlite3(path, read_only=True))
    assert reader.storage("a").x == 1
    reader.close()
