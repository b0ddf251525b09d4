"""Turns on the write lease under load (shared mode, real processes on the real file or
server): writers in tight loops fill their queues far faster than any database takes
rows, and still nobody waits long for the lease, because a round commits at most
``ROUND_ROWS`` rows and a writer with a backlog waits for its own commits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appendmuch.drivers.sharing import ROUND_ROWS
from backends import SqlBackend
from helpers import wait_for
from sharedlib import Peers

BUSY = 3


@pytest.fixture
def peers(place: SqlBackend, tmp_path: Path) -> Iterator[Peers]:
    with Peers(place, tmp_path, "appendmuch-turns") as made:
        yield made


@pytest.mark.slow
def test_an_occasional_writer_gets_its_turns_beside_busy_ones(
    place: SqlBackend, peers: Peers
) -> None:
    """Three peers assign in tight loops; a ``write_through`` writer beside them commits
    each of its writes within ``lease_timeout`` (5 s).  When a round committed a whole
    queue, the busy writers' rounds grew with their queues and this writer gave up
    with ``LockedError`` after waiting behind them.  The busy writers' rows keep
    arriving meanwhile (they are slowed, not stopped)."""
    store = place.open(shared=True, write_through=True, lease_timeout=5.0)
    try:
        for number in range(BUSY):
            peers.start(shared=True).begin("spam", ns=["busy", f"p{number}"], times=10**7)
        busy = [store.storage("busy", f"p{number}") for number in range(BUSY)]

        def all_writing(least: int) -> bool:
            store.sync()
            return all((p.get("x") or 0) >= least for p in busy)

        wait_for(lambda: all_writing(2 * ROUND_ROWS), "every busy writer's rows")
        before = [p.x for p in busy]
        occasional = store.storage("occasional")
        slowest = 0.0
        for i in range(30):
            started = time.monotonic()
            occasional.x = i  # LockedError if it could not take the lease in 5 s
            slowest = max(slowest, time.monotonic() - started)
        assert occasional.x == 29
        store.sync()
        assert all(p.x > seen for p, seen in zip(busy, before, strict=True)), before
        assert slowest < 5.0, slowest
    finally:
        store.close()
