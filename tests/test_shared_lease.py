"""The shared-mode write lease: ``lease_timeout``, and a lease given back after it.

The lease is held the way another writer holds it: an exclusive ``flock`` on the
table's ``.lease`` file (SQLite) or the table's advisory lock taken by another session
(PostgreSQL), both on the real file or server.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Store
from appendmuch.errors import LockedError
from backends import FACTORIES, Backend, PostgresBackend

PLACES = ["sqlite", "postgresql"]


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = FACTORIES[request.param](tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def shared(place: Backend, **kwargs: Any) -> Store:
    return Store(place.driver(shared=True, **kwargs))


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


@pytest.mark.parametrize("first_write", [True, False], ids=["first-write", "later-write"])
def test_a_write_gives_up_after_lease_timeout_and_changes_nothing(
    place: Backend, first_write: bool
) -> None:
    store = shared(place, lease_timeout=0.3)
    try:
        k = store.storage("k")
        if not first_write:
            k.x = 1
            store.flush()  # (the lease is given back)
        before = [v.data for v in k.__history__().get("x", [])]
        with lease_held_elsewhere(place, store):
            with pytest.raises(LockedError, match=r"write lease of .* within 0\.3 s") as info:
                k.x = 2
            assert "nothing was written" in str(info.value)
            assert [v.data for v in k.__history__().get("x", [])] == before
            assert store.driver.pending == 0
        k.x = 3  # the lease is free again: writing goes on
        store.flush()
        assert [v.data for v in k.__history__()["x"]] == [*before, 3]
    finally:
        store.close()
    with Store(place.driver(read_only=True)) as reader:
        assert [v.data for v in reader.storage("k").__history__()["x"]] == [*before, 3]


def test_a_timed_out_wait_leaves_the_lease_to_the_others(place: Backend) -> None:
    """The lease a given-up wait is granted later is given back at once."""
    a = shared(place, lease_timeout=0.3)
    b = shared(place, lease_timeout=30)
    try:
        a.storage("k").x = 1
        a.flush()
        with lease_held_elsewhere(place, a):
            with pytest.raises(LockedError):
                a.storage("k").x = 2
        b.storage("k").x = 3  # would time out (30 s) if a's abandoned wait kept it
        b.flush()
        a.storage("k").x = 4
        a.flush()
        b.sync()
        assert [v.data for v in b.storage("k").__history__()["x"]] == [1, 3, 4]
    finally:
        a.close()
        b.close()


def test_a_write_waiting_for_the_lease_when_the_store_closes_leaves_it_free(
    place: Backend,
) -> None:
    """The lease granted to a wait that outlived its Store is given back at once."""
    import threading

    store = shared(place, lease_timeout=30)
    k = store.storage("k")
    k.x = 1
    store.flush()
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            k.x = 2
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with lease_held_elsewhere(place, store):
        writer = threading.Thread(target=write)
        writer.start()
        store.close()
    writer.join(60)
    assert not writer.is_alive()
    other = shared(place, lease_timeout=5)  # would time out if the lease stayed held
    try:
        other.storage("k").x = 3
        other.flush()
        assert [v.data for v in other.storage("k").__history__()["x"]][-1] == 3
    finally:
        other.close()
    (result,) = outcome
    print("OUTCOME", repr(result))
    # the write either came first (and was written) or was refused as closed
    assert result is None or "closed" in str(result), result


def test_writing_to_a_closed_shared_store_raises_closed_error(place: Backend) -> None:
    from appendmuch.errors import ClosedError

    store = shared(place)
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
    """Taking in others' rows decodes ints on a fast path; bytes that are not JSON still
    raise the codec's DecodeError naming the row (not the JSON parser's own error)."""
    from appendmuch.errors import DecodeError

    store = shared(place)
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
        with pytest.raises(DecodeError, match=rf"seq {row[0]}.*'y'"):
            store.sync()
    finally:
        store.close()
