"""The SQLite table layout (SPEC §10), checked with a raw ``sqlite3`` connection.

One table ``{table_prefix}{tblextra}_values``: ``id`` auto-increment primary key,
``seq`` INTEGER NOT NULL UNIQUE, ``namespace`` TEXT, ``field`` TEXT, ``value`` BLOB
(NULL for a tombstone), ``created_at`` REAL, ``context`` TEXT.  An existing table
with another layout is refused (RuntimeError) and left exactly as it was; a
compatible table made by hand is used as is; ``driver.reset()`` recreates it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Sqlite3, Store, Value

SPEC_COLUMNS = [
    ("id", "INTEGER"),
    ("seq", "INTEGER"),
    ("namespace", "TEXT"),
    ("field", "TEXT"),
    ("value", "BLOB"),
    ("created_at", "REAL"),
    ("context", "TEXT"),
]

SPEC_TABLE = (
    'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
    "seq INTEGER NOT NULL UNIQUE, namespace TEXT, field TEXT, value BLOB, "
    "created_at REAL, context TEXT)"
)
INSERT = (
    'INSERT INTO "{table}" (seq, namespace, field, value, created_at, context) '
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A separate sqlite3 connection, committed and closed on exit."""
    conn = sqlite3.connect(path)
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def table_info(path: Path, table: str) -> list[tuple[Any, ...]]:
    with raw(path) as conn:
        return conn.execute(f'PRAGMA table_info("{table}")').fetchall()


def unique_index_columns(conn: sqlite3.Connection, table: str) -> list[list[str]]:
    """The column lists of every non-partial unique index of ``table``."""
    out = []
    for _, name, unique, _, partial in conn.execute(f'PRAGMA index_list("{table}")'):
        if unique and not partial:
            out.append([row[2] for row in conn.execute(f'PRAGMA index_info("{name}")')])
    return out


def database_dump(path: Path, table: str) -> tuple[list[Any], list[Any]]:
    """The schema of ``table`` (its sqlite_master entries: table and indexes) and every
    row of it with the storage class of each value."""
    with raw(path) as conn:
        schema = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name = ? "
            "ORDER BY type, name",
            (table,),
        ).fetchall()
        columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
        typed = ", ".join(f'"{c}", typeof("{c}")' for c in columns)
        rows = conn.execute(f'SELECT rowid, {typed} FROM "{table}" ORDER BY rowid').fetchall()
    return schema, rows


def full_schema(path: Path) -> list[Any]:
    """Every entry of sqlite_master."""
    with raw(path) as conn:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()


# --------------------------------------------------------------------- layout


@pytest.mark.parametrize(("prefix", "extra"), [("appendmuch", ""), ("pre", "x_1")])
def test_created_table_layout(tmp_path: Path, prefix: str, extra: str) -> None:
    """Columns, types, keys and constraints of the table a Store creates."""
    path = tmp_path / "l.sqlite3"
    table = f"{prefix}{extra}_values"
    with Store(Sqlite3(path, table_prefix=prefix, tblextra=extra)) as store:
        store.storage("game", "p").score = 42
    info = table_info(path, table)
    assert [(row[1], row[2].upper()) for row in info] == SPEC_COLUMNS
    by_name = {row[1]: row for row in info}
    assert by_name["id"][5] == 1  # the primary key
    assert [row[1] for row in info if row[5]] == ["id"]
    assert by_name["seq"][3] == 1  # NOT NULL
    with raw(path) as conn:
        assert ["seq"] in unique_index_columns(conn, table)
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)
        ).fetchone()
        assert "AUTOINCREMENT" in sql.upper()
        sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchall()
        (max_id,) = conn.execute(f'SELECT MAX(id) FROM "{table}"').fetchone()
    assert sequence == [(max_id,)]


def test_stored_rows_and_storage_classes(tmp_path: Path) -> None:
    """Values are the codec's bytes in a BLOB; a tombstone stores NULL."""
    path = tmp_path / "l.sqlite3"
    with Store(Sqlite3(path)) as store:
        p = store.storage("game", "p1")
        p.score = 42
        p.name = "Al"
        del p.score
        history = p.__history__()["score"]
    with raw(path) as conn:
        rows = conn.execute(
            "SELECT id, seq, typeof(seq), namespace, typeof(namespace), field, typeof(field), "
            "value, typeof(value), created_at, typeof(created_at), context, typeof(context) "
            "FROM appendmuch_values ORDER BY id"
        ).fetchall()
    assert [r[1] for r in rows] == [1, 2, 3]
    assert rows[0][0] < rows[1][0] < rows[2][0]
    for r in rows:
        assert (r[2], r[4], r[6], r[10], r[12]) == ("integer", "text", "text", "real", "text")
        assert r[3] == "game/p1"
    assert [(r[5], r[7], r[8]) for r in rows] == [
        ("score", b"\x0042", "blob"),
        ("name", b'\x02"Al"', "blob"),
        ("score", None, "null"),
    ]
    assert [rows[0][9], rows[2][9]] == [v.time for v in history]
    assert [rows[0][11], rows[2][11]] == [v.context for v in history]


def test_seq_constraints_enforced(tmp_path: Path) -> None:
    """seq is NOT NULL and UNIQUE in the database itself."""
    path = tmp_path / "l.sqlite3"
    with Store(Sqlite3(path)) as store:
        store.storage("a").x = 1
    with raw(path) as conn:
        insert = INSERT.format(table="appendmuch_values")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(insert, (1, "a", "y", b"\x001", 1.0, "hand"))
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(insert, (None, "a", "y", b"\x001", 1.0, "hand"))


# --------------------------------------------------------------------- incompatible tables


INCOMPATIBLE = {
    "missing-context": (
        "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "seq INTEGER NOT NULL UNIQUE, namespace TEXT, field TEXT, value BLOB, "
        "created_at REAL)",
        "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at) "
        "VALUES (1, 'game/p', 'x', x'0031', 1.5)",
    ),
    "value-is-text": (
        "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "seq INTEGER NOT NULL UNIQUE, namespace TEXT, field TEXT, value TEXT, "
        "created_at REAL, context TEXT)",
        "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, context) "
        "VALUES (1, 'game/p', 'x', 'hello', 1.5, 'c')",
    ),
    "seq-is-text": (
        "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "seq TEXT NOT NULL UNIQUE, namespace TEXT, field TEXT, value BLOB, "
        "created_at REAL, context TEXT)",
        "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, context) "
        "VALUES ('one', 'game/p', 'x', x'0031', 1.5, 'c')",
    ),
    "created-at-is-text": (
        "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "seq INTEGER NOT NULL UNIQUE, namespace TEXT, field TEXT, value BLOB, "
        "created_at TEXT, context TEXT)",
        "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, context) "
        "VALUES (1, 'game/p', 'x', x'0031', 'yesterday', 'c')",
    ),
    "seq-not-unique": (
        "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "seq INTEGER NOT NULL, namespace TEXT, field TEXT, value BLOB, "
        "created_at REAL, context TEXT)",
        "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, context) "
        "VALUES (1, 'game/p', 'x', x'0031', 1.5, 'c'), (1, 'game/p', 'x', x'0032', 1.6, 'c')",
    ),
    "seq-unique-only-with-namespace": (
        "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "seq INTEGER NOT NULL, namespace TEXT, field TEXT, value BLOB, "
        "created_at REAL, context TEXT, UNIQUE (seq, namespace))",
        "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, context) "
        "VALUES (1, 'game/p', 'x', x'0031', 1.5, 'c'), (1, 'game/q', 'x', x'0032', 1.6, 'c')",
    ),
    "id-not-primary-key": (
        "CREATE TABLE appendmuch_values (id INTEGER, seq INTEGER NOT NULL UNIQUE, "
        "namespace TEXT, field TEXT, value BLOB, created_at REAL, context TEXT)",
        "INSERT INTO appendmuch_values (id, seq, namespace, field, value, created_at, context) "
        "VALUES (7, 1, 'game/p', 'x', x'0031', 1.5, 'c')",
    ),
}


def make_incompatible(path: Path, kind: str) -> None:
    create, insert = INCOMPATIBLE[kind]
    with raw(path) as conn:
        conn.execute(create)
        conn.execute(insert)


@pytest.mark.parametrize("kind", list(INCOMPATIBLE))
def test_incompatible_table_refused_and_untouched(tmp_path: Path, kind: str) -> None:
    """Opening a Store (or ensure()) raises RuntimeError and changes neither the
    schema nor a single row, even when replace indexes are requested."""
    path = tmp_path / "bad.sqlite3"
    make_incompatible(path, kind)
    before = database_dump(path, "appendmuch_values")
    schema_before = full_schema(path)
    with pytest.raises(RuntimeError):
        Store(Sqlite3(path))
    with pytest.raises(RuntimeError):
        Store(Sqlite3(path, replace_index_specs=[("x", "game/%")]))
    driver = Sqlite3(path)
    with pytest.raises(RuntimeError):
        driver.ensure()
    driver.close()
    assert database_dump(path, "appendmuch_values") == before
    assert full_schema(path) == schema_before


@pytest.mark.parametrize("kind", ["missing-context", "seq-not-unique"])
def test_incompatible_table_does_not_block_other_prefixes(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.sqlite3"
    make_incompatible(path, kind)
    before = database_dump(path, "appendmuch_values")
    with Store(Sqlite3(path, table_prefix="fresh")) as store:
        store.storage("game", "p").x = 1
    assert Store(Sqlite3(path, table_prefix="fresh")).storage("game", "p").x == 1
    assert database_dump(path, "appendmuch_values") == before


# --------------------------------------------------------------------- hand-made tables


def make_hand_table(path: Path, table: str = "appendmuch_values") -> None:
    """A table with exactly the SPEC layout and rows encoded by hand."""
    rows = [
        (3, "game/p1", "score", b"\x0042", 1700000000.25, "hand.py:1"),
        (5, "game/p1", "name", b'\x02"Al"', 1700000001.5, "hand.py:2"),
        (7, "game/p1", "score", None, 1700000002.0, "hand.py:3"),
        (8, "game/p2", "items", b"\x80[1,2]", 1700000003.0, "hand.py:4"),
        (9, "game/p1", "flag", b"\x05true", 1700000004.0, "hand.py:5"),
        (11, "game/p1", "pair", b'\x03[1,"a"]', 1700000005.0, "hand.py:6"),
    ]
    with raw(path) as conn:
        conn.execute(SPEC_TABLE.format(table=table))
        conn.executemany(INSERT.format(table=table), rows)


def test_hand_made_table_opens_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "hand.sqlite3"
    make_hand_table(path)
    schema_before = database_dump(path, "appendmuch_values")[0]
    store = Store(Sqlite3(path))
    p1 = store.storage("game", "p1")
    assert p1.get("score") is None  # deleted by the tombstone
    assert p1.__history__()["score"] == (
        Value(1700000000.25, False, 42, "hand.py:1", seq=3),
        Value(1700000002.0, True, None, "hand.py:3", seq=7),
    )
    assert p1.name == "Al"
    assert p1.flag is True
    assert p1.pair == (1, "a")
    p2 = store.storage("game", "p2")
    with p2:
        assert p2.items == [1, 2]
    assert p1.__fields__() == ["name", "flag", "pair"]
    p1.score = 43
    assert p1.__history__()["score"][-1].seq == 12
    store.close()
    schema_after, rows = database_dump(path, "appendmuch_values")
    assert schema_after == schema_before  # not altered
    assert len(rows) == 7
    again = Store(Sqlite3(path))
    assert again.storage("game", "p1").score == 43
    again.close()


def test_hand_made_table_with_prefix_and_extra(tmp_path: Path) -> None:
    path = tmp_path / "hand.sqlite3"
    make_hand_table(path, "mine2_values")
    store = Store(Sqlite3(path, table_prefix="mine", tblextra="2"))
    assert store.storage("game", "p1").name == "Al"
    store.close()
    # the default table is a different, new and empty one
    other = Store(Sqlite3(path))
    assert other.storage("game", "p1").get("flag") is None
    other.close()


# --------------------------------------------------------------------- reset


def test_reset_recreates_compatible_table_empty(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    make_hand_table(path)
    driver = Sqlite3(path)
    store = Store(driver)
    driver.reset()
    assert database_dump(path, "appendmuch_values")[1] == []
    assert [(r[1], r[2].upper()) for r in table_info(path, "appendmuch_values")] == SPEC_COLUMNS
    store.storage("game", "p1").x = 1
    store.close()
    reader = Sqlite3(path)
    assert [(r[0], r[2]) for r in reader.load_rows()] == [(12, "x")]
    reader.close()


@pytest.mark.parametrize("kind", ["missing-context", "value-is-text", "seq-not-unique"])
def test_reset_replaces_incompatible_table(tmp_path: Path, kind: str) -> None:
    """driver.reset() is the explicit way to drop a table of another layout and
    recreate it with the SPEC layout (SPEC §10)."""
    path = tmp_path / "bad.sqlite3"
    make_incompatible(path, kind)
    driver = Sqlite3(path)
    driver.reset()
    driver.close()
    assert [(r[1], r[2].upper()) for r in table_info(path, "appendmuch_values")] == SPEC_COLUMNS
    with raw(path) as conn:
        assert ["seq"] in unique_index_columns(conn, "appendmuch_values")
        assert conn.execute("SELECT COUNT(*) FROM appendmuch_values").fetchone() == (0,)
    with Store(Sqlite3(path)) as store:
        store.storage("game", "p").x = 1
    assert Store(Sqlite3(path)).storage("game", "p").x == 1
