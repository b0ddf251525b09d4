"""Drivers (SPEC §10, and the driver parts of §12).

Size, dump/restore across every pair of backends, reset, ensure, ``now``, the
sequence counter, table naming, replace indexes, batching and closing.  Tests that
take the ``backend`` fixture run on every backend; the rest pin down SQLite details
with real files and a second, raw ``sqlite3`` connection.
"""

from __future__ import annotations

import datetime as dt
import gc
import io
import sqlite3
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest

from appendmuch import PostgreSQL, Sqlite3, Storage, Store, tuple2dbns
from appendmuch.drivers import DBDriver
from backends import Backend, is_shared
from helpers import settled, wait_for
from snapshots import cache_snapshot

DUMP_KEYS = {"seq", "namespace", "field", "value", "created_at", "context"}


# --------------------------------------------------------------------- helpers


def populate(store: Store) -> None:
    """A small log with many value types, nested namespaces, rewrites and tombstones."""
    p1 = store.storage("game", "player1")
    p2 = store.storage("game", "player2")
    grp = store.storage("game", "groups", "g1")
    p1.score = 10
    p1.name = "Zoë ✓"
    p2.score = 3.25
    p1.items = ["sword", {"k": [1, 2]}]
    p1.raw = b"\x00\xffbytes"
    grp.when = dt.datetime(2024, 5, 6, 7, 8, 9)
    grp.price = Decimal("1.10")
    p2.pair = (1, "a", None)
    p1.score = 11
    del p2.score
    p1.nothing = None
    with p1:
        p1.items.append("shield")
    p2.score = 4


def chunks_of(data: bytes, sizes: Iterable[int] = (1, 2, 3, 5, 7, 11, 13)) -> list[bytes]:
    """``data`` cut at odd byte boundaries, cycling through ``sizes``."""
    out: list[bytes] = []
    position = 0
    cycle = list(sizes)
    i = 0
    while position < len(data):
        step = cycle[i % len(cycle)]
        out.append(data[position : position + step])
        position += step
        i += 1
    return out


def pack_row(seq: int, namespace: str, field: str, value: bytes | None, context: str) -> bytes:
    """One dump map written by hand."""
    packed: bytes = msgpack.packb(
        {
            "seq": seq,
            "namespace": namespace,
            "field": field,
            "value": value,
            "created_at": 1700000000.5,
            "context": context,
        },
        use_bin_type=True,
    )
    return packed


def source_dump(backend: Backend) -> tuple[list[bytes], list[tuple[Any, ...]]]:
    """Populate ``backend``; return its dump chunks and its in-memory history."""
    store = backend.store()
    populate(store)
    settled(store)  # (shared mode: own writes under their final seqs)
    history = cache_snapshot(store)
    chunks = list(store.driver.dump())
    store.close()
    return chunks, history


def sqlite_count(path: Path, table: str = "appendmuch_values") -> int:
    """Rows of ``table`` as seen by a separate sqlite3 connection."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])
    finally:
        conn.close()


def sqlite_tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


# --------------------------------------------------------------------- size


def test_size(backend: Backend) -> None:
    """``size()`` is None for Memory, and a positive, growing byte count for SQL."""
    store = backend.store()
    store.storage("game", "p").x = 1
    first = store.driver.size()
    if backend.name == "memory":
        assert first is None
    else:
        assert isinstance(first, int)
        assert first > 0
        s = store.storage("game", "bulk")
        for i in range(2000):
            setattr(s, f"f{i % 50}", "x" * 300 + str(i))
        second = store.driver.size()
        assert isinstance(second, int)
        assert second > first
    store.close()


# --------------------------------------------------------------------- dump


class TestDump:
    """``dump()``: an iterator of bytes, one msgpack map per row, in seq order."""

    def test_chunks_are_single_msgpack_maps(self, backend: Backend) -> None:
        store = backend.store()
        populate(store)
        dump = store.driver.dump()
        assert iter(dump) is dump  # an iterator, not a list
        chunks = list(dump)
        assert len(chunks) == len(cache_snapshot(store))
        for chunk in chunks:
            assert type(chunk) is bytes
            unpacker = msgpack.Unpacker(raw=False)
            unpacker.feed(chunk)
            objects = list(unpacker)
            assert len(objects) == 1
            row = objects[0]
            assert set(row) == DUMP_KEYS
            assert type(row["seq"]) is int
            assert type(row["namespace"]) is str
            assert type(row["field"]) is str
            assert row["value"] is None or type(row["value"]) is bytes
            assert type(row["created_at"]) is float
            assert type(row["context"]) is str
        store.close()

    def test_rows_match_history(self, backend: Backend) -> None:
        """Every entry appears once, in seq order, tombstones with value None."""
        store = backend.store()
        populate(store)
        rows = [msgpack.unpackb(chunk, raw=False) for chunk in store.driver.dump()]
        expected = [
            (tuple2dbns(ns), field, seq, time, None if gone else data, ctx)
            for ns, field, seq, time, gone, data, ctx in cache_snapshot(store)
        ]
        got = [
            (r["namespace"], r["field"], r["seq"], r["created_at"], r["value"], r["context"])
            for r in rows
        ]
        assert got == expected
        seqs = [r["seq"] for r in rows]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        tombstones = [r for r in rows if r["value"] is None]
        assert [(t["namespace"], t["field"]) for t in tombstones] == [("game/player2", "score")]
        first = rows[0]
        assert first["namespace"] == "game/player1"
        assert first["value"] == b"\x0010"
        store.close()

    def test_dump_includes_unflushed_rows(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("a")
        for i in range(5):
            s.x = i
        rows = [msgpack.unpackb(c, raw=False) for c in store.driver.dump()]
        assert [r["value"] for r in rows] == [store.codec.encode(i) for i in range(5)]
        store.close()

    def test_empty_log_dumps_nothing(self, backend: Backend) -> None:
        store = backend.store()
        assert list(store.driver.dump()) == []
        store.close()


# --------------------------------------------------------------------- restore


RESTORE_FORMS: dict[str, Callable[[list[bytes]], Any]] = {
    "bytesio": lambda chunks: io.BytesIO(b"".join(chunks)),
    "bytes": lambda chunks: b"".join(chunks),
    "odd-chunks": lambda chunks: chunks_of(b"".join(chunks)),
    "generator": lambda chunks: (c for c in chunks_of(b"".join(chunks), (4, 9, 1))),
    "dump-chunks": lambda chunks: iter(chunks),
}


class TestRestore:
    """``restore()`` appends a dump's rows with their seqs; any driver to any driver."""

    @pytest.mark.parametrize("form", list(RESTORE_FORMS))
    def test_restore_forms_reproduce_history(
        self, backend: Backend, other_backend: Backend, form: str
    ) -> None:
        chunks, history = source_dump(backend)
        driver = other_backend.driver()
        driver.restore(RESTORE_FORMS[form](chunks))
        driver.close()
        target = other_backend.store()
        assert cache_snapshot(target) == history
        player = target.storage("game", "player1")
        assert player.score == 11
        assert player.name == "Zoë ✓"
        with player:
            assert player.items == ["sword", {"k": [1, 2]}, "shield"]
        gone = target.storage("game", "player2").__history__()["score"]
        assert [v.unavailable for v in gone] == [False, True, False]
        target.close()

    def test_cross_backend_redump_is_byte_identical(
        self, backend: Backend, other_backend: Backend
    ) -> None:
        chunks, _ = source_dump(backend)
        driver = other_backend.driver()
        driver.restore(b"".join(chunks))
        again = list(driver.dump())
        driver.close()
        assert again == chunks
        assert b"".join(again) == b"".join(chunks)

    def test_restore_then_load_on_open_store(
        self, backend: Backend, other_backend: Backend
    ) -> None:
        """``store.load()`` refills the same cache dict with the restored log."""
        chunks, history = source_dump(backend)
        target = other_backend.store()
        cache = target.cache
        target.driver.restore(io.BytesIO(b"".join(chunks)))
        target.load()
        assert target.cache is cache
        assert cache_snapshot(target) == history
        target.close()

    def test_restore_keeps_seqs_and_counter_moves_past(self, backend: Backend) -> None:
        """Restored rows keep their seqs; the next write gets a larger one."""
        store = backend.store()
        s = store.storage("game", "p")
        s.a = 1  # seq 1
        s.a = 2  # seq 2
        store.driver.restore(
            [
                pack_row(10, "game/p", "b", b"\x0010", "hand:1"),
                pack_row(1000, "game/q", "c", None, "hand:2"),
            ]
        )
        store.load()
        assert [v.seq for v in s.__history__()["b"]] == [10]
        assert store.storage("game", "q").__history__()["c"][0].unavailable
        s.d = 4
        assert s.__history__()["d"][0].seq == 1001
        store = backend.reopen(store)
        assert [row[0] for row in backend.raw_rows()] == [1, 2, 10, 1000, 1001]
        store.storage("game", "p").e = 5
        assert store.storage("game", "p").__history__()["e"][0].seq == 1002
        store.close()

    def test_restore_existing_seq_fails_and_restores_nothing(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p")
        s.a = 1
        s.a = 2
        store.flush()
        before_rows = backend.raw_rows()
        before_cache = cache_snapshot(store)
        dump = [
            pack_row(50, "game/p", "b", b"\x001", "hand:1"),
            pack_row(51, "game/p", "b", b"\x002", "hand:2"),
            pack_row(2, "game/p", "b", b"\x003", "hand:3"),  # seq 2 exists
        ]
        with pytest.raises(ValueError):
            store.driver.restore(dump)
        assert backend.raw_rows() == before_rows
        store = backend.reopen(store)
        assert cache_snapshot(store) == before_cache
        assert store.storage("game", "p").get("b") is None
        store.close()

    def test_restore_same_dump_twice_fails(self, backend: Backend, other_backend: Backend) -> None:
        chunks, history = source_dump(backend)
        driver = other_backend.driver()
        driver.restore(chunks)
        with pytest.raises(ValueError):
            driver.restore(chunks)
        driver.close()
        target = other_backend.store()
        assert cache_snapshot(target) == history
        target.close()


# --------------------------------------------------------------------- reset, ensure, now


class TestReset:
    """``reset()`` empties the table; seq never goes back within one driver."""

    def test_reset_empties_and_seq_continues(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p")
        s.a = 1
        s.b = 2
        s.a = 3
        store.flush()
        store.driver.reset()
        assert backend.raw_rows() == []
        store.load()
        assert store.cache == {}
        s.c = 4
        assert s.__history__()["c"][0].seq == 4
        store.flush()
        rows = backend.raw_rows()
        assert [(r[0], r[2]) for r in rows] == [(4, "c")]
        store.close()

    def test_reset_discards_queued_rows(self, backend: Backend) -> None:
        """Rows not yet written when reset() is called do not reappear later.  (Their
        seqs are not handed out again; in shared mode they had none yet: a seq is given
        at commit, and the cache is emptied with the table.)"""
        store = backend.store()
        s = store.storage("game", "p")
        s.a = 1
        s.a = 2
        store.driver.reset()
        store.flush()
        assert backend.raw_rows() == []
        if is_shared(backend):
            assert store.cache == {}
        s.b = 1
        store.close()
        first = 1 if is_shared(backend) else 3
        assert [(r[0], r[2]) for r in backend.raw_rows()] == [(first, "b")]

    def test_reset_twice_and_reopen(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p")
        s.a = 1
        store.driver.reset()
        store.driver.reset()
        s.a = 2
        first = 1 if is_shared(backend) else 2  # (see above)
        assert s.__history__()["a"][-1].seq == first
        store = backend.reopen(store)
        # the reopened log holds only the write made after reset
        assert [v.seq for v in store.storage("game", "p").__history__()["a"]] == [first]
        store.storage("game", "p").a = 3
        assert store.storage("game", "p").__history__()["a"][-1].seq == first + 1
        store.close()


def test_ensure_is_idempotent_and_keeps_rows(backend: Backend) -> None:
    """``ensure()`` makes an empty log usable and never drops existing rows."""
    driver = backend.driver()
    driver.ensure()
    driver.ensure()
    assert list(driver.load_rows()) == []
    driver.close()
    store = backend.store()
    store.storage("a").x = 1
    store.close()
    driver = backend.driver()
    driver.ensure()
    assert [row[2] for row in driver.load_rows()] == ["x"]
    driver.close()


def test_ensure_creates_sqlite_table(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite3"
    driver = Sqlite3(path)
    driver.ensure()
    assert "appendmuch_values" in sqlite_tables(path)
    assert sqlite_count(path) == 0
    driver.close()


def test_now_is_time_of_last_write(backend: Backend) -> None:
    store = backend.store()
    s = store.storage("game", "p")
    s.x = 1
    assert store.driver.now == s.__history__()["x"][-1].time
    s.y = 2
    t_y = s.__history__()["y"][-1].time
    assert store.driver.now == t_y
    del s.x
    t_del = s.__history__()["x"][-1].time
    assert store.driver.now == t_del
    last = msgpack.unpackb(list(store.driver.dump())[-1], raw=False)
    assert last["created_at"] == store.driver.now
    store.close()


# --------------------------------------------------------------------- sequence counter


class TestSequence:
    """Seqs are strictly increasing across the store and resume after a reopen."""

    def test_resumes_after_largest_stored_seq(self, backend: Backend) -> None:
        store = backend.store()
        a = store.storage("game", "a")
        b = store.storage("game", "b")
        a.x = 1
        b.x = 2
        a.y = 3
        del b.x
        seqs = sorted(v.seq for s in (a, b) for vs in s.__history__().values() for v in vs)
        assert seqs == [1, 2, 3, 4]
        store = backend.reopen(store)
        c = store.storage("game", "c")
        c.x = 1
        assert c.__history__()["x"][0].seq == 5
        store = backend.reopen(store)
        store.storage("game", "a").z = 1
        assert store.storage("game", "a").__history__()["z"][0].seq == 6
        store.close()
        assert [r[0] for r in backend.raw_rows()] == [1, 2, 3, 4, 5, 6]

    def test_failed_write_uses_no_seq(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p")
        s.x = 1
        with pytest.raises((TypeError, ValueError)):
            s.y = object()
        s.z = 2
        assert s.__history__()["z"][0].seq == 2
        store.close()


class TestSqliteConnection:
    """A Sqlite3 driver reopens by itself after close()."""

    def test_use_after_close(self, tmp_path: Path) -> None:
        path = tmp_path / "c.sqlite3"
        driver = Sqlite3(path)
        store = Store(driver)
        s = store.storage("game", "p")
        s.x = 1
        driver.close()
        assert sqlite_count(path) == 1
        s.y = 2
        store.flush()
        assert sqlite_count(path) == 2
        driver.close()
        assert [row[2] for row in driver.load_rows()] == ["x", "y"]
        driver.close()
        assert isinstance(driver.size(), int)
        assert len(list(driver.dump())) == 2
        store.close()

    def test_driver_close_writes_pending_rows(self, tmp_path: Path) -> None:
        path = tmp_path / "c.sqlite3"
        driver = Sqlite3(path)
        store = Store(driver)
        for i in range(3):
            store.storage("a").x = i
        driver.close()
        assert sqlite_count(path) == 3


# --------------------------------------------------------------------- names


SQL_DRIVERS: dict[str, Callable[..., DBDriver]] = {
    "sqlite": lambda tmp, **kw: Sqlite3(tmp / "n.sqlite3", **kw),
    "postgresql": lambda tmp, **kw: PostgreSQL("", **kw),
}
BAD_PREFIXES = ["", "1abc", "a-b", "a b", "tbl;drop", 'a"b', "é", "x.y"]
BAD_EXTRAS = ["a-b", "a b", "x;y", 'q"', "é", "x.y"]


class TestTableNames:
    """table_prefix/tblextra must be ASCII identifiers and select ``{prefix}{extra}_values``."""

    @pytest.mark.parametrize("kind", list(SQL_DRIVERS))
    @pytest.mark.parametrize("prefix", BAD_PREFIXES)
    def test_bad_table_prefix(self, tmp_path: Path, kind: str, prefix: str) -> None:
        with pytest.raises(ValueError):
            SQL_DRIVERS[kind](tmp_path, table_prefix=prefix)
        assert not (tmp_path / "n.sqlite3").exists()

    @pytest.mark.parametrize("kind", list(SQL_DRIVERS))
    @pytest.mark.parametrize("extra", BAD_EXTRAS)
    def test_bad_tblextra(self, tmp_path: Path, kind: str, extra: str) -> None:
        with pytest.raises(ValueError):
            SQL_DRIVERS[kind](tmp_path, tblextra=extra)

    def test_prefix_and_extra_select_table(self, tmp_path: Path) -> None:
        path = tmp_path / "t.sqlite3"
        with Store(Sqlite3(path, table_prefix="Game_1", tblextra="run_A")) as store:
            store.storage("a").x = 1
        assert sqlite_tables(path) == {"Game_1run_A_values", "sqlite_sequence"}
        assert sqlite_count(path, "Game_1run_A_values") == 1

    def test_default_table_name(self, tmp_path: Path) -> None:
        path = tmp_path / "t.sqlite3"
        with Store(Sqlite3(path)) as store:
            store.storage("a").x = 1
        assert "appendmuch_values" in sqlite_tables(path)
        assert sqlite_count(path) == 1

    def test_two_prefixes_in_one_file_stay_separate(self, tmp_path: Path) -> None:
        path = tmp_path / "shared.sqlite3"
        alpha = Store(Sqlite3(path, table_prefix="alpha"))
        beta = Store(Sqlite3(path, table_prefix="beta"))
        alpha.storage("game", "p").score = 1
        beta.storage("game", "p").score = 2
        beta.storage("game", "p").other = 3
        alpha.close()
        beta.close()
        assert sqlite_count(path, "alpha_values") == 1
        assert sqlite_count(path, "beta_values") == 2
        alpha = Store(Sqlite3(path, table_prefix="alpha"))
        beta = Store(Sqlite3(path, table_prefix="beta"))
        assert alpha.storage("game", "p").score == 1
        assert alpha.storage("game", "p").get("other") is None
        assert beta.storage("game", "p").score == 2
        # each table has its own sequence counter
        alpha.storage("game", "p").score = 10
        assert alpha.storage("game", "p").__history__()["score"][-1].seq == 2
        alpha.close()
        beta.close()

    def test_tblextra_separates_logs(self, tmp_path: Path) -> None:
        path = tmp_path / "shared.sqlite3"
        with Store(Sqlite3(path)) as plain, Store(Sqlite3(path, tblextra="x")) as extra:
            plain.storage("a").v = "plain"
            extra.storage("a").v = "extra"
        assert Store(Sqlite3(path)).storage("a").v == "plain"
        assert Store(Sqlite3(path, tblextra="x")).storage("a").v == "extra"
        assert {"appendmuch_values", "appendmuchx_values"} <= sqlite_tables(path)


# --------------------------------------------------------------------- replace indexes


BAD_SPEC_FIELDS = ["1x", "a-b", "a b", "", "x'y", "é", "f;g"]
BAD_SPEC_PATTERNS = ["game/%'", "a b", "a;b", "a*", "ü", 'a"b', "a\\b", "a'); DROP"]


class TestReplaceIndexSpecs:
    """``replace_index_specs=[(field, like_pattern)]``: validated, then unique indexes."""

    @pytest.mark.parametrize("kind", list(SQL_DRIVERS))
    @pytest.mark.parametrize("field", BAD_SPEC_FIELDS)
    def test_bad_field(self, tmp_path: Path, kind: str, field: str) -> None:
        with pytest.raises(ValueError):
            SQL_DRIVERS[kind](tmp_path, replace_index_specs=[(field, "game/%")])

    @pytest.mark.parametrize("kind", list(SQL_DRIVERS))
    @pytest.mark.parametrize("pattern", BAD_SPEC_PATTERNS)
    def test_bad_pattern(self, tmp_path: Path, kind: str, pattern: str) -> None:
        with pytest.raises(ValueError):
            SQL_DRIVERS[kind](tmp_path, replace_index_specs=[("state", pattern)])

    def test_every_allowed_pattern_character(self, tmp_path: Path) -> None:
        specs = [("state", "AZaz09_%./-"), ("phase", "game/%"), ("s_1", "%")]
        path = tmp_path / "ok.sqlite3"
        with Store(Sqlite3(path, replace_index_specs=specs)) as store:
            store.storage("game", "p").state = 1

    def test_unique_partial_index_exists(self, tmp_path: Path) -> None:
        path = tmp_path / "r.sqlite3"
        store = Store(
            Sqlite3(path, replace_index_specs=[("state", "game/%")]),
            replace_predicate=lambda ns, f: f == "state",
        )
        store.storage("game", "p").state = "a"
        store.close()
        conn = sqlite3.connect(path)
        try:
            index_rows = conn.execute("PRAGMA index_list(appendmuch_values)").fetchall()
            partial = [row for row in index_rows if row[4] == 1]
            assert len(partial) == 1
            _, name, unique, _, _ = partial[0]
            assert unique == 1
            cols = [row[2] for row in conn.execute(f'PRAGMA index_info("{name}")')]
            assert cols == ["namespace", "field"]
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type='index' AND name=?", (name,)
            ).fetchone()
            assert "state" in sql
            assert "game/%" in sql
            row = ("game/p", "state", b"\x02" + b'"b"', 1.0, "hand:1")
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(
                    "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at,"
                    " context) VALUES (99, ?, ?, ?, ?, ?)",
                    row,
                )
            # outside the pattern, or another field: not constrained
            for seq, ns, field in [(100, "other/p", "state"), (101, "other/p", "state")]:
                conn.execute(
                    "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at,"
                    " context) VALUES (?, ?, ?, NULL, 1.0, 'hand')",
                    (seq, ns, field),
                )
            conn.rollback()
        finally:
            conn.close()

    def test_index_added_to_existing_table(self, tmp_path: Path) -> None:
        path = tmp_path / "r.sqlite3"
        with Store(Sqlite3(path)) as store:
            store.storage("game", "p").state = 1
        with Store(Sqlite3(path, replace_index_specs=[("state", "game/%")])):
            pass
        conn = sqlite3.connect(path)
        try:
            partial = [
                row
                for row in conn.execute("PRAGMA index_list(appendmuch_values)")
                if row[4] == 1 and row[2] == 1
            ]
        finally:
            conn.close()
        assert len(partial) == 1

    def test_replace_rows_stay_one_per_namespace_field(self, backend: Backend) -> None:
        """Replace semantics keep one stored row per (namespace, field), across batches
        and reopens; other fields keep their whole history."""

        def predicate(dbns: str, field: str) -> bool:
            return field == "state"

        store = Store(
            backend.driver(replace_index_specs=[("state", "game/%")]),
            replace_predicate=predicate,
        )
        p1 = store.storage("game", "p1")
        p2 = store.storage("game", "p2")
        for i in range(130):
            p1.state = i
            p2.state = -i
            if i == 60:
                store.flush()
        p1.score = 1
        p1.score = 2
        store = backend.reopen(store, replace_predicate=predicate)
        p1 = store.storage("game", "p1")
        for i in range(130, 140):
            p1.state = i
        store.close()
        rows = backend.raw_rows()
        state_rows = [(r[1], r[3]) for r in rows if r[2] == "state"]
        assert sorted(state_rows) == [
            ("game/p1", store.codec.encode(139)),
            ("game/p2", store.codec.encode(-129)),
        ]
        assert len([r for r in rows if r[2] == "score"]) == 2
        store = backend.store(replace_predicate=predicate)
        assert len(store.storage("game", "p1").__history__()["state"]) == 1
        assert store.storage("game", "p1").state == 139
        store.close()


# --------------------------------------------------------------------- batching, closing


class TestBatching:
    """SQL drivers batch rows but make them visible at the documented points."""

    @staticmethod
    def counted(path: Path, writes: int) -> tuple[Store, Storage]:
        """A Store on a new SQLite file, and ``writes`` assignments of a.x (0, 1, ...)."""
        store = Store(Sqlite3(path))
        s = store.storage("a")
        for i in range(writes):
            s.x = i
        return store, s

    def test_visible_after_flush(self, tmp_path: Path) -> None:
        path = tmp_path / "b.sqlite3"
        store, s = self.counted(path, 7)
        del s.x
        store.flush()
        assert sqlite_count(path) == 8
        store.close()

    def test_visible_after_batch_size_writes(self, tmp_path: Path) -> None:
        path = tmp_path / "b.sqlite3"
        store, s = self.counted(path, 100)
        assert sqlite_count(path) == 100
        for i in range(150):
            s.y = i
        assert sqlite_count(path) >= 200
        store.close()
        assert sqlite_count(path) == 250

    def test_visible_to_second_driver_after_flush(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("a")
        for i in range(5):
            s.x = i
        store.flush()
        assert len(backend.raw_rows()) == 5
        for i in range(100):
            s.y = i
        if is_shared(backend):  # (a full batch is committed at once, by the engine thread)
            wait_for(lambda: len(backend.raw_rows()) >= 100, "the full batch")
        assert len(backend.raw_rows()) >= 100
        store.close()

    def test_store_close_writes_pending(self, tmp_path: Path) -> None:
        path = tmp_path / "b.sqlite3"
        store = Store(Sqlite3(path))
        for i in range(3):
            store.storage("a").x = i
        store.close()
        assert sqlite_count(path) == 3
        store.close()  # a second close does nothing

    def test_context_manager_closes(self, backend: Backend) -> None:
        with backend.store() as store:
            store.storage("a").x = 1
            store.storage("a").y = 2
        assert [r[2] for r in backend.raw_rows()] == ["x", "y"]

    def test_garbage_collected_store_closes_driver(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p")
        for i in range(3):
            s.x = i
        del s, store
        gc.collect()
        rows = backend.raw_rows()
        assert [r[0] for r in rows] == [1, 2, 3]

    def test_garbage_collected_sqlite_store(self, tmp_path: Path) -> None:
        path = tmp_path / "g.sqlite3"
        store = Store(Sqlite3(path))
        store.storage("a").x = 1
        del store
        gc.collect()
        assert sqlite_count(path) == 1
