"""``on_change`` in shared mode is a cursor-safe stream.

In every process every entry is reported exactly once, under its final seq, in
increasing seq order: its own writes (once committed) and everyone else's, also when
commits fail, connections are terminated and the server restarts.  A browser push
stream that uses the seq as its cursor then never skips or repeats a change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backends import PostgresBackend, SqlBackend
from pgserver import TempCluster
from sharedlib import PATIENCE, Peers

WRITERS = 4
WRITES = 1_500


@pytest.fixture
def place(private_cluster: TempCluster, tmp_path: Path) -> Iterator[PostgresBackend]:
    """A table on a server of this test's own (it is restarted)."""
    made = PostgresBackend(private_cluster.conninfo)
    try:
        yield made
    finally:
        made.cleanup()


def _terminate(conninfo: str) -> int:
    """End every session of the peers (their writer and listener connections)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'appendmuch-stream-%'"
        ).fetchall()
    return len(rows)


def test_each_process_hears_every_entry_once_in_seq_order(
    place: SqlBackend, private_cluster: TempCluster, tmp_path: Path
) -> None:
    peers = Peers(place, tmp_path, "appendmuch-stream", shared=True)
    done = threading.Event()
    chaotic: threading.Thread | None = None
    try:
        workers = [peers.start() for _ in range(WRITERS)]
        starts = [worker.ready_seq for worker in workers]
        for i, worker in enumerate(workers):
            worker.begin("spam", ns=["s", f"w{i}"], times=WRITES, through_outages=True)

        def chaos() -> None:
            # connections ended again and again, then the server restarted
            for _ in range(5):
                if done.wait(0.1):
                    return
                _terminate(place.conninfo)
            private_cluster.halt()
            done.wait(0.3)
            private_cluster.resume()
            for _ in range(3):
                if done.wait(0.1):
                    return
                _terminate(place.conninfo)

        chaotic = threading.Thread(target=chaos)
        chaotic.start()
        for worker in workers:
            worker.end()
        chaotic.join(PATIENCE)
        done.set()
        deadline = time.monotonic() + PATIENCE
        for worker in workers:
            while True:  # (a flush meeting the server gone fails; the rows stay queued)
                reply = worker.send("flush")
                if "ok" in reply:
                    break
                assert time.monotonic() < deadline, reply
        for worker in workers:
            worker("sync")
        table = [row[0] for row in place.rows()]
        assert len(table) == WRITERS * WRITES == len(set(table))
        for worker, start in zip(workers, starts, strict=True):
            seen = worker("seen")
            assert seen == sorted(set(seen)), "reported twice, or out of seq order"
            assert seen == [seq for seq in table if seq > start], "an entry never reported"
        for worker in workers:
            worker.close()
    finally:
        done.set()  # (a failed assertion must not leave the chaos running on a removed server)
        if chaotic is not None:
            chaotic.join(PATIENCE)
        peers.kill()
