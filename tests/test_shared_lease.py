"""The shared-mode write lease: ``lease_timeout``, and a lease given back after it.

The lease is held the way another writer holds it: an exclusive ``flock`` on the
table's ``.lease`` file (SQLite) or the table's advisory lock taken by another session
(PostgreSQL), both on the real file or server.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from typing import Any

import pytest

from appendmuch import Store
from appendmuch.errors import LockedError
from backends import Backend, PostgresBackend


@contextlib.contextmanager
def lease_held_elsewhere(place: Backend, store: Store) -> Iterator[None]:
    """Hold ``store``'s table's write lease from outside ``store``."""
    driver: Any = store.driver
    driver.ensure()
    if isinstance(place, PostgresBackend):
        import psycopg

        with psycopg.connect(place.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (driver._lease_key,))
            yield
            conn.execute("SELECT pg_advisory_unlock(%s)", (driver._lease_key,))
    else:
        with open(driver.lock_path[: -len(".lock")] + ".lease", "a+b") as lease:
            fcntl.flock(lease.fileno(), fcntl.LOCK_EX)
            yield


def test_lease_timeout_must_be_positive(place: Backend) -> None:
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="lease_timeout must be positive"):
            place.driver(shared=True, lease_timeout=bad)


@pytest.mark.parametrize("write_through", [False, True], ids=["batched", "write_through"])
def test_a_commit_gives_up_after_lease_timeout_and_loses_nothing(
    place: Backend, write_through: bool
) -> None:
    """Another process holds the lease too long: the flush (or the write_through
    assignment) waiting to commit raises LockedError after ``lease_timeout``; the write
    stays queued (read back, not lost) and is committed once the lease is free."""
    store = Store(place.driver(shared=True, lease_timeout=0.3, write_through=write_through))
    try:
        k = store.storage("k")
        k.x = 1
        store.flush()
        with lease_held_elsewhere(place, store):
            with pytest.raises(LockedError, match=r"write lease of .* within 0\.3 s") as info:
                k.x = 2
                store.flush()
            assert "nothing was written" in str(info.value)
            assert k.x == 2 and store.driver.pending == 1
        k.x = 3  # the lease is free again: writing goes on
        store.flush()
        assert [v.data for v in k.__history__()["x"]] == [1, 2, 3]
    finally:
        store.close()
    with Store(place.driver(read_only=True)) as reader:
        assert [v.data for v in reader.storage("k").__history__()["x"]] == [1, 2, 3]


def test_a_timed_out_wait_leaves_the_lease_to_the_others(place: Backend) -> None:
    """A commit that gave up waiting keeps no lease: the others write on."""
    a = Store(place.driver(shared=True, lease_timeout=0.3))
    b = Store(place.driver(shared=True, lease_timeout=30))
    try:
        a.storage("k").x = 1
        a.flush()
        with lease_held_elsewhere(place, a):
            a.storage("k").x = 2
            with pytest.raises(LockedError):
                a.flush()
        b.storage("k").x = 3
        b.flush()  # would time out (30 s) if a's abandoned wait kept the lease
        a.storage("k").x = 4
        a.flush()
        b.sync()
        assert [v.data for v in b.storage("k").__history__()["x"]] == [1, 3, 2, 4]
    finally:
        a.close()
        b.close()


def test_closing_while_the_lease_is_held_elsewhere_waits_and_commits(place: Backend) -> None:
    """close() while another process holds the lease waits for it (up to
    ``lease_timeout``), commits what is queued, and leaves the lease free."""
    import threading

    store = Store(place.driver(shared=True, lease_timeout=30))
    k = store.storage("k")
    k.x = 1
    store.flush()
    outcome: list[BaseException | None] = []

    def close() -> None:
        try:
            store.close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with lease_held_elsewhere(place, store):
        k.x = 2
        closer = threading.Thread(target=close)
        closer.start()
        _wait_for_lease_wait(place)
    closer.join(60)
    assert not closer.is_alive() and outcome == [None], outcome
    # would time out if the lease stayed held
    other = Store(place.driver(shared=True, lease_timeout=5))
    try:
        other.storage("k").x = 3
        other.flush()
        assert [v.data for v in other.storage("k").__history__()["x"]] == [1, 2, 3]
    finally:
        other.close()


def _wait_for_lease_wait(place: Backend) -> None:
    """Return once a process waits for the lease (a blocked lock, seen from outside)."""
    import threading
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if isinstance(place, PostgresBackend):
            import psycopg

            with psycopg.connect(place.conninfo, autocommit=True) as conn:
                (waiting,) = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()
        else:
            with open("/proc/locks") as locks:
                waiting = sum("->" in line for line in locks)
        if waiting:
            return
        threading.Event().wait(0.01)  # polling a condition, not sleeping over a race
    raise AssertionError("nobody waited for the lease")


def test_writing_to_a_closed_shared_store_raises_closed_error(place: Backend) -> None:
    from appendmuch.errors import ClosedError

    store = Store(place.driver(shared=True))
    k = store.storage("k")
    k.x = 1
    store.close()
    with pytest.raises(ClosedError, match="closed"):
        k.x = 2
    with pytest.raises(ClosedError, match="closed"):
        del k.x
    assert [v.data for v in k.__history__()["x"]] == [1]


def test_a_row_of_another_writer_that_is_not_json_raises_decode_error_naming_it(
    place: Backend,
) -> None:
    """A row of another writer whose bytes are not a value is taken in as it is: the
    follower goes on, and reading that field raises the codec's DecodeError naming the
    row (not the JSON parser's own error)."""
    from appendmuch.errors import DecodeError

    store = Store(place.driver(shared=True))
    try:
        store.storage("k").x = 1
        store.flush()
        driver: Any = store.driver
        row = (driver.last_seq + 1, "k", "y", b"\x00{", 1.0, "hand:1")
        insert = (
            f'INSERT INTO "{driver.table}" (seq, namespace, field, value, created_at, '
            "context) VALUES ({0}, {0}, {0}, {0}, {0}, {0})"
        )
        if isinstance(place, PostgresBackend):
            import psycopg

            with psycopg.connect(place.conninfo, autocommit=True) as conn:
                conn.execute(insert.format("%s"), row)
        else:
            import sqlite3

            conn = sqlite3.connect(driver.database)
            with conn:
                conn.execute(insert.format("?"), row)
            conn.close()
        store.sync()
        with pytest.raises(DecodeError, match=rf"seq {row[0]}.*'y'"):
            store.storage("k").y
        assert store.storage("k").x == 1
    finally:
        store.close()
