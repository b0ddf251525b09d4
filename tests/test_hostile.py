"""Hostile input: broken dumps, recovery files and SQLite databases, and SQL-looking names.

The inputs live in a fixed corpus (tests/corpus/, written by tests/corpus/make_corpus.py,
whose output must match the committed files byte for byte).  Each bad input must raise
an error saying what is wrong and where (row index, seq, namespace, field, table or
file) and change nothing:

- a dump that ``restore`` refuses restores no row, not even the good rows before the bad
  one, and does not move the sequence counter (restore is all-or-nothing);
- a database that a Store refuses to open is left byte-identical, with no lock file,
  journal or WAL file left beside it, whether it was opened for writing or read-only;
- a name with SQL metacharacters is refused before any SQL runs: no table, index or row
  appears or changes.

A hypothesis test mutates a good dump byte by byte (flip, insert, delete, truncate) and
checks that ``restore`` either stores exactly the rows the mutated dump holds, or raises
a ValueError (DumpFormatError) and stores nothing, on every backend.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appendmuch import Codec, Memory, Sqlite3, Store
from appendmuch.drivers import DBDriver
from appendmuch.dumpfile import MAX_RESTORED_SEQ
from appendmuch.errors import AppendmuchError, DumpFormatError
from appendmuch.recovery import replay
from backends import Backend, PostgresBackend, SqliteBackend
from snapshots import cache_snapshot, state, unchanged

CORPUS = Path(__file__).resolve().parent / "corpus"
MAKE_CORPUS = CORPUS / "make_corpus.py"

Row = tuple[Any, ...]


def corpus(kind: str, name: str) -> Path:
    suffix = ".sqlite3" if kind == "sqlite" else ".msgpack"
    return CORPUS / kind / f"{name}{suffix}"


def corpus_names(kind: str) -> set[str]:
    return {path.stem for path in (CORPUS / kind).iterdir() if path.is_file()}


# ---------------------------------------------------------------- independent dump reading


def parse_dump(data: bytes) -> list[Row]:
    """The rows of a dump, read with msgpack directly (not with appendmuch)."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    rows = []
    for obj in unpacker:
        rows.append(
            (
                obj["seq"],
                obj["namespace"],
                obj["field"],
                obj["value"],
                float(obj["created_at"]),
                obj["context"],
            )
        )
    return rows


def pack_rows(rows: list[Row]) -> bytes:
    """Rows as the documented dump format (msgpack maps in key order), sorted by seq."""
    out = b""
    for seq, namespace, field, value, created_at, context in sorted(rows, key=lambda r: r[0]):
        out += msgpack.packb(
            {
                "seq": seq,
                "namespace": namespace,
                "field": field,
                "value": value,
                "created_at": float(created_at),
                "context": context,
            },
            use_bin_type=True,
        )
    return out


def dumped(driver: DBDriver) -> bytes:
    return b"".join(driver.dump())


#: rows every restore target holds before the hostile input (seqs 1, 2, 3)
TARGET_ROWS: list[Row] = [
    (1, "game/p1", "score", b"\x001", 1_600_000_001.0, "target.setup:1"),
    (2, "game/p1", "score", b"\x002", 1_600_000_002.0, "target.setup:2"),
    (3, "other", "x", b'\x02"y"', 1_600_000_003.0, "target.setup:3"),
]


def make_target(backend: Backend) -> Store:
    """A Store on ``backend`` holding TARGET_ROWS (seqs 1..3)."""
    driver = backend.driver()
    driver.restore(pack_rows(TARGET_ROWS))
    driver.close()
    store = backend.store()
    assert store.driver.last_seq == 3
    return store


def assert_target_unchanged(backend: Backend, store: Store, before: tuple[Any, ...]) -> None:
    """The target holds exactly what it held, its counter did not move, a reload sees
    the same log, and the next write gets seq 4."""
    assert [tuple(row) for row in backend.raw_rows()] == sorted(TARGET_ROWS)
    assert state(store) == before
    cache = cache_snapshot(store)
    store.load()
    assert cache_snapshot(store) == cache
    assert store.driver.last_seq == 3
    player = store.storage("game", "p1")
    player.after = 1
    assert player.__history__()["after"][-1].seq == 4


# ---------------------------------------------------------------- the corpus itself


def test_make_corpus_reproduces_the_committed_files(tmp_path: Path) -> None:
    """The committed corpus is exactly what make_corpus.py writes (byte for byte), so the
    files can be regenerated and reviewed from the script."""
    out = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, str(MAKE_CORPUS), str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    made = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(CORPUS): p.read_bytes()
        for p in CORPUS.rglob("*")
        if p.is_file() and p.suffix in {".msgpack", ".sqlite3"}
    }
    assert sorted(made) == sorted(committed)
    different = [str(name) for name in made if made[name] != committed[name]]
    assert different == []


# ---------------------------------------------------------------- dumps

#: refused with or without a codec: file name -> what the message must say
STRUCTURAL: dict[str, str] = {
    "truncated_mid_row": r"truncated.*after 2 complete rows",
    "truncated_mid_value": r"truncated.*after 2 complete rows",
    "truncated_one_byte_short": r"truncated.*after 7 complete rows",
    "garbled_reserved_byte": r"not valid msgpack.*after 2 complete rows",
    "garbled_utf8": r"after 2 complete rows.*(utf-8|UTF-8)",
    "huge_bin32": r"after 2 complete rows",
    "huge_str32": r"after 2 complete rows",
    "huge_array32": r"after 2 complete rows",
    "huge_map32": r"after 2 complete rows",
    "huge_bin_in_value": r"after 2 complete rows",
    "deep_nesting": r"after 2 complete rows",
    "int_map_key": r"after 2 complete rows.*(key|int)",
    "top_array": r"row 2\b.*list.*map",
    "top_int": r"row 2\b.*int.*map",
    "top_nil": r"row 2\b.*None.*map",
    "top_str": r"row 2\b.*str.*map",
    "top_bin": r"row 2\b.*bytes.*map",
    "map_empty": r"row 2\b.*missing.*seq",
    "map_missing_key": r"row 2\b.*missing.*context",
    "map_extra_key": r"row 2\b.*extra",
    "map_key_wrong_case": r"row 2\b.*missing.*'seq'.*'Seq'",
    "map_bytes_keys": r"row 2\b.*missing.*seq",
    "seq_str": r"row 2\b.*seq.*'12'",
    "seq_float": r"row 2\b.*seq.*12\.0",
    "seq_bool": r"row 2\b.*seq.*True",
    "seq_nil": r"row 2\b.*seq.*None",
    "seq_zero": r"row 2\b.*seq.*\b0\b",
    "seq_negative": r"row 2\b.*seq.*-12",
    "seq_too_big": r"row 2\b.*seq.*18446744073709551615",
    "namespace_bin": r"row 2\b.*seq 12\b.*namespace",
    "namespace_int": r"row 2\b.*seq 12\b.*namespace",
    "field_int": r"row 2\b.*seq 12\b.*field",
    "field_nil": r"row 2\b.*seq 12\b.*field",
    "value_str": r"row 2\b.*seq 12\b.*value.*str",
    "value_int": r"row 2\b.*seq 12\b.*value.*int",
    "value_list": r"row 2\b.*seq 12\b.*value.*list",
    "value_ext": r"row 2\b.*seq 12\b.*value.*ExtType",
    "value_empty_bin": r"row 2\b.*seq 12\b.*value.*empty",
    "created_at_str": r"row 2\b.*seq 12\b.*created_at",
    "created_at_nil": r"row 2\b.*seq 12\b.*created_at",
    "created_at_bool": r"row 2\b.*seq 12\b.*created_at",
    "created_at_ext_timestamp": r"row 2\b.*seq 12\b.*created_at",
    "context_int": r"row 2\b.*seq 12\b.*context",
    "context_nil": r"row 2\b.*seq 12\b.*context",
    "context_bin": r"row 2\b.*seq 12\b.*context",
    "dup_seq_adjacent": r"row 2\b.*seq 11\b.*twice",
    "dup_seq_far": r"row 4\b.*seq 10\b.*twice",
    "seq_exists_in_target": r"seq 2\b.*already exists",
    "namespace_empty": r"row 2\b.*seq 12\b.*namespace ''",
    "namespace_space": r"row 2\b.*seq 12\b.*'game/p 1'",
    "namespace_double_slash": r"row 2\b.*seq 12\b.*'game//p1'",
    "namespace_leading_slash": r"row 2\b.*seq 12\b.*'/game/p1'",
    "namespace_trailing_slash": r"row 2\b.*seq 12\b.*'game/p1/'",
    "namespace_sql": r"row 2\b.*seq 12\b.*DROP TABLE",
    "namespace_quote": r"row 2\b.*seq 12\b.*namespace.*p\"1",
    "namespace_non_ascii": r"row 2\b.*seq 12\b.*'game/pé'",
    "namespace_nul": r"row 2\b.*seq 12\b.*namespace",
    "field_empty": r"row 2\b.*seq 12\b.*field name ''",
    "field_digit": r"row 2\b.*seq 12\b.*'1score'",
    "field_dunder": r"row 2\b.*seq 12\b.*'__score__'",
    "field_reserved": r"row 2\b.*seq 12\b.*'get'",
    "field_dash": r"row 2\b.*seq 12\b.*'sc-ore'",
    "field_sql": r"row 2\b.*seq 12\b.*DROP TABLE",
}

#: well-formed rows whose value bytes do not decode: refused when a codec is given
UNDECODABLE: dict[str, str] = {
    "value_unknown_type_id": r"127",
    "value_type_confused": r"int",
    "value_bad_json": r"str",
    "value_bad_base64": r"bytes",
    "value_bad_utf8_json": r"str",
    "value_trailing_garbage": r"int",
}

#: odd but arguably well-formed: restored exactly (and then usable) or refused cleanly
EITHER: set[str] = {
    "created_at_nan",
    "created_at_inf",
    "context_nul",
    "seq_max_int64",
    "unsorted_seqs",
    "tree_collision_field_then_namespace",
    "tree_collision_namespace_then_field",
}


def test_every_dump_in_the_corpus_has_an_expectation() -> None:
    """No corpus dump goes untested, and no expectation names a missing file."""
    expected = {"valid"} | set(STRUCTURAL) | set(UNDECODABLE) | EITHER
    assert corpus_names("dumps") == expected


def test_valid_corpus_dump_restores_on_every_backend(backend: Backend) -> None:
    """The corpus's good dump restores, dumps back byte for byte, and reads back after a
    reopen (so the broken dumps differ from a good one only where they are broken)."""
    store = make_target(backend)
    data = corpus("dumps", "valid").read_bytes()
    assert store.driver.restore(data, codec=store.codec) == 8
    assert dumped(store.driver) == pack_rows(TARGET_ROWS) + data
    store = backend.reopen(store)
    p1 = store.storage("game", "p1")
    assert p1.score == 10
    assert p1.get("nick") is None
    with p1:
        assert p1.items == ["sword", "shield"]
        assert p1.state == {"a": 1, "b": [True, None]}
    assert store.storage("game", "p2").blob == b"\x00\x01\x02\xff"
    assert store.storage("game", "p2", "inventory").gold == 1.5
    assert store.driver.last_seq == 17
    store.close()


@pytest.mark.parametrize("name", sorted(STRUCTURAL))
def test_broken_dump_is_refused_and_restores_nothing(backend: Backend, name: str) -> None:
    """A structurally broken dump raises DumpFormatError (a ValueError) saying what is
    wrong and where, given as bytes, as a binary file or as chunks, with or without a
    codec; no row is restored, not even the good rows before the bad one."""
    store = make_target(backend)
    before = state(store)
    path = corpus("dumps", name)
    data = path.read_bytes()
    pattern = STRUCTURAL[name]
    with pytest.raises(DumpFormatError, match=pattern):
        store.driver.restore(data)
    with pytest.raises(DumpFormatError, match=pattern), open(path, "rb") as fh:
        store.driver.restore(fh, codec=store.codec)
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    with pytest.raises(DumpFormatError, match=pattern):
        store.driver.restore(chunks)
    assert_target_unchanged(backend, store, before)
    store.close()


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_undecodable_value_is_refused_with_a_codec(backend: Backend, name: str) -> None:
    """restore(..., codec=...) refuses a row whose value bytes do not decode, naming the
    row, seq, namespace and field, and restores nothing.  Without a codec the bytes are
    not checked (documented); a Store opening that log then fails naming the row."""
    store = make_target(backend)
    before = state(store)
    data = corpus("dumps", name).read_bytes()
    where = r"row 2\b.*seq 12\b.*game/p1.*score.*"
    with pytest.raises(DumpFormatError, match=where + UNDECODABLE[name]):
        store.driver.restore(data, codec=store.codec)
    assert_target_unchanged(backend, store, before)
    store.close()

    driver = backend.driver()
    assert driver.restore(data) == 4
    driver.close()
    with pytest.raises(ValueError, match=r"seq 12\b.*game/p1.*score"):
        backend.store()
    gc.collect()


@pytest.mark.parametrize("name", sorted(EITHER))
def test_odd_dump_restores_exactly_or_nothing(backend: Backend, name: str) -> None:
    """A dump that is odd but possibly acceptable is either restored exactly, leaving a
    log that a Store can open and read, or refused with DumpFormatError naming the row,
    restoring nothing.  Never another exception, never part of it, never a log that can
    no longer be opened."""
    store = make_target(backend)
    before = state(store)
    data = corpus("dumps", name).read_bytes()
    rows = parse_dump(data)
    try:
        count = store.driver.restore(data, codec=store.codec)
    except DumpFormatError as exc:
        assert re.search(r"row \d+\b|seq \d+\b", str(exc)), f"no row named: {exc}"
        assert_target_unchanged(backend, store, before)
        store.close()
        return
    assert count == len(rows)
    assert dumped(store.driver) == pack_rows(TARGET_ROWS + rows)
    store.close()
    reopened = backend.store()  # the restored log must still open
    for seq, namespace, field, value, _, _ in rows:
        log = reopened.get_namespace(tuple(namespace.split("/")))[field]  # type: ignore[index]
        assert seq in [v.seq for v in log]
        assert reopened.codec.encode(log[-1].data) == value or log[-1].seq != seq
    reopened.close()


# ---------------------------------------------------------------- mutated dumps (hypothesis)

VALID_DUMP = corpus("dumps", "valid").read_bytes()
VALID_ROWS = parse_dump(VALID_DUMP)
_fresh = itertools.count()


@st.composite
def mutated_dumps(draw: st.DrawFn) -> bytes:
    """The good corpus dump with 1-3 byte-level mutations."""
    buf = bytearray(VALID_DUMP)
    for _ in range(draw(st.integers(1, 3))):
        if not buf:
            break
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        elif kind == "delete":
            del buf[pos : pos + draw(st.integers(1, 9))]
        else:
            del buf[pos:]
    return bytes(buf)


def fresh_driver(backend: Backend) -> DBDriver:
    """A new, empty location on ``backend`` (a table of its own for SQL backends)."""
    if backend.name == "memory":
        return Memory()
    return backend.driver(tblextra=f"h{next(_fresh)}")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=mutated_dumps(), with_codec=st.booleans())
def test_mutated_dump_restores_exactly_or_nothing(
    backend: Backend, data: bytes, with_codec: bool
) -> None:
    """restore of a byte-mutated dump either stores exactly the rows the mutated dump
    holds (it may still be valid) or raises ValueError and stores nothing; never another
    exception type, never a partial restore, and the counter moves only on success."""
    driver = fresh_driver(backend)
    try:
        driver.restore(pack_rows(TARGET_ROWS))
        before = dumped(driver)
        codec = Codec() if with_codec else None
        try:
            count = driver.restore(data, codec=codec)
        except ValueError:
            assert dumped(driver) == before
            assert driver.last_seq == 3
            return
        rows = parse_dump(data)  # it was accepted, so it must parse as rows
        assert count == len(rows)
        assert dumped(driver) == pack_rows(TARGET_ROWS + rows)
        assert driver.last_seq == max([3, *(row[0] for row in rows)])
        if codec is not None:
            for row in rows:
                if row[3] is not None:
                    codec.decode(row[3])
    finally:
        driver.close()


# ---------------------------------------------------------------- recovery files

BAD_RECOVERY: dict[str, str] = {
    "replaces_str": r"entry 1\b.*replaces",
    "replaces_zero": r"entry 1\b.*replaces",
    "replaces_negative": r"entry 1\b.*replaces",
    "truncated": r"truncated.*after 1 complete rows",
    "bad_row": r"row 1\b.*seq 11\b.*'a b'",
    "dup_seq": r"row 1\b.*seq 10\b.*twice",
}


def test_every_recovery_file_in_the_corpus_has_an_expectation() -> None:
    assert corpus_names("recovery") == {"valid"} | set(BAD_RECOVERY)


@pytest.mark.parametrize("name", sorted(BAD_RECOVERY))
def test_broken_recovery_file_is_refused_and_writes_nothing(backend: Backend, name: str) -> None:
    """replay() of a broken recovery file raises DumpFormatError naming the entry and
    writes no row of it."""
    store = make_target(backend)
    before = state(store)
    with pytest.raises(DumpFormatError, match=BAD_RECOVERY[name]):
        replay(corpus("recovery", name), store.driver)
    assert_target_unchanged(backend, store, before)
    store.close()


def test_valid_recovery_file_replays_once(backend: Backend, tmp_path: Path) -> None:
    """The good recovery file (written without a header, so it names no database: it
    needs any_database=True) writes its rows under new seqs after the stored ones (one
    overwriting seq 3 in place, as replace semantics do); replaying it again changes
    nothing."""
    store = make_target(backend)
    store.close()
    driver = backend.driver()
    valid = shutil.copy(corpus("recovery", "valid"), tmp_path)  # replay marks the file
    assert replay(valid, driver, any_database=True) == 3
    after = dumped(driver)
    assert replay(valid, driver, any_database=True) == 0
    assert dumped(driver) == after
    driver.close()
    rows = [tuple(row) for row in backend.raw_rows()]
    assert [row[0] for row in rows] == [1, 2, 4, 5, 6]
    assert rows[-1][1:4] == ("game/p1", "state", b"\x0099")
    reopened = backend.store()
    assert reopened.storage("game", "p1").name == "Bob"
    assert reopened.driver.last_seq == 6
    reopened.close()


# ---------------------------------------------------------------- SQLite files

SCHEMA = r"appendmuch_values.*"
#: file name -> (pattern, must the error also be a RuntimeError)
SQLITE_CASES: dict[str, tuple[str, bool]] = {
    "schema_missing_context": (SCHEMA + r"'context'.*missing", True),
    "schema_seq_text": (SCHEMA + r"'seq'.*TEXT", True),
    "schema_created_at_text": (SCHEMA + r"'created_at'.*TEXT", True),
    "schema_value_integer": (SCHEMA + r"'value'.*INTEGER", True),
    "schema_id_not_primary_key": (SCHEMA + r"'id'.*primary key", True),
    "schema_extra_not_null": (SCHEMA + r"'owner'.*NOT NULL", True),
    "schema_seq_not_unique": (SCHEMA + r"'seq'.*UNIQUE", True),
    "schema_view": (r"appendmuch_values", True),
    "row_value_unknown_type_id": (r"seq 3\b.*game/p1.*score.*127", False),
    "row_value_type_confused": (r"seq 3\b.*game/p1.*score.*int", False),
    "row_value_bad_json": (r"seq 3\b.*game/p1.*score", False),
    "row_value_empty": (r"seq 3\b.*game/p1.*score.*empty", False),
    "row_value_text": (r"seq 3\b.*game/p1.*score", False),
    "row_value_integer": (r"seq 3\b.*game/p1.*score", False),
    "row_seq_text": (r"seq.*'three'", False),
    "row_seq_real": (r"seq.*2\.5", False),
    "row_created_at_text": (r"seq 3\b.*created_at", False),
    "row_created_at_blob": (r"seq 3\b.*created_at", False),
    "row_namespace_blob": (r"seq 3\b.*namespace", False),
    "row_namespace_space": (r"seq 3\b.*'game/p 1'", False),
    "row_namespace_empty": (r"seq 3\b.*namespace ''", False),
    "row_namespace_double_slash": (r"seq 3\b.*'game//p1'", False),
    "row_namespace_sql": (r"seq 3\b.*DROP TABLE", False),
    "row_field_digit": (r"seq 3\b.*'3score'", False),
    "row_field_dunder": (r"seq 3\b.*'__score__'", False),
    "row_field_reserved": (r"seq 3\b.*'flush'", False),
    "row_field_empty": (r"seq 3\b.*field name ''", False),
    "row_field_sql": (r"seq 3\b.*DROP TABLE", False),
    "row_field_integer": (r"seq 3\b.*field name '3'", False),
    "row_field_blob": (r"seq 3\b.*field", False),
    "row_context_blob": (r"seq 3\b.*context", False),
    "row_tree_collision": (r"seq 3\b.*'p1'", False),
    "row_tree_collision_reverse": (r"seq 3\b.*'score'", False),
    "file_not_a_database": (r"db\.sqlite3", True),
    "file_truncated": (r"db\.sqlite3", True),
    "file_header_garbled": (r"db\.sqlite3", True),
}


def test_every_sqlite_file_in_the_corpus_has_an_expectation() -> None:
    assert corpus_names("sqlite") == {"valid"} | set(SQLITE_CASES)


def test_valid_corpus_database_opens(tmp_path: Path) -> None:
    """The hand-made layout of the corpus is one appendmuch accepts, so the broken files
    fail because of what was broken in them."""
    path = tmp_path / "db.sqlite3"
    shutil.copy(corpus("sqlite", "valid"), path)
    store = Store(Sqlite3(path, read_only=True))
    history = store.storage("game", "p1").__history__()["score"]
    assert [(v.seq, v.data) for v in history] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    store.close()


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
@pytest.mark.parametrize("name", sorted(SQLITE_CASES))
def test_broken_sqlite_file_is_refused_and_untouched(
    tmp_path: Path, name: str, read_only: bool
) -> None:
    """Opening a Store on a damaged database, a table of another layout, or a table with
    a row that cannot be loaded raises an appendmuch error naming the problem and where
    (seq, namespace, field, table or file); the file stays byte-identical and nothing
    (lock file, journal, WAL) is left beside it once the driver is closed."""
    pattern, runtime = SQLITE_CASES[name]
    path = tmp_path / "db.sqlite3"
    shutil.copy(corpus("sqlite", name), path)
    before = _files(tmp_path)
    driver = Sqlite3(path, read_only=read_only)
    with pytest.raises(AppendmuchError, match=pattern) as info:
        Store(driver)
    if runtime:
        assert isinstance(info.value, RuntimeError)
    else:
        assert isinstance(info.value, ValueError | RuntimeError)
    driver.close()
    gc.collect()
    assert _files(tmp_path) == before


# ---------------------------------------------------------------- names


def database_state(backend: Backend) -> Any:
    """Everything a stray statement could change: the SQLite directory's files byte for
    byte, or every table of the PostgreSQL schema with this backend's rows."""
    if isinstance(backend, SqliteBackend):
        return _files(backend.path.parent)
    import psycopg

    assert isinstance(backend, PostgresBackend)
    with psycopg.connect(backend.conninfo) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1"
        ).fetchall()
    return tables, indexes, backend.raw_rows()


SQL_TEXTS = [
    "x; DROP TABLE appendmuch_values; --",
    "a'b",
    'a"b',
    "a b",
    "a-b",
    "a.b",
    "a/*c*/",
    "a)b",
    "é",
    "a\x00b",
    "a\nb",
    "",
]


def _name_cases() -> Iterator[Any]:
    for i, text in enumerate([*SQL_TEXTS, "1abc"]):
        yield pytest.param({"table_prefix": text}, text, id=f"prefix-{i}")
    for i, text in enumerate(SQL_TEXTS[:-1]):
        yield pytest.param({"tblextra": text}, text, id=f"tblextra-{i}")
    for i, text in enumerate(SQL_TEXTS):
        spec = [(text, "game/%")]
        yield pytest.param({"replace_index_specs": spec}, text, id=f"spec-field-{i}")
    patterns = ["%' OR 1=1 --", "a'b", 'a"b', "a;b", "a b", "a)b", "a\\b", "é", "a\x00b", ""]
    for i, text in enumerate(patterns):
        spec = [("score", text)]
        yield pytest.param({"replace_index_specs": spec}, text, id=f"spec-pattern-{i}")


@pytest.mark.parametrize(("kwargs", "offending"), list(_name_cases()))
def test_sql_metacharacters_in_table_names_are_refused(
    place: Backend, kwargs: dict[str, Any], offending: str
) -> None:
    """table_prefix, tblextra and both parts of a replace index spec are checked when the
    driver is built: SQL metacharacters raise ValueError quoting the offending text, and
    no table, index, row or file appears or changes."""
    store = place.store()
    store.storage("game", "p1").score = 1
    store.close()
    before = database_state(place)
    with pytest.raises(ValueError, match=re.escape(repr(offending))):
        place.driver(**kwargs)
    assert database_state(place) == before


BAD_TOKENS = [t for t in SQL_TEXTS if t not in {"a-b", "a.b"}] + ["a/b", "%", "_%"]
BAD_FIELDS = [*(t for t in SQL_TEXTS if t != "é"), "select'", "1drop", "get"]


def test_sql_metacharacters_in_namespaces_and_fields_are_refused(backend: Backend) -> None:
    """Namespace tokens and field names with SQL metacharacters raise ValueError (or
    AttributeError for names reserved by Storage) before anything is written: the
    cache, the stored rows and the counter do not change."""
    store = backend.store()
    player = store.storage("game", "p1")
    player.score = 1
    with unchanged(store):
        cache = cache_snapshot(store)
        for token in BAD_TOKENS:
            with pytest.raises(ValueError, match=re.escape(repr(token))):
                store.storage(token)
            with pytest.raises(ValueError, match=re.escape(repr(token))):
                store.storage("game", token).x = 1
        for field in BAD_FIELDS:
            with pytest.raises((ValueError, AttributeError), match=re.escape(repr(field))):
                setattr(player, field, 1)
    assert cache_snapshot(store) == cache
    assert store.get_namespace(("game",)) is not None
    assert set(store.cache) == {"game"}
    store.close()


ODD_BUT_VALID_TOKENS = ["--", "..", ".", "-", "_", "x--y", "a.b-c_d", "DROP", "TABLE"]
KEYWORD_FIELDS = ["select", "drop", "table", "values", "null", "where", "from", "class"]
SQL_VALUE = "'); DROP TABLE appendmuch_values; --"


def test_sql_keywords_and_odd_valid_names_round_trip(place: Backend, tmp_path: Path) -> None:
    """Names that look like SQL but are valid (keywords as table prefix, extra part and
    field names; namespace tokens of dots and dashes) are stored verbatim and read back
    after a reopen; the database holds exactly one new table for them."""
    kw = {"table_prefix": "select", "tblextra": "_from"}
    if isinstance(place, PostgresBackend):
        kw["table_prefix"] = f"{place.prefix}select"
    store = Store(place.driver(**kw))
    for i, token in enumerate(ODD_BUT_VALID_TOKENS):
        storage = store.storage(token, "x")
        for field in KEYWORD_FIELDS:
            setattr(storage, field, f"{SQL_VALUE}{i}")
    store.close()
    reopened = Store(place.driver(**kw))
    for i, token in enumerate(ODD_BUT_VALID_TOKENS):
        storage = reopened.storage(token, "x")
        assert storage.__fields__() == KEYWORD_FIELDS
        for field in KEYWORD_FIELDS:
            assert getattr(storage, field) == f"{SQL_VALUE}{i}"
    assert reopened.driver.last_seq == len(ODD_BUT_VALID_TOKENS) * len(KEYWORD_FIELDS)
    rows = list(reopened.driver.load_rows())
    assert {row[1] for row in rows} == {f"{t}/x" for t in ODD_BUT_VALID_TOKENS}
    reopened.close()
    if isinstance(place, SqliteBackend):
        conn = sqlite3.connect(place.path)
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        conn.close()
        assert sorted(names) == ["select_from_values", "sqlite_sequence"]


def test_sqlite_reserved_table_name_is_refused_cleanly(tmp_path: Path) -> None:
    """SQLite reserves table names starting with ``sqlite_``.  A table_prefix that leads
    there is refused with ValueError when the driver is built (like any other unusable
    name), or works; it never fails later with a raw sqlite3 error."""
    path = tmp_path / "db.sqlite3"
    for prefix in ["sqlite", "sqlite_x", "SQLITE"]:
        try:
            driver = Sqlite3(path, table_prefix=prefix)
        except ValueError as exc:
            assert prefix in str(exc)
            continue
        store = Store(driver)
        store.storage("a").x = 1
        store.close()
        assert Store(Sqlite3(path, table_prefix=prefix, read_only=True)).storage("a").x == 1


def test_long_table_names_stay_distinct_on_postgresql(tmp_path: Path) -> None:
    """PostgreSQL truncates identifiers to 63 bytes.  Two table prefixes that differ only
    past that point must not end up writing one table (two writers, colliding seqs):
    either the driver refuses names that are too long (ValueError), or the logs stay
    separate."""
    from backends import pg_conninfo

    conninfo = pg_conninfo()
    stem = f"long{next(_fresh)}" + "a" * 64
    backends = [PostgresBackend(conninfo), PostgresBackend(conninfo)]
    backends[0].prefix, backends[1].prefix = f"{stem}x", f"{stem}y"
    stores: list[Store] = []
    try:
        try:
            drivers = [b.driver(recovery_dir=tmp_path) for b in backends]
        except ValueError as exc:
            assert "63" in str(exc) or "long" in str(exc)
            return
        stores = [Store(d) for d in drivers]
        stores[0].storage("a").x = 1
        stores[1].storage("b").y = 2
        for store in stores:
            store.flush()
        assert [(r[0], r[1]) for r in backends[0].raw_rows()] == [(1, "a")]
        assert [(r[0], r[1]) for r in backends[1].raw_rows()] == [(1, "b")]
    finally:
        for store in stores:
            with contextlib.suppress(AppendmuchError):
                store.close()
        for b in backends:
            b.prefix = stem[:40]
            b.cleanup()


def test_replace_indexes_exist_for_long_prefixes_on_postgresql() -> None:
    """Each replace index spec gets its own unique index even when the table name is
    long (index names are truncated by PostgreSQL at 63 bytes), or the driver refuses
    the name with ValueError."""
    import psycopg

    from backends import pg_conninfo

    backend = PostgresBackend(pg_conninfo())
    backend.prefix = f"idx{next(_fresh)}" + "b" * 52
    specs = [("f", "x/%"), ("g", "y/%")]
    try:
        try:
            driver = backend.driver(replace_index_specs=specs)
        except ValueError:
            return
        store = Store(driver, replace_predicate=lambda ns, f: f in {"f", "g"})
        store.close()
        with psycopg.connect(backend.conninfo) as conn:
            definitions = [
                d
                for (d,) in conn.execute(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = %s",
                    (f"{backend.prefix}_values",),
                )
            ]
        for field, pattern in specs:
            assert any(f"'{field}'" in d and pattern in d for d in definitions), definitions
    finally:
        backend.prefix = backend.prefix[:40]
        backend.cleanup()


# ---------------------------------------------------------------- rows the log cannot continue from

#: (seq, created_at) of one hostile row, and what the error must name
UNCONTINUABLE: dict[str, tuple[Any, Any, str]] = {
    "seq_max_int64": (2**63 - 1, 1_600_000_010.0, r"seq .*9223372036854775807.*room"),
    "seq_no_room": (2**62 + 1, 1_600_000_010.0, r"seq .*4611686018427387905.*room"),
    "seq_just_past_room": (MAX_RESTORED_SEQ + 1, 1_600_000_010.0, r"seq .*room"),
    "seq_negative": (-5, 1_600_000_010.0, r"seq .*-5"),
    "created_at_inf": (12, float("inf"), r"seq 12\b.*created_at.*inf"),
    "created_at_minus_inf": (12, float("-inf"), r"seq 12\b.*created_at.*-inf"),
    "created_at_nan": (12, float("nan"), r"seq 12\b.*created_at.*nan"),
    "created_at_negative": (12, -1.0, r"seq 12\b.*created_at.*-1\.0"),
}


@pytest.mark.parametrize("name", sorted(UNCONTINUABLE))
def test_row_the_log_cannot_continue_from_is_refused(backend: Backend, name: str) -> None:
    """A dump row whose seq leaves no room for later writes (or is negative), or whose
    time is not a finite time since the epoch, is refused naming the row; nothing is
    restored and the next write gets seq 4."""
    seq, created_at, pattern = UNCONTINUABLE[name]
    store = make_target(backend)
    before = state(store)
    good = (10, "game/p3", "x", b"\x001", 1_600_000_009.0, "hostile:1")
    data = pack_rows([good]) + msgpack.packb(
        {
            "seq": seq,
            "namespace": "game/p3",
            "field": "y",
            "value": b"\x002",
            "created_at": created_at,
            "context": "hostile:2",
        },
        use_bin_type=True,
    )
    with pytest.raises(DumpFormatError, match=r"dump row 1\b.*" + pattern):
        store.driver.restore(data)
    assert_target_unchanged(backend, store, before)
    store.close()


def test_largest_restorable_seq_leaves_room_to_write(backend: Backend) -> None:
    """A dump whose seq is the largest allowed restores, and the log goes on: the next
    writes get the following seqs, also after a reopen."""
    store = make_target(backend)
    store.driver.restore(pack_rows([(MAX_RESTORED_SEQ, "game/p3", "x", b"\x001", 1.0, "h:1")]))
    store.load()
    player = store.storage("game", "p3")
    player.x = 2
    player.x = 3
    assert [v.seq for v in player.__history__()["x"]] == [
        MAX_RESTORED_SEQ,
        MAX_RESTORED_SEQ + 1,
        MAX_RESTORED_SEQ + 2,
    ]
    store = backend.reopen(store)
    player = store.storage("game", "p3")
    player.x = 4
    assert [v.data for v in player.__history__()["x"]] == [1, 2, 3, 4]
    assert player.__history__()["x"][-1].seq == MAX_RESTORED_SEQ + 3
    store.close()
