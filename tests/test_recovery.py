"""Recovery files end to end: close() cannot write its queue, saves a recovery file in
the layout it documents (beside a SQLite database; the working directory for
PostgreSQL), and ``appendmuch replay FILE DB`` writes the rows back.

A file names its database: replay refuses any other, and a file of one database never
blocks another.  Replayed rows get new seqs after every stored row (keeping their
times and contexts), so they can never collide with seqs handed out meanwhile, and
replaying twice writes nothing the second time.

close() is made to fail for real: a second connection stores a row under the seq the
queued batch needs, so the batch violates the table's UNIQUE(seq) and nothing of it
is written.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from appendmuch import Store
from appendmuch.errors import RecoveryMismatchError, RecoveryPendingError, WriteError
from appendmuch.recovery import read_recovery, replay, write_recovery_file
from backends import Backend, PostgresBackend, SqliteBackend

Row = tuple[Any, ...]
HOLD = 3600.0  # rows wait for close()


def block_seq(backend: Backend, seq: int) -> None:
    """Store a foreign row under ``seq`` behind the driver's back."""
    row = (seq, "foreign", "row", b"\x001", 1.0, "x:1")
    if isinstance(backend, SqliteBackend):
        conn = sqlite3.connect(backend.path)
        with conn:
            conn.execute(
                "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, "
                "context) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
        conn.close()
        return
    import psycopg

    assert isinstance(backend, PostgresBackend)
    with psycopg.connect(backend.conninfo, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{backend.prefix}_values" (seq, namespace, field, value, '
            "created_at, context) VALUES (%s, %s, %s, %s, %s, %s)",
            row,
        )


def failed_close(backend: Backend, **kwargs: Any) -> tuple[str, list[Row]]:
    """Write, then make close() fail; return the recovery file and the saved rows."""
    store = Store(backend.driver(batch_interval=HOLD, **kwargs))
    player = store.storage("game", "p1")
    player.score = 1
    store.flush()
    player.score = 2
    player.name = "Ann"
    del player.score
    saved = [row for row in backend_rows(store) if row[0] > 1]
    block_seq(backend, 2)
    with pytest.raises(WriteError) as info:
        store.close()
    path = info.value.recovery_file
    assert path is not None and os.path.isfile(path)
    return path, saved


def backend_rows(store: Store) -> list[Row]:
    """The rows the Store holds in memory (by seq)."""
    rows = []
    for node_ns, node in _walk(store.cache, ()):
        for field, log in node.items():
            for value in log:
                data = None if value.unavailable else store.codec.encode(value.data)
                rows.append((value.seq, "/".join(node_ns), field, data, value.time, value.context))
    return sorted(rows)


def _walk(node: dict[str, Any], path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    fields = {k: v for k, v in node.items() if not isinstance(v, dict)}
    if fields:
        yield path, fields
    for key, child in node.items():
        if isinstance(child, dict):
            yield from _walk(child, (*path, key))


def db_argument(backend: Backend) -> str:
    """The DB argument of the command line for this backend."""
    if isinstance(backend, SqliteBackend):
        return str(backend.path)
    from psycopg.conninfo import conninfo_to_dict

    assert isinstance(backend, PostgresBackend)
    params = conninfo_to_dict(backend.conninfo)
    return f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"


def table_args(backend: Backend) -> list[str]:
    return ["--table-prefix", backend.prefix] if isinstance(backend, PostgresBackend) else []


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appendmuch", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def content(rows: list[Row]) -> list[Row]:
    """Rows without their seq."""
    return [row[1:] for row in rows]


# ---------------------------------------------------------------- 9.6: the documented path


def test_cli_replays_the_file_close_wrote_in_its_layout(
    place: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() fails -> the recovery file lands beside the SQLite database (in the
    working directory for PostgreSQL) -> `appendmuch replay FILE DB` run there exits 0
    -> a reopened Store sees the rows; the file no longer blocks opening."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    path, saved = failed_close(place)
    expected_dir = place.path.parent if isinstance(place, SqliteBackend) else workdir
    assert Path(path).parent == expected_dir

    with pytest.raises(RecoveryPendingError):  # the error's advice ...
        place.store()
    done = cli("replay", path, db_argument(place), *table_args(place), cwd=workdir)
    assert done.returncode == 0, done.stderr  # ... works
    assert "replayed 3 rows" in done.stdout

    store = place.store()
    player = store.storage("game", "p1")
    assert player.name == "Ann"
    assert player.get("score") is None
    stored = [row for row in store.driver.load_rows() if row[1] != "foreign"]
    assert content(stored[1:]) == content(saved)  # same values, times and contexts
    store.close()


# ---------------------------------------------------------------- 12.8: identity


def test_recovery_file_names_its_database(place: Backend, tmp_path: Path) -> None:
    path, _ = failed_close(place, recovery_dir=tmp_path)
    database = read_recovery(path).database
    assert database is not None
    if isinstance(place, SqliteBackend):
        st = os.stat(place.path)
        assert database["path"] == os.path.realpath(place.path)
        assert (database["dev"], database["ino"]) == (st.st_dev, st.st_ino)
        assert Path(path).name.startswith(f"{place.path.name}-appendmuch_values.recovery-")
    else:
        assert isinstance(place, PostgresBackend)
        assert database["table"] == f"{place.prefix}_values"
        assert database["schema"] == "public"
        assert database["database"] == "postgres"
        assert database["server"].startswith("127.0.0.1:")


def test_a_file_of_one_database_never_blocks_or_enters_another(tmp_path: Path) -> None:
    """exp1's recovery file (beside exp1 and exp2): exp2, and a brand-new exp3, open
    for writing; replaying exp1's file into exp2 is refused and changes nothing (library
    and command line); exp1 itself is still asked to replay first."""
    exp1 = SqliteBackend(tmp_path, "exp1.sqlite3")
    exp2 = SqliteBackend(tmp_path, "exp2.sqlite3")
    with Store(exp2.driver()) as store:
        store.storage("b").x = 1
    path, _ = failed_close(exp1)
    before = exp2.path.read_bytes()

    with Store(exp2.driver()) as store:  # not blocked
        assert store.storage("b").x == 1
    with Store(SqliteBackend(tmp_path, "exp3.sqlite3").driver()) as store:
        store.storage("c").x = 1
    assert exp2.path.read_bytes() == before

    driver = exp2.driver()
    with pytest.raises(RecoveryMismatchError, match=r"exp1\.sqlite3"):
        replay(path, driver)
    driver.close()
    refused = cli("replay", path, str(exp2.path), cwd=tmp_path)
    assert refused.returncode == 1
    assert "exp1.sqlite3" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert exp2.path.read_bytes() == before
    assert not list(tmp_path.glob("*.lock"))

    with pytest.raises(RecoveryPendingError, match="exp1"):
        exp1.store()


@pytest.mark.parametrize("how", ["copied", "moved", "restored"])
def test_a_moved_or_copied_database_needs_any_database(tmp_path: Path, how: str) -> None:
    """A copy, a renamed file and a backup restored at the same path all count as other
    databases: replay refuses them unless any_database=True."""
    exp1 = SqliteBackend(tmp_path, "exp1.sqlite3")
    path, saved = failed_close(exp1)
    other = SqliteBackend(tmp_path, "other.sqlite3")
    if how == "copied":
        other.path.write_bytes(exp1.path.read_bytes())
    elif how == "moved":
        exp1.path.rename(other.path)
    else:
        backup = tmp_path / "backup.sqlite3"  # exists alongside: another inode
        backup.write_bytes(exp1.path.read_bytes())
        backup.replace(exp1.path)
        other = exp1
    driver = other.driver()
    with pytest.raises(RecoveryMismatchError):
        replay(path, driver)
    assert replay(path, driver, any_database=True) == len(saved)
    driver.close()


def test_a_headerless_file_needs_any_database(place: Backend, tmp_path: Path) -> None:
    path = str(tmp_path / "old.msgpack")
    write_recovery_file(path, [(5, "a", "x", b"\x001", 1.0, "m:1")], [])
    with Store(place.driver()) as store:
        store.storage("a").y = 1
    driver = place.driver()
    with pytest.raises(RecoveryMismatchError, match="does not say which database"):
        replay(path, driver)
    assert replay(path, driver, any_database=True) == 1
    driver.close()


# ---------------------------------------------------------------- 12.9: new seqs


def test_replay_after_other_writes_uses_new_seqs_and_loses_nothing(
    place: Backend, tmp_path: Path
) -> None:
    """A writer that cannot see the recovery file (another directory or host) opens
    and takes seqs the saved rows had; replay then appends the saved rows under new
    seqs, keeping their created_at and context; nothing collides, nothing is lost;
    replaying again writes nothing."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path, saved = failed_close(place, recovery_dir=elsewhere)
    with Store(place.driver(recovery_dir=tmp_path)) as store:  # does not see the file
        store.storage("late").z = 1
        store.storage("late").w = 2
    before = place.raw_rows()
    largest = before[-1][0]

    driver = place.driver()
    assert replay(path, driver) == len(saved)
    assert replay(path, driver) == 0
    driver.close()
    after = place.raw_rows()
    assert after[: len(before)] == before
    added = after[len(before) :]
    assert [row[0] for row in added] == list(range(largest + 1, largest + 1 + len(saved)))
    assert content(added) == content(saved)  # same times, contexts, values


def test_replay_is_idempotent_without_its_marker(place: Backend, tmp_path: Path) -> None:
    """The rows themselves tell what was replayed: with the marker the first replay
    appended cut off again (a crash right after the commit), a second replay still
    writes nothing."""
    path, saved = failed_close(place, recovery_dir=tmp_path)
    original = Path(path).read_bytes()
    driver = place.driver()
    assert replay(path, driver) == len(saved)
    objects = list(msgpack.Unpacker(open(path, "rb"), raw=False))  # noqa: SIM115
    assert "appendmuch_replayed" in objects[-1]
    Path(path).write_bytes(original)
    rows = place.raw_rows()
    assert replay(path, driver) == 0
    driver.close()
    assert place.raw_rows() == rows
    with Store(place.driver(recovery_dir=tmp_path)):  # no longer pending
        pass


def test_failed_partial_write_leaves_no_file(tmp_path: Path) -> None:
    """Writing a recovery file that fails half-way leaves neither it nor a .partial."""

    def rows() -> Iterator[Row]:
        yield (1, "a", "x", b"\x001", 1.0, "m:1")
        raise OSError(28, "No space left on device")

    path = tmp_path / "r.msgpack"
    with pytest.raises(OSError):
        write_recovery_file(str(path), rows(), [])
    assert list(tmp_path.iterdir()) == []


def test_replay_into_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    exp1 = SqliteBackend(tmp_path, "exp1.sqlite3")
    path, _ = failed_close(exp1)
    missing = tmp_path / "nothere.sqlite3"
    done = cli("replay", path, str(missing), cwd=tmp_path)
    assert done.returncode == 2
    assert not missing.exists()
    assert not list(tmp_path.glob("nothere*"))


def test_rows_saved_at_exit_are_said_in_one_line(tmp_path: Path) -> None:
    """The database file is removed while a Store writes, and the program ends without
    closing it: the rows go to a recovery file, and stderr says so in one warning line
    (the table, how many rows, the file, the command replaying it), not a traceback."""
    script = (
        "import os\n"
        "from appendmuch import Sqlite3, Store\n"
        "p = Store(Sqlite3('log.sqlite3', batch_interval=3600)).storage('a')\n"
        "for i in range(5): p.x = i\n"
        "os.remove('log.sqlite3')\n"
        "for i in range(5): p.y = i\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    (saved,) = [name for name in os.listdir(tmp_path) if ".recovery-" in name]
    line = lines[0]
    assert "Traceback" not in line and "Exception ignored" not in line
    for part in ("log.sqlite3", "10 queued rows", saved, "appendmuch replay"):
        assert part in line, (part, line)
    assert f"appendmuch replay {tmp_path / saved} log.sqlite3" in line
