"""A PostgreSQL writer whose session is terminated loses its advisory lock while its
Store stays open.  It must notice before its next write: reconnecting takes the lock
again (``LockedError`` while another writer holds it) and checks that nobody took seqs
meanwhile; if someone did, it refuses to write on and ``close()`` saves its queue to a
recovery file.  The other writer's rows are never touched.

(The SQLite counterparts, a removed lock file or database file, are in
tests/test_write_path.py; a forked child in tests/test_fork.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appendmuch import Store
from appendmuch.errors import LockedError, WriteError
from appendmuch.recovery import read_recovery_file
from backends import FACTORIES, PostgresBackend
from helpers import close_fails

HOLD = 3600.0


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[PostgresBackend]:
    made = FACTORIES["postgresql"](tmp_path)
    assert isinstance(made, PostgresBackend)
    try:
        yield made
    finally:
        made.cleanup()


def terminate_writer(pg: PostgresBackend, store: Store) -> None:
    """End the writer's server session (as an idle timeout or a failover would)."""
    import psycopg

    pid = store.driver._writer.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        (ended,) = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    assert ended


def test_terminated_writer_reconnects_and_loses_nothing(pg: PostgresBackend) -> None:
    """Nobody else writes: the writer reconnects, takes its lock again, and every row
    is written once."""
    store = Store(pg.driver(batch_interval=HOLD))
    s = store.storage("t")
    s.x = 1
    store.flush()
    terminate_writer(pg, store)
    s.x = 2
    try:
        store.flush()
    except WriteError:  # the write that meets the dead session may fail; rows stay
        store.flush()
    s.x = 3
    store.flush()
    assert [row[0] for row in pg.raw_rows()] == [1, 2, 3]
    store.close()


def test_terminated_writer_refuses_after_another_wrote(pg: PostgresBackend, tmp_path: Path) -> None:
    """A second writer opens while the first one's session is gone and writes.  The
    first gets LockedError while the second is open, refuses to write on after it
    closed (its seqs would collide), and close() saves its queued row."""
    first = Store(pg.driver(batch_interval=HOLD, recovery_dir=tmp_path))
    s = first.storage("t")
    s.x = 1
    first.flush()
    terminate_writer(pg, first)
    second = Store(pg.driver(batch_interval=HOLD))
    second.storage("t").x = 20
    second.flush()
    s.x = 2  # the first writer's seq 2: the second one already took it
    for _ in range(2):  # the dead session, then the lock held by the second writer
        with pytest.raises((WriteError, LockedError)):
            first.flush()
    with pytest.raises(LockedError, match="already open for writing"):
        first.flush()
    second.storage("t").x = 21
    second.close()
    with pytest.raises(LockedError, match="another writer"):
        first.flush()
    s.x = 3
    with pytest.raises(LockedError, match="another writer"):
        first.flush()
    error = close_fails(first)
    assert error.recovery_file is not None
    saved = [row for row, _ in read_recovery_file(error.recovery_file)]
    # (seq 4: reconnecting noted the largest stored seq, 3)
    assert [(row[0], first.codec.decode(row[3])) for row in saved] == [(2, 2), (4, 3)]
    stored = pg.raw_rows()
    assert [(row[0], first.codec.decode(row[3])) for row in stored] == [
        (1, 1),
        (2, 20),
        (3, 21),
    ]
