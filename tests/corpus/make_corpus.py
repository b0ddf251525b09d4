"""Write the hostile-input corpus used by tests/test_hostile.py.

    python tests/corpus/make_corpus.py [OUTDIR]      (default: this directory)

Deterministic: running it again writes the same bytes (tests/test_hostile.py checks
that the committed files are exactly what this script produces).  Nothing here uses
appendmuch itself: every dump, recovery file and SQLite database is written by hand
from the documented formats (SPEC sections 9 and 10), so the corpus does not move when
the library does.

Layout:
- ``dumps/*.msgpack``: ``valid.msgpack`` (a good dump of 8 rows, seqs 10..17) and
  broken dumps.  Unless a case says otherwise, a broken dump is two good rows (row 0 and
  row 1, seqs 10 and 11) followed by the broken row (row 2, seq 12) and one more good row.
- ``recovery/*.msgpack``: recovery files (a dump whose maps may carry ``replaces``).
- ``sqlite/*.sqlite3``: database files in rollback-journal mode.  ``schema_*`` hold a
  table ``appendmuch_values`` of another layout; ``row_*`` hold the right layout with
  good rows at seqs 1, 2, 4, 5 and one bad row at seq 3; ``file_*`` are damaged files.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent

#: the SQLite library version written into every database header (bytes 96..99), so
#: files made with another SQLite release are still byte-identical
HEADER_VERSION = 3_040_001

Row = dict[str, Any]


# ---------------------------------------------------------------- dumps


def row(seq: Any, **changes: Any) -> Row:
    """A good dump map (keys in the documented order), with ``changes`` applied."""
    good: Row = {
        "seq": seq,
        "namespace": "game/p1",
        "field": "score",
        "value": b"\x00" + str(seq).encode(),
        "created_at": 1_700_000_000.0 + (seq if isinstance(seq, int) else 0),
        "context": "corpus.make:1",
    }
    good.update(changes)
    return good


def pack(*objs: Any) -> bytes:
    return b"".join(msgpack.packb(obj, use_bin_type=True) for obj in objs)


def with_bad(bad: Any) -> bytes:
    """Rows 0 and 1 good, row 2 ``bad`` (raw bytes are inserted as they are), row 3 good."""
    middle = bad if isinstance(bad, bytes) else pack(bad)
    return pack(row(10), row(11)) + middle + pack(row(13))


def bad_value(value: bytes) -> bytes:
    return with_bad(row(12, value=value))


def without(key: str) -> Row:
    return {k: v for k, v in row(12).items() if k != key}


VALID_ROWS = [
    row(10),
    row(11, field="nick", value=b'\x02"Alice"'),
    row(12, field="items", value=b'\x80["sword","shield"]'),
    row(13, field="state", value=b'\x81{"a":1,"b":[true,null]}'),
    row(14, namespace="game/p2", field="blob", value=b'\x04"AAEC/w=="'),
    row(15, field="nick", value=None),  # a tombstone
    row(16, namespace="game/p2/inventory", field="gold", value=b"\x011.5"),
    row(17, field="when", value=b'\x0c"2024-01-02T03:04:05"', context="app.main:42"),
]

VALID = pack(*VALID_ROWS)


def garbled_utf8() -> bytes:
    # a str whose bytes are not UTF-8, in row 2's namespace
    good = pack(row(12, namespace="game/pX"))
    return with_bad(good.replace(b"game/pX", b"game/p\xff"))


DUMPS: dict[str, bytes] = {
    "valid": VALID,
    # ---- stream level
    "truncated_mid_row": pack(row(10), row(11)) + pack(row(12))[:9],
    "truncated_mid_value": pack(row(10), row(11)) + pack(row(12, value=b"\x02" + b"x" * 40))[:-30],
    "truncated_one_byte_short": VALID[:-1],
    "garbled_reserved_byte": with_bad(b"\xc1"),
    "garbled_utf8": garbled_utf8(),
    "huge_bin32": with_bad(b"\xc6\xff\xff\xff\xff" + b"xyz"),
    "huge_str32": with_bad(b"\xdb\xff\xff\xff\xf0" + b"abc"),
    "huge_array32": with_bad(b"\xdd\xff\xff\xff\xff\x01"),
    "huge_map32": with_bad(b"\xdf\xff\xff\xff\xff\xa3seq\x01"),
    "huge_bin_in_value": with_bad(
        pack(row(12, value=b"PLACEHOLDER")).replace(b"\xc4\x0bPLACEHOLDER", b"\xc6\x7f\xff\xff\xff")
    ),
    "deep_nesting": with_bad(b"\x91" * 5000 + b"\x01"),
    "int_map_key": with_bad(b"\x81\x01\x02"),
    # ---- not a map
    "top_array": with_bad([1, 2, 3]),
    "top_int": with_bad(7),
    "top_nil": with_bad(None),
    "top_str": with_bad("seq"),
    "top_bin": with_bad(pack(b"\x00\x01")),
    # ---- wrong keys
    "map_empty": with_bad({}),
    "map_missing_key": with_bad(without("context")),
    "map_extra_key": with_bad({**row(12), "extra": 1}),
    "map_key_wrong_case": with_bad({("Seq" if k == "seq" else k): v for k, v in row(12).items()}),
    "map_bytes_keys": with_bad({k.encode(): v for k, v in row(12).items()}),
    # ---- type-confused values
    "seq_str": with_bad(row("12")),
    "seq_float": with_bad(row(12.0)),
    "seq_bool": with_bad(row(True)),
    "seq_nil": with_bad(row(None)),
    "seq_zero": with_bad(row(0)),
    "seq_negative": with_bad(row(-12)),
    "seq_too_big": with_bad(row(2**64 - 1)),
    "namespace_bin": with_bad(row(12, namespace=b"game/p1")),
    "namespace_int": with_bad(row(12, namespace=12)),
    "field_int": with_bad(row(12, field=12)),
    "field_nil": with_bad(row(12, field=None)),
    "value_str": with_bad(row(12, value="\x0012")),
    "value_int": with_bad(row(12, value=12)),
    "value_list": with_bad(row(12, value=[0, 12])),
    "value_ext": with_bad(row(12, value=msgpack.ExtType(5, b"\x0012"))),
    "value_empty_bin": with_bad(row(12, value=b"")),
    "created_at_str": with_bad(row(12, created_at="2024-01-01")),
    "created_at_nil": with_bad(row(12, created_at=None)),
    "created_at_bool": with_bad(row(12, created_at=True)),
    "created_at_ext_timestamp": with_bad(
        pack(row(12, created_at="PLACEHOLDER")).replace(
            b"\xabPLACEHOLDER", msgpack.packb(msgpack.Timestamp(1_700_000_000))
        )
    ),
    "context_int": with_bad(row(12, context=12)),
    "context_nil": with_bad(row(12, context=None)),
    "context_bin": with_bad(row(12, context=b"corpus.make:1")),
    # ---- seqs
    "dup_seq_adjacent": pack(row(10), row(11), row(11, field="other"), row(13)),
    "dup_seq_far": pack(row(10), row(11), row(12), row(13), row(10, field="other")),
    "seq_exists_in_target": with_bad(row(2, namespace="game/p9")),
    # ---- names
    "namespace_empty": with_bad(row(12, namespace="")),
    "namespace_space": with_bad(row(12, namespace="game/p 1")),
    "namespace_double_slash": with_bad(row(12, namespace="game//p1")),
    "namespace_leading_slash": with_bad(row(12, namespace="/game/p1")),
    "namespace_trailing_slash": with_bad(row(12, namespace="game/p1/")),
    "namespace_sql": with_bad(row(12, namespace="x'; DROP TABLE appendmuch_values; --")),
    "namespace_quote": with_bad(row(12, namespace='game/p"1')),
    "namespace_non_ascii": with_bad(row(12, namespace="game/pé")),
    "namespace_nul": with_bad(row(12, namespace="game/p\x001")),
    "field_empty": with_bad(row(12, field="")),
    "field_digit": with_bad(row(12, field="1score")),
    "field_dunder": with_bad(row(12, field="__score__")),
    "field_reserved": with_bad(row(12, field="get")),
    "field_dash": with_bad(row(12, field="sc-ore")),
    "field_sql": with_bad(row(12, field="x'); DROP TABLE appendmuch_values; --")),
    "tree_collision_field_then_namespace": pack(
        row(10), row(11), row(12, namespace="game", field="p1"), row(13)
    ),
    "tree_collision_namespace_then_field": pack(
        row(10, namespace="game/p1/inv", field="gold"),
        row(11),
        row(12, namespace="game/p1", field="inv"),
        row(13),
    ),
    # ---- values that do not decode (found when a codec is given)
    "value_unknown_type_id": bad_value(b"\x7f12"),
    "value_type_confused": bad_value(b'\x00"twelve"'),
    "value_bad_json": bad_value(b"\x02{"),
    "value_bad_base64": bad_value(b'\x04"!!!"'),
    "value_bad_utf8_json": bad_value(b'\x02"\xff"'),
    "value_trailing_garbage": bad_value(b"\x0012 13"),
    # ---- rows a careful reader may accept or refuse, but never half-restore
    "created_at_nan": with_bad(row(12, created_at=float("nan"))),
    "created_at_inf": with_bad(row(12, created_at=float("inf"))),
    "context_nul": with_bad(row(12, context="corpus\x00make:1")),
    "seq_max_int64": with_bad(row(2**63 - 1)),
    "unsorted_seqs": pack(row(13), row(10), row(12), row(11)),
}


# ---------------------------------------------------------------- recovery files


def recovery_entry(seq: int, replaces: Any = None, **changes: Any) -> Row:
    entry = row(seq, **changes)
    if replaces is not None:
        entry["replaces"] = replaces
    return entry


RECOVERY: dict[str, bytes] = {
    "valid": pack(
        recovery_entry(10),
        recovery_entry(11, field="name", value=b'\x02"Bob"'),
        recovery_entry(12, replaces=3, field="state", value=b"\x0099"),
    ),
    "replaces_str": pack(recovery_entry(10), recovery_entry(11, replaces="3")),
    "replaces_zero": pack(recovery_entry(10), recovery_entry(11, replaces=0)),
    "replaces_negative": pack(recovery_entry(10), recovery_entry(11, replaces=-1)),
    "truncated": pack(recovery_entry(10), recovery_entry(11))[:-5],
    "bad_row": pack(recovery_entry(10), recovery_entry(11, namespace="a b")),
    "dup_seq": pack(recovery_entry(10), recovery_entry(10, field="other")),
}


# ---------------------------------------------------------------- SQLite files

GOOD_TABLE = (
    "CREATE TABLE appendmuch_values ("
    "id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "seq INTEGER NOT NULL UNIQUE, "
    "namespace TEXT NOT NULL, "
    "field TEXT NOT NULL, "
    "value BLOB, "
    "created_at REAL NOT NULL, "
    "context TEXT NOT NULL)"
)
INSERT = (
    "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, context) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def good_row(seq: int) -> tuple[Any, ...]:
    return (seq, "game/p1", "score", b"\x00" + str(seq).encode(), 1_700_000_000.0 + seq, "c:1")


def schema(ddl: str, *rows: tuple[Any, ...]) -> list[tuple[str, tuple[Any, ...]]]:
    """A table of another layout (rows are inserted positionally after the id)."""
    out: list[tuple[str, tuple[Any, ...]]] = [(ddl, ())]
    for values in rows:
        marks = ", ".join("?" * len(values))
        out.append((f"INSERT INTO appendmuch_values VALUES ({marks})", values))
    return out


def bad_row(**changes: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """The right layout; good rows at seqs 1, 2, 4, 5 and a bad row at seq 3."""
    keys = ("seq", "namespace", "field", "value", "created_at", "context")
    bad = dict(zip(keys, good_row(3), strict=True))
    bad.update(changes)
    statements: list[tuple[str, tuple[Any, ...]]] = [(GOOD_TABLE, ())]
    statements += [(INSERT, good_row(seq)) for seq in (1, 2)]
    statements.append((INSERT, tuple(bad.values())))
    statements += [(INSERT, good_row(seq)) for seq in (4, 5)]
    return statements


def rows_in_order(*rows: tuple[Any, ...]) -> list[tuple[str, tuple[Any, ...]]]:
    return [(GOOD_TABLE, ()), *((INSERT, values) for values in rows)]


COLUMNS_OK = (
    "id INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, namespace TEXT NOT NULL, "
    "field TEXT NOT NULL, value BLOB, created_at REAL NOT NULL, context TEXT NOT NULL"
)

SQLITE: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "valid": rows_in_order(*(good_row(seq) for seq in (1, 2, 3, 4, 5))),
    # ---- incompatible layouts
    "schema_missing_context": schema(
        "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY, seq INTEGER UNIQUE, "
        "namespace TEXT, field TEXT, value BLOB, created_at REAL)",
        (1, 1, "game/p1", "score", b"\x001", 1.0),
    ),
    "schema_seq_text": schema(
        COLUMNS_OK.join(("CREATE TABLE appendmuch_values (", ")")).replace(
            "seq INTEGER", "seq TEXT"
        ),
        (1, "1", "game/p1", "score", b"\x001", 1.0, "c:1"),
    ),
    "schema_created_at_text": schema(
        COLUMNS_OK.join(("CREATE TABLE appendmuch_values (", ")")).replace(
            "created_at REAL", "created_at TEXT"
        ),
    ),
    "schema_value_integer": schema(
        COLUMNS_OK.join(("CREATE TABLE appendmuch_values (", ")")).replace(
            "value BLOB", "value INTEGER"
        ),
    ),
    "schema_id_not_primary_key": schema(
        COLUMNS_OK.join(("CREATE TABLE appendmuch_values (", ")")).replace(
            "id INTEGER PRIMARY KEY", "id INTEGER"
        ),
        (7, 1, "game/p1", "score", b"\x001", 1.0, "c:1"),
    ),
    "schema_extra_not_null": schema(
        COLUMNS_OK.join(("CREATE TABLE appendmuch_values (", ", owner TEXT NOT NULL)")),
        (1, 1, "game/p1", "score", b"\x001", 1.0, "c:1", "me"),
    ),
    "schema_seq_not_unique": schema(
        COLUMNS_OK.join(("CREATE TABLE appendmuch_values (", ")")).replace(
            "seq INTEGER NOT NULL UNIQUE", "seq INTEGER NOT NULL"
        ),
        (1, 1, "game/p1", "score", b"\x001", 1.0, "c:1"),
        (2, 1, "game/p1", "score", b"\x002", 2.0, "c:1"),
    ),
    "schema_view": [
        ("CREATE TABLE real_values (" + COLUMNS_OK + ")", ()),
        ("CREATE VIEW appendmuch_values AS SELECT * FROM real_values", ()),
        (
            "INSERT INTO real_values VALUES (?, ?, ?, ?, ?, ?, ?)",
            (1, 1, "game/p1", "score", b"\x001", 1.0, "c:1"),
        ),
    ],
    # ---- rows that do not decode or cannot be loaded
    "row_value_unknown_type_id": bad_row(value=b"\x7f3"),
    "row_value_type_confused": bad_row(value=b'\x00"three"'),
    "row_value_bad_json": bad_row(value=b"\x02{"),
    "row_value_empty": bad_row(value=b""),
    "row_value_text": bad_row(value="\x003"),
    "row_value_integer": bad_row(value=3),
    "row_seq_text": bad_row(seq="three"),
    "row_seq_real": bad_row(seq=2.5),
    "row_created_at_text": bad_row(created_at="yesterday"),
    "row_namespace_blob": bad_row(namespace=b"game/p1"),
    "row_namespace_space": bad_row(namespace="game/p 1"),
    "row_namespace_empty": bad_row(namespace=""),
    "row_namespace_double_slash": bad_row(namespace="game//p1"),
    "row_namespace_sql": bad_row(namespace="x'; DROP TABLE appendmuch_values; --"),
    "row_field_digit": bad_row(field="3score"),
    "row_field_dunder": bad_row(field="__score__"),
    "row_field_reserved": bad_row(field="flush"),
    "row_field_empty": bad_row(field=""),
    "row_field_sql": bad_row(field="x'); DROP TABLE appendmuch_values; --"),
    "row_field_integer": bad_row(field=3),
    "row_field_blob": bad_row(field=b"score"),
    "row_context_blob": bad_row(context=b"c:1"),
    "row_created_at_blob": bad_row(created_at=b"\x00"),
    "row_tree_collision": bad_row(namespace="game", field="p1"),
    "row_tree_collision_reverse": rows_in_order(
        good_row(1),
        good_row(2),
        (3, "game/p1/score", "gold", b"\x003", 1_700_000_003.0, "c:1"),
        good_row(4),
    ),
}


def _normalise_header(path: Path) -> None:
    """Pin the "SQLite version that last wrote" header field (informational only)."""
    with open(path, "r+b") as fh:
        fh.seek(96)
        fh.write(HEADER_VERSION.to_bytes(4, "big"))


def make_sqlite(path: Path, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("BEGIN")
        for sql, params in statements:
            conn.execute(sql, params)
        conn.execute("COMMIT")
    finally:
        conn.close()
    _normalise_header(path)


def damaged_files(valid: bytes) -> dict[str, bytes]:
    garbled = bytearray(valid)
    garbled[16:18] = b"\x00\x03"  # page size 3: not a database
    return {
        "file_not_a_database": bytes(range(256)) * 16,
        "file_truncated": valid[: len(valid) // 2 + 100],
        "file_header_garbled": bytes(garbled),
    }


# ---------------------------------------------------------------- main


def write_all(out: Path) -> list[Path]:
    """Write every corpus file under ``out``; return their paths."""
    written: list[Path] = []

    def put(relative: str, data: bytes) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)

    for name, data in DUMPS.items():
        put(f"dumps/{name}.msgpack", data)
    for name, data in RECOVERY.items():
        put(f"recovery/{name}.msgpack", data)
    (out / "sqlite").mkdir(parents=True, exist_ok=True)
    for name, statements in SQLITE.items():
        path = out / "sqlite" / f"{name}.sqlite3"
        make_sqlite(path, statements)
        written.append(path)
    valid = (out / "sqlite" / "valid.sqlite3").read_bytes()
    for name, data in damaged_files(valid).items():
        put(f"sqlite/{name}.sqlite3", data)
    return written


def _check_no_strays(out: Path) -> None:
    strays = [p for p in out.rglob("*") if p.is_file() and p.name.endswith(("-journal", "-wal"))]
    if strays:
        raise RuntimeError(f"stray SQLite files: {strays}")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else HERE
    written = write_all(out)
    _check_no_strays(out)
    print(f"wrote {len(written)} files under {os.fspath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
