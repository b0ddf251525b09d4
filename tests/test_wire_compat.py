"""Byte compatibility with other implementations of the same description (SPEC 9-10).

Databases and dumps are built here by hand, with the raw ``sqlite3`` module and with
``msgpack.packb``, from the hand-written value encodings in ``wire_fixtures.py``;
appendmuch must read them, and what appendmuch writes must be exactly those bytes.
"""

from __future__ import annotations

import io
import random
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from appendmuch import Sqlite3, Store
from backends import Backend
from corpus.make_corpus import GOOD_TABLE, INSERT  # the layout written by hand, once
from wire_fixtures import FIXTURES, Fixture, same_value

Row = tuple[int, str, str, bytes | None, float, str]

SELECT = (
    "SELECT seq, namespace, field, value, created_at, context FROM appendmuch_values ORDER BY seq"
)

#: where the fixtures live in the hand-built logs (dbns strings, joined by "/")
NAMESPACES = ["compat/a", "compat/b", "solo", "deep/x.y/z-1_2"]


def fixture_rows() -> list[Row]:
    """One row per fixture: field = fixture label, seqs with gaps, exact float times."""
    rows: list[Row] = []
    for i, fixture in enumerate(FIXTURES):
        rows.append(
            (
                5 + 7 * i,
                NAMESPACES[i % len(NAMESPACES)],
                fixture.label,
                fixture.expected,
                1_700_000_000.5 + i / 8,
                f"legacy.app.page_{i}:{10 + i}",
            )
        )
    return rows


#: a field written three times (seqs 2, 200, 1000) and a field set then deleted
HISTORY_ROWS: list[Row] = [
    (2, "compat/a", "hist", b"\x001", 1_600_000_000.25, "legacy.app.start:1"),
    (200, "compat/a", "hist", b'\x02"two"', 1_600_000_100.5, "legacy.app.step:2"),
    (1000, "compat/a", "hist", b"\x80[3]", 1_600_000_200.75, "legacy.app.step:3"),
    (3, "solo", "gone", b'\x02"here"', 1_600_000_001.0, "legacy.app.make:4"),
    (450, "solo", "gone", None, 1_600_000_050.0, "legacy.app.drop:5"),
]


#: stored bytes -> the value they stand for, for every row above
KNOWN_VALUES: dict[bytes, Any] = {f.expected: f.value for f in FIXTURES} | {
    b"\x001": 1,
    b'\x02"two"': "two",
    b"\x80[3]": [3],
    b'\x02"here"': "here",
}


def all_hand_rows() -> list[Row]:
    return sorted(fixture_rows() + HISTORY_ROWS)


def build_sqlite(path: Path, rows: list[Row]) -> None:
    """A database as another implementation would leave it: rows inserted out of seq
    order (so ``id`` order differs from ``seq`` order)."""
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    conn = sqlite3.connect(path)
    try:
        conn.execute(GOOD_TABLE)
        conn.executemany(INSERT, shuffled)
        conn.commit()
    finally:
        conn.close()


def read_sqlite(path: Path, sql: str = SELECT) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def read_field(store: Store, dbns: str, field: str) -> Any:
    """The current value of a field (inside ``with``, so mutable values are readable)."""
    with store.storage(*dbns.split("/")) as s:
        return getattr(s, field)


def hand_pack(row: Row) -> bytes:
    seq, namespace, field, value, created_at, context = row
    packed: bytes = msgpack.packb(
        {
            "seq": seq,
            "namespace": namespace,
            "field": field,
            "value": value,
            "created_at": created_at,
            "context": context,
        },
        use_bin_type=True,
    )
    return packed


def check_log_matches_rows(store: Store, rows: list[Row]) -> None:
    """Every hand-written row is visible in the store with its seq, time, context,
    value, in seq order per field."""
    by_field: dict[tuple[str, str], list[Row]] = {}
    for row in sorted(rows):
        by_field.setdefault((row[1], row[2]), []).append(row)
    for (dbns, field), expected_rows in by_field.items():
        history = store.storage(*dbns.split("/")).__history__()[field]
        assert [v.seq for v in history] == [r[0] for r in expected_rows]
        assert [v.time for v in history] == [r[4] for r in expected_rows]
        assert [v.context for v in history] == [r[5] for r in expected_rows]
        assert [v.unavailable for v in history] == [r[3] is None for r in expected_rows]
        for value, row in zip(history, expected_rows, strict=True):
            if row[3] is None:
                assert value.data is None
            else:
                assert same_value(value.data, KNOWN_VALUES[row[3]]), (field, value.data)
        latest = expected_rows[-1][3]
        if latest is not None:
            got = read_field(store, dbns, field)
            assert same_value(got, KNOWN_VALUES[latest]), (field, got)


# ---------------------------------------------------------------- (a) reading foreign SQLite


class TestReadHandBuiltSqlite:
    """A SQLite file written by another implementation (raw sqlite3, hand-encoded
    values, seq gaps, rows out of order, a tombstone) opens with Store(Sqlite3(path))."""

    def test_every_value_time_and_context(self, tmp_path: Path) -> None:
        path = tmp_path / "foreign.sqlite3"
        build_sqlite(path, all_hand_rows())
        store = Store(Sqlite3(path))
        check_log_matches_rows(store, all_hand_rows())
        store.close()

    def test_history_ordered_by_seq(self, tmp_path: Path) -> None:
        path = tmp_path / "foreign.sqlite3"
        build_sqlite(path, all_hand_rows())
        store = Store(Sqlite3(path))
        s = store.storage("compat", "a")
        history = s.__history__()["hist"]
        assert [v.seq for v in history] == [2, 200, 1000]
        assert [v.data for v in history] == [1, "two", [3]]
        assert [v.time for v in history] == [1_600_000_000.25, 1_600_000_100.5, 1_600_000_200.75]
        assert [v.context for v in history] == [
            "legacy.app.start:1",
            "legacy.app.step:2",
            "legacy.app.step:3",
        ]
        with s:
            assert s.hist == [3]  # the highest seq wins, not the last inserted row
        store.close()

    def test_fields_in_order_of_first_write(self, tmp_path: Path) -> None:
        path = tmp_path / "foreign.sqlite3"
        build_sqlite(path, all_hand_rows())
        store = Store(Sqlite3(path))
        for dbns in NAMESPACES:
            firsts: dict[str, int] = {}
            for seq, ns, field, _value, _t, _c in all_hand_rows():
                if ns == dbns:
                    firsts.setdefault(field, seq)
            expected = sorted((f for f in firsts if f != "gone"), key=firsts.__getitem__)
            assert store.storage(*dbns.split("/")).__fields__() == expected
        store.close()

    def test_tombstoned_field_is_deleted(self, tmp_path: Path) -> None:
        path = tmp_path / "foreign.sqlite3"
        build_sqlite(path, all_hand_rows())
        store = Store(Sqlite3(path))
        s = store.storage("solo")
        with pytest.raises(AttributeError, match="gone"):
            s.gone
        assert s.get("gone", "default") == "default"
        assert "gone" not in s.__fields__()
        history = s.__history__()["gone"]
        assert [(v.seq, v.unavailable, v.data) for v in history] == [
            (3, False, "here"),
            (450, True, None),
        ]
        store.close()

    def test_next_write_gets_max_seq_plus_one(self, tmp_path: Path) -> None:
        path = tmp_path / "foreign.sqlite3"
        rows = all_hand_rows()
        build_sqlite(path, rows)
        largest = max(r[0] for r in rows)
        before = read_sqlite(
            path,
            "SELECT id, seq, namespace, field, value, created_at, context "
            "FROM appendmuch_values ORDER BY id",
        )
        store = Store(Sqlite3(path))
        s = store.storage("solo")
        s.fresh = "new"
        s.gone = "back"
        store.close()
        after = read_sqlite(
            path,
            "SELECT id, seq, namespace, field, value, created_at, context "
            "FROM appendmuch_values ORDER BY id",
        )
        assert after[: len(before)] == before  # existing rows untouched
        new = [row[1:5] for row in after[len(before) :]]
        assert new == [
            (largest + 1, "solo", "fresh", b'\x02"new"'),
            (largest + 2, "solo", "gone", b'\x02"back"'),
        ]
        store = Store(Sqlite3(path))
        assert store.storage("solo").gone == "back"
        store.close()


# ---------------------------------------------------------------- (b) writing SQLite


WRITE_NAMESPACES: list[tuple[str, ...]] = [("wire",), ("wire2", "deep", "er"), ("x-y.z_1", "A")]


def write_fixtures(store: Store) -> dict[str, tuple[tuple[str, ...], Fixture]]:
    """Write every fixture as a field named by its label; return label -> (ns, fixture)."""
    placed: dict[str, tuple[tuple[str, ...], Fixture]] = {}
    for i, fixture in enumerate(FIXTURES):
        ns = WRITE_NAMESPACES[i % len(WRITE_NAMESPACES)]
        setattr(store.storage(*ns), fixture.label, fixture.fresh())
        placed[fixture.label] = (ns, fixture)
    return placed


class TestWrittenSqliteBytes:
    """What appendmuch writes to SQLite is exactly the hand-written encoding, in a
    BLOB column, with the namespace as tokens joined by "/"."""

    def test_value_column_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "ours.sqlite3"
        started = time.time()
        store = Store(Sqlite3(path))
        placed = write_fixtures(store)
        del store.storage("wire").int_zero
        store.close()
        finished = time.time()

        rows = read_sqlite(path)
        assert [r[0] for r in rows] == list(range(1, len(FIXTURES) + 2))
        for (_seq, namespace, field, value, created_at, context), fixture in zip(
            rows, FIXTURES, strict=False
        ):
            ns, expected = placed[field]
            assert field == fixture.label
            assert namespace == "/".join(ns)
            assert type(value) is bytes
            assert value == expected.expected, field
            assert type(created_at) is float
            assert started <= created_at <= finished
            assert type(context) is str and context
        assert rows[-1][1:4] == ("wire", "int_zero", None)

    def test_column_storage_classes(self, tmp_path: Path) -> None:
        """value is a BLOB (never TEXT), created_at REAL, seq INTEGER, names TEXT."""
        path = tmp_path / "ours.sqlite3"
        store = Store(Sqlite3(path))
        s = store.storage("game", "p1")
        s.text = "a str value"
        s.n = 7
        del s.n
        store.close()
        kinds = read_sqlite(
            path,
            "SELECT typeof(seq), typeof(namespace), typeof(field), typeof(value), "
            "typeof(created_at), typeof(context) FROM appendmuch_values ORDER BY seq",
        )
        assert kinds == [
            ("integer", "text", "text", "blob", "real", "text"),
            ("integer", "text", "text", "blob", "real", "text"),
            ("integer", "text", "text", "null", "real", "text"),
        ]
        values = read_sqlite(path, "SELECT namespace, value FROM appendmuch_values ORDER BY seq")
        assert values == [
            ("game/p1", b'\x02"a str value"'),
            ("game/p1", b"\x007"),
            ("game/p1", None),
        ]

    def test_mutation_in_with_block_writes_canonical_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "ours.sqlite3"
        store = Store(Sqlite3(path))
        s = store.storage("game", "p1")
        s.d = {"b": 1}
        s.tags = {"b"}
        with s:
            s.d["a"] = [2.5, None]
            s.tags.add(1)
            s.tags.add("a")
        store.close()
        values = read_sqlite(path, "SELECT field, value FROM appendmuch_values ORDER BY seq")
        assert values == [
            ("d", b'\x81{"b":1}'),
            ("tags", b'\x83["b"]'),
            ("d", b'\x81{"a":[2.5,null],"b":1}'),
            ("tags", b'\x83["a","b",1]'),
        ]


# ---------------------------------------------------------------- (c) msgpack dumps


class TestHandBuiltDumpRestores:
    """A dump packed by hand (msgpack.packb of one map per row) restores into every
    backend, opens correctly, and dumps back byte for byte."""

    def test_restore_and_open(self, backend: Backend) -> None:
        rows = all_hand_rows()
        dump = b"".join(hand_pack(r) for r in rows)
        driver = backend.driver()
        assert driver.restore(io.BytesIO(dump)) == len(rows)
        driver.close()

        store = backend.store()
        check_log_matches_rows(store, rows)
        with pytest.raises(AttributeError):
            store.storage("solo").gone
        store.storage("solo").after = 1
        assert store.storage("solo").__history__()["after"][0].seq == max(r[0] for r in rows) + 1
        store.close()

    def test_restore_from_chunks_then_dump_is_identical(self, backend: Backend) -> None:
        rows = all_hand_rows()
        chunks = [hand_pack(r) for r in rows]
        driver = backend.driver()
        driver.restore(iter(chunks))
        driver.close()
        store = backend.store()
        assert list(store.driver.dump()) == chunks
        store = backend.reopen(store)
        assert b"".join(store.driver.dump()) == b"".join(chunks)
        store.close()

    def test_restore_accepts_any_row_order_as_seq_order(self, backend: Backend) -> None:
        """Rows are kept with their own seqs; history follows seq, not dump order."""
        rows = list(HISTORY_ROWS)
        driver = backend.driver()
        driver.restore(b"".join(hand_pack(r) for r in reversed(rows)))
        driver.close()
        store = backend.store()
        history = store.storage("compat", "a").__history__()["hist"]
        assert [v.seq for v in history] == [2, 200, 1000]
        assert b"".join(store.driver.dump()) == b"".join(hand_pack(r) for r in sorted(rows))
        store.close()


def manual_map(
    seq: bytes, namespace: bytes, field: bytes, value: bytes, t: float, context: bytes
) -> bytes:
    """One dump map assembled byte by byte (fixmap of 6, str keys, float64 time)."""

    def mp_str(s: bytes) -> bytes:
        if len(s) < 32:
            return bytes([0xA0 | len(s)]) + s  # fixstr
        assert len(s) < 256
        return b"\xd9" + bytes([len(s)]) + s  # str 8

    parts = [
        b"\x86",  # fixmap with 6 entries
        mp_str(b"seq"), seq,
        mp_str(b"namespace"), mp_str(namespace),
        mp_str(b"field"), mp_str(field),
        mp_str(b"value"), value,
        mp_str(b"created_at"), b"\xcb" + struct.pack(">d", t),  # float64, big-endian
        mp_str(b"context"), mp_str(context),
    ]  # fmt: skip
    return b"".join(parts)


class TestDumpOfAppendmuchLog:
    """driver.dump() of a log written through appendmuch equals, byte for byte, maps
    packed by hand with keys seq, namespace, field, value, created_at, context."""

    def test_dump_equals_hand_packed(self, backend: Backend) -> None:
        store = backend.store()
        placed = write_fixtures(store)
        del store.storage("wire").int_zero
        store.storage("wire").int_zero = 5

        def expected_rows(store: Store) -> list[Row]:
            rows: list[Row] = []
            for ns in WRITE_NAMESPACES:
                for field, history in store.storage(*ns).__history__().items():
                    for v in history:
                        if v.unavailable:
                            value = None
                        elif field == "int_zero" and v.data == 5:
                            value = b"\x005"
                        else:
                            value = placed[field][1].expected
                        assert v.time is not None
                        rows.append((v.seq, "/".join(ns), field, value, v.time, v.context))
            return sorted(rows)

        rows = expected_rows(store)
        assert len(rows) == len(FIXTURES) + 2
        assert [r[0] for r in rows] == list(range(1, len(FIXTURES) + 3))
        chunks = list(store.driver.dump())
        assert chunks == [hand_pack(r) for r in rows]

        store = backend.reopen(store)
        assert expected_rows(store) == rows
        assert b"".join(store.driver.dump()) == b"".join(hand_pack(r) for r in rows)
        store.close()

    def test_dump_bytes_assembled_by_hand(self, backend: Backend) -> None:
        """The exact msgpack layout: value as bin (0xc4) or nil (0xc0), created_at as
        float64 (0xcb) even when integral, seq as the smallest int form."""
        driver = backend.driver()
        driver.restore(
            b"".join(
                [
                    hand_pack((1, "game/p1", "score", b"\x0042", 1_700_000_000.0, "m.f:1")),
                    hand_pack((1000, "game/p1", "score", None, 1_700_000_001.5, "m.g:2")),
                ]
            )
        )
        driver.close()
        store = backend.store()
        expected = manual_map(
            b"\x01", b"game/p1", b"score", b"\xc4\x03\x0042", 1_700_000_000.0, b"m.f:1"
        ) + manual_map(b"\xcd\x03\xe8", b"game/p1", b"score", b"\xc0", 1_700_000_001.5, b"m.g:2")
        assert b"".join(store.driver.dump()) == expected

        s = store.storage("game", "p1")
        s.score = 7
        (last_chunk,) = list(store.driver.dump())[2:]
        v = s.__history__()["score"][-1]
        assert v.seq == 1001
        assert v.time is not None
        assert last_chunk == manual_map(
            b"\xcd\x03\xe9",
            b"game/p1",
            b"score",
            b"\xc4\x02\x007",
            v.time,
            v.context.encode(),
        )
        store.close()
