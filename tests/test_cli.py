"""The ``appendmuch`` command, run as a real process on real databases.

Every test runs the console script (``python -m appendmuch``, or the ``appendmuch``
script of the virtual environment) in a subprocess against SQLite files written by the
library (and, in ``TestPostgreSQL``, tables on the test server), and checks what it
prints, the files it writes (parsed back with ``csv`` and ``json``), its exit status
(0 success, 1 a problem found, 2 could not run) and that errors are one line without a
traceback.  Inspection commands must leave the database untouched.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest

from appendmuch import Codec, PostgreSQL, Sqlite3, Store, within
from appendmuch.dumpfile import pack_rows
from appendmuch.recovery import write_recovery_file
from backends import pg_conninfo

ENTRY_POINTS = {
    "module": [sys.executable, "-m", "appendmuch"],
    "script": [str(Path(sys.executable).parent / "appendmuch")],
}
COMMANDS = [
    "demo",
    "info",
    "ls",
    "show",
    "history",
    "within",
    "export",
    "dump",
    "restore",
    "verify",
    "replay",
]
FRACTION_ID = 20
NOTE = 'comma, "quotes"\nsecond line, é ✓'
WHEN = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
P1 = "session1/p1"
LOG_COLUMNS = ["seq", "time", "namespace", "field", "value", "unavailable", "context"]
Row = tuple[Any, ...]


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    status: int
    raw: bytes
    err: str

    @property
    def out(self) -> str:
        return self.raw.decode("utf-8")


def run(*args: object, entry: str = "module", stdin: bytes | None = None) -> Result:
    """Run the command in a subprocess, stdout and stderr piped."""
    proc = subprocess.run(
        [*ENTRY_POINTS[entry], *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8"))


def ok(result: Result) -> str:
    """Assert success (status 0, no traceback); return stdout."""
    assert result.status == 0, result.err
    assert "Traceback" not in result.err
    return result.out


def fails(result: Result, status: int = 2) -> str:
    """Assert a failure with ``status`` and a one-line error; return that line."""
    assert result.status == status, (result.out, result.err)
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("appendmuch: "), lines
    return lines[0]


# --------------------------------------------------------------------------- logs


def fraction_codec() -> Codec:
    """The codec of an application that stores Fractions (type id 20)."""
    codec = Codec()
    codec.register(
        Fraction,
        FRACTION_ID,
        lambda f: orjson.dumps(str(f)),
        lambda raw: Fraction(orjson.loads(raw)),
    )
    return codec


def write_experiment(store: Store) -> None:
    """A small experiment: players with rounds, a deletion, every kind of value."""
    p1 = store.storage("session1", "p1")
    p1.name = "Alice"
    p1.treatment = "high"
    p1.round = 1
    p1.choice = "A"
    p1.score = 10
    p1.round = 2
    p1.choice = "B"
    p1.score = 25
    p1.bonus = 5
    del p1.bonus
    p1.items = ["sword", "shield"]
    p1.share = Fraction(1, 3)  # a custom type the default codec does not know
    p1.note = NOTE
    p1.when = WHEN
    p1.blob = b"\x00\x01"
    p1.nothing = None
    p1.flag = True
    p2 = store.storage("session1", "p2")
    p2.name = "Bob"
    p2.round = 1
    p2.score = 7
    store.storage("session1", "p10").name = "Carol"
    store.storage("session1").rounds = 2
    store.storage("session10", "p1").name = "Dan"


@dataclass
class Log:
    """A SQLite file written by the library and the rows it holds."""

    path: Path
    rows: list[Row]

    def rows_of(self, namespace: str) -> list[Row]:
        return [row for row in self.rows if row[1] == namespace]


def build_log(path: Path) -> Log:
    with Store(Sqlite3(path), codec=fraction_codec()) as store:
        write_experiment(store)
        store.flush()
        rows = [tuple(row) for row in store.driver.load_rows()]
    with Store(Sqlite3(path, table_prefix="lab", tblextra="2")) as other:
        other.storage("x").y = 1
    return Log(path, rows)


def stored_rows(path: Path, table: str = "appendmuch_values") -> list[Row]:
    """The rows of a table, read with the sqlite3 module."""
    conn = sqlite3.connect(path)
    try:
        return [
            tuple(row)
            for row in conn.execute(
                f"SELECT seq, namespace, field, value, created_at, context FROM {table} "
                "ORDER BY seq"
            )
        ]
    finally:
        conn.close()


def files_in(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a directory: its bytes and mtime."""
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()
    }


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    """The experiment log, shared by the tests that only read it."""
    return build_log(tmp_path_factory.mktemp("experiment") / "experiment.sqlite3")


@pytest.fixture
def fresh(tmp_path: Path) -> Log:
    """A private copy of the experiment log, for tests that write or watch files."""
    directory = tmp_path / "db"  # alone in its directory, so its neighbours can be checked
    directory.mkdir()
    return build_log(directory / "experiment.sqlite3")


# --------------------------------------------------------------------------- tests


class TestEntryPoints:
    """The console script and ``python -m appendmuch`` offer every command."""

    @pytest.mark.parametrize("entry", list(ENTRY_POINTS))
    def test_help_lists_every_command(self, entry: str) -> None:
        out = ok(run("--help", entry=entry))
        for command in COMMANDS:
            assert command in out

    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_command_has_help_with_an_example(self, command: str) -> None:
        out = ok(run(command, "--help"))
        assert f"usage: appendmuch {command}" in out
        assert f"example:\n  appendmuch {command}" in out

    def test_no_command_is_a_usage_error(self) -> None:
        result = run()
        assert result.status == 2
        assert "COMMAND" in result.err

    def test_unknown_command_and_missing_argument_are_usage_errors(self) -> None:
        assert run("frobnicate").status == 2
        result = run("show", "only-a-db.sqlite3")
        assert result.status == 2
        assert "the following arguments are required: NAMESPACE" in result.err

    def test_version(self) -> None:
        from appendmuch import __version__

        assert ok(run("--version")).strip() == f"appendmuch {__version__}"


class TestDemo:
    """``demo`` keeps working, and its database can be inspected."""

    @pytest.mark.parametrize("entry", list(ENTRY_POINTS))
    def test_demo_writes_a_log_that_info_reads(self, tmp_path: Path, entry: str) -> None:
        db = tmp_path / "demo.sqlite3"
        out = ok(run("demo", "--db", db, entry=entry))
        assert "within(player, round=1).score  = 10" in out
        info = json.loads(ok(run("info", db, "--json", entry=entry)))
        assert info["rows"] == 12
        assert info["tombstones"] == 1

    def test_demo_refuses_an_existing_file(self, tmp_path: Path) -> None:
        db = tmp_path / "demo.sqlite3"
        db.write_bytes(b"keep me")
        assert "already exists" in fails(run("demo", "--db", db))
        assert db.read_bytes() == b"keep me"


class TestInfo:
    """``info``: rows, seq and time range, namespaces, fields, tombstones, size, table."""

    def test_json_summary(self, log: Log) -> None:
        info = json.loads(ok(run("info", log.path, "--json")))
        times = [row[4] for row in log.rows]
        assert info["rows"] == len(log.rows) == 23
        assert (info["first_seq"], info["last_seq"]) == (1, 23)
        assert datetime.fromisoformat(info["first_time"]).timestamp() == pytest.approx(
            min(times), abs=1e-6
        )
        assert datetime.fromisoformat(info["last_time"]).timestamp() == pytest.approx(
            max(times), abs=1e-6
        )
        assert info["namespaces"] == 5
        assert info["fields"] == len({(row[1], row[2]) for row in log.rows}) == 19
        assert (info["current_fields"], info["deleted_fields"]) == (18, 1)
        assert info["tombstones"] == 1
        assert info["table"] == "appendmuch_values"
        assert info["backend"] == "sqlite"
        assert info["size"] == log.path.stat().st_size
        assert info["custom_types"] == {"20": 1}
        assert info["writer_open"] is False

    def test_a_left_over_lock_file_is_no_writer(self, fresh: Log) -> None:
        """Only a held lock is a writer: not a lock file a killed writer left behind."""
        Path(f"{os.path.realpath(fresh.path)}-appendmuch_values.lock").write_bytes(b"")
        assert json.loads(ok(run("info", fresh.path, "--json")))["writer_open"] is False
        assert "none" in ok(run("info", fresh.path))
        with Store(Sqlite3(fresh.path), codec=fraction_codec()):
            assert json.loads(ok(run("info", fresh.path, "--json")))["writer_open"] is True

    def test_human_summary(self, log: Log) -> None:
        lines = ok(run("info", log.path)).splitlines()
        fields = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in lines}
        assert fields["table"] == "appendmuch_values"
        assert fields["rows"] == "23"
        assert fields["seq"] == "1 .. 23"
        assert fields["tombstones"] == "1"
        assert fields["fields"] == "19 (18 current, 1 deleted)"
        assert fields["custom types"] == "type 20: 1 value"
        assert f"({log.path.stat().st_size:,} bytes)" in fields["size"]
        # the values start in one column
        assert len({len(line) - len(line.split("  ", 1)[1].lstrip()) for line in lines}) == 1

    def test_table_prefix_and_tblextra_select_the_table(self, log: Log) -> None:
        info = json.loads(
            ok(run("info", log.path, "--table-prefix", "lab", "--tblextra", "2", "--json"))
        )
        assert info["table"] == "lab2_values"
        assert info["rows"] == 1

    def test_unknown_table_is_an_error_naming_the_tables_there(self, log: Log) -> None:
        line = fails(run("info", log.path, "--table-prefix", "nosuch"))
        assert "nosuch_values" in line
        assert "appendmuch_values" in line and "lab2_values" in line

    def test_invalid_table_prefix_is_an_error(self, log: Log) -> None:
        assert "table_prefix" in fails(run("info", log.path, "--table-prefix", "a b"))

    def test_missing_file_is_an_error_and_is_not_created(self, tmp_path: Path) -> None:
        missing = tmp_path / "missing.sqlite3"
        assert "no such file" in fails(run("info", missing))
        assert list(tmp_path.iterdir()) == []

    def test_directory_and_non_database_are_errors(self, tmp_path: Path) -> None:
        assert "directory" in fails(run("info", tmp_path))
        text = tmp_path / "notes.txt"
        text.write_text("this is not a database\n" * 100)
        assert "SQLite" in fails(run("info", text))
        assert text.read_text() == "this is not a database\n" * 100

    def test_empty_log(self, tmp_path: Path) -> None:
        db = tmp_path / "empty.sqlite3"
        Store(Sqlite3(db)).close()
        info = json.loads(ok(run("info", db, "--json")))
        assert info["rows"] == 0
        assert info["first_seq"] is None and info["first_time"] is None


class TestLs:
    """``ls``: the namespace tree with field counts."""

    def test_json_tree(self, log: Log) -> None:
        tree = json.loads(ok(run("ls", log.path, "--json")))
        assert [node["namespace"] for node in tree] == [
            "session1",
            "session1/p1",
            "session1/p2",
            "session1/p10",
            "session10",
            "session10/p1",
        ]
        by_ns = {node["namespace"]: node for node in tree}
        assert by_ns[P1] == {"namespace": P1, "fields": 12, "deleted": 1, "entries": 17}
        assert by_ns["session1"] == {
            "namespace": "session1",
            "fields": 1,
            "deleted": 0,
            "entries": 1,
        }
        assert by_ns["session10"]["entries"] == 0  # a parent with no fields of its own

    def test_human_tree_is_indented_and_aligned(self, log: Log) -> None:
        lines = ok(run("ls", log.path)).splitlines()
        assert lines[0].split() == ["namespace", "fields", "deleted", "entries"]
        assert [line.split()[0] for line in lines[1:]] == [
            "session1",
            "p1",
            "p2",
            "p10",
            "session10",
            "p1",
        ]
        assert lines[2].startswith("  p1 ")
        assert lines[2].split()[1:] == ["12", "1", "17"]
        assert len({len(line) for line in lines}) == 1  # right-aligned counts

    def test_prefix_is_token_wise(self, log: Log) -> None:
        tree = json.loads(ok(run("ls", log.path, "session1", "--json")))
        assert [node["namespace"] for node in tree] == [
            "session1",
            "session1/p1",
            "session1/p2",
            "session1/p10",
        ]

    def test_unknown_prefix_is_an_error(self, log: Log) -> None:
        assert "session2" in fails(run("ls", log.path, "session2"))


class TestShow:
    """``show``: the current fields and values of a namespace."""

    def test_human_output(self, log: Log) -> None:
        lines = ok(run("show", log.path, P1)).splitlines()
        assert lines[0] == f"{P1}  (12 fields; deleted: bonus)"
        assert lines[1].split() == ["field", "value", "seq", "time", "(UTC)", "context"]
        rows = {line.split()[0]: line for line in lines[2:]}
        assert list(rows) == [
            "name",
            "treatment",
            "round",
            "choice",
            "score",
            "items",
            "share",
            "note",
            "when",
            "blob",
            "nothing",
            "flag",
        ]
        assert '"Alice"' in rows["name"]
        assert rows["score"].split()[1:3] == ["25", "8"]
        assert '<type 20> "1/3"' in rows["share"]
        assert '<datetime> "2024-05-01T10:00:00+00:00"' in rows["when"]
        assert '<bytes> "AAE="' in rows["blob"]
        assert '["sword","shield"]' in rows["items"]
        assert "\\n" in rows["note"]  # one line per field
        assert "bonus" not in rows

    def test_json_output(self, log: Log) -> None:
        shown = json.loads(ok(run("show", log.path, P1, "--json")))
        fields = shown["fields"]
        assert fields["score"]["value"] == 25
        assert fields["score"]["seq"] == 8
        assert fields["note"]["value"] == NOTE
        assert fields["share"]["value"] == {"$type": 20, "$json": "1/3"}
        assert fields["share"]["type_id"] == FRACTION_ID
        assert fields["nothing"]["value"] is None
        assert fields["flag"]["value"] is True
        assert shown["deleted"] == ["bonus"]
        latest = {row[2]: row for row in log.rows_of(P1)}
        assert fields["name"]["context"] == latest["name"][5]
        assert datetime.fromisoformat(fields["name"]["time"]).timestamp() == pytest.approx(
            latest["name"][4], abs=1e-6
        )

    def test_parent_namespace_lists_what_is_below(self, log: Log) -> None:
        shown = json.loads(ok(run("show", log.path, "session1", "--json")))
        assert list(shown["fields"]) == ["rounds"]
        assert shown["children"] == ["p1", "p2", "p10"]

    def test_unknown_and_invalid_namespaces_are_errors(self, log: Log) -> None:
        assert "session1/p3" in fails(run("show", log.path, "session1/p3"))
        assert "not a namespace" in fails(run("show", log.path, "bad token"))


class TestHistory:
    """``history``: every entry with seq, ISO time, value and context; tombstones marked."""

    def test_whole_namespace(self, log: Log) -> None:
        lines = ok(run("history", log.path, P1)).splitlines()
        assert lines[0].split() == ["seq", "time", "(UTC)", "field", "value", "context"]
        entries = lines[1:]
        expected = log.rows_of(P1)
        assert [int(line.split()[0]) for line in entries] == [row[0] for row in expected]
        bonus = [line for line in entries if line.split()[2] == "bonus"]
        assert bonus[0].split()[3] == "5"
        assert bonus[1].split()[3] == "<deleted>"
        for line, row in zip(entries, expected, strict=True):
            assert line.rstrip().endswith(row[5])

    def test_one_field_as_json(self, log: Log) -> None:
        history = json.loads(ok(run("history", log.path, P1, "bonus", "--json")))
        expected = [row for row in log.rows_of(P1) if row[2] == "bonus"]
        entries = history["entries"]
        assert [e["seq"] for e in entries] == [row[0] for row in expected]
        assert [e["value"] for e in entries] == [5, None]
        assert [e["unavailable"] for e in entries] == [False, True]
        for entry, row in zip(entries, expected, strict=True):
            assert datetime.fromisoformat(entry["time"]).timestamp() == pytest.approx(
                row[4], abs=1e-6
            )
            assert entry["context"] == row[5]

    def test_one_field_human(self, log: Log) -> None:
        lines = ok(run("history", log.path, P1, "score")).splitlines()
        assert lines[0].split() == ["seq", "time", "(UTC)", "value", "context"]
        assert [line.split()[2] for line in lines[1:]] == ["10", "25"]

    def test_unknown_field_is_an_error(self, log: Log) -> None:
        assert "'nosuch'" in fails(run("history", log.path, P1, "nosuch"))


class TestWithin:
    """``within``: temporal queries from the shell, as the library answers them."""

    @pytest.mark.parametrize(
        ("field", "where", "strict", "expected"),
        [
            ("score", ["round=1"], False, "10"),
            ("score", ["round=2"], False, "25"),
            ("treatment", ["round=1"], False, '"high"'),
            ("choice", ["round=1"], True, '"A"'),
            ("score", ["choice=A"], False, "10"),
            ("score", ["round=2", "choice=B"], False, "25"),
            ("name", [], False, '"Alice"'),
        ],
    )
    def test_value(
        self, log: Log, field: str, where: list[str], strict: bool, expected: str
    ) -> None:
        args = [arg for item in where for arg in ("--where", item)]
        out = ok(run("within", log.path, P1, field, *args, *(["--strict"] if strict else [])))
        assert out == expected + "\n"

    def test_same_answers_as_the_library(self, log: Log) -> None:
        with Store(Sqlite3(log.path, read_only=True), codec=fraction_codec()) as store:
            player = store.storage("session1", "p1")
            expected = {
                (rnd, field, strict): (within.strict if strict else within)(player, round=rnd).get(
                    field
                )
                for rnd in (1, 2)
                for field in ("score", "treatment")
                for strict in (False, True)
            }
        for (rnd, field, strict), value in expected.items():
            result = run(
                "within",
                log.path,
                P1,
                field,
                "--where",
                f"round={rnd}",
                "--json",
                *(["--strict"] if strict else []),
            )
            answer = json.loads(result.out)
            assert answer["found"] is (value is not None)
            assert answer["value"] == value
            assert result.status == (0 if value is not None else 1)

    def test_no_value_exits_1_with_a_message(self, log: Log) -> None:
        result = run("within", log.path, P1, "treatment", "--where", "round=1", "--strict")
        assert "has no value" in fails(result, status=1)
        assert result.out == ""

    def test_json_answer(self, log: Log) -> None:
        answer = json.loads(
            ok(run("within", log.path, P1, "items", "--where", "round=2", "--json"))
        )
        assert answer == {
            "namespace": P1,
            "field": "items",
            "where": {"round": 2},
            "strict": False,
            "found": True,
            "value": ["sword", "shield"],
        }

    def test_custom_type_value_is_shown_not_fatal(self, log: Log) -> None:
        assert ok(run("within", log.path, P1, "share")) == '<type 20> "1/3"\n'

    def test_where_value_that_is_not_json_is_text(self, log: Log) -> None:
        assert ok(run("within", log.path, P1, "round", "--where", "treatment=high")) == "2\n"
        # JSON text that means a string: round="1" never held (round is an int)
        result = run("within", log.path, P1, "score", "--where", 'round="1"')
        assert result.status == 1

    def test_errors(self, log: Log) -> None:
        assert "'nosuch'" in fails(run("within", log.path, P1, "nosuch", "--where", "round=1"))
        assert "'rnd'" in fails(run("within", log.path, P1, "score", "--where", "rnd=1"))
        assert "FIELD=VALUE" in fails(run("within", log.path, P1, "score", "--where", "round"))
        assert "session9" in fails(run("within", log.path, "session9", "score"))


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


class TestExport:
    """``export``: CSV and JSON Lines, one row per entry or per namespace."""

    @pytest.mark.parametrize("shape", ["log", "latest"])
    def test_unknown_namespace_is_an_error_and_writes_no_file(
        self, log: Log, tmp_path: Path, shape: str
    ) -> None:
        target = tmp_path / "out.csv"
        line = fails(
            run("export", log.path, "--namespace", "sesion1", "--shape", shape, "-o", target)
        )
        assert "sesion1" in line
        assert list(tmp_path.iterdir()) == []
        assert "sesion1" in fails(run("export", log.path, "--namespace", "sesion1"))

    def test_csv_log_has_every_entry(self, log: Log, tmp_path: Path) -> None:
        target = tmp_path / "log.csv"
        out = ok(run("export", log.path, "-o", target))
        assert out == f"exported 23 rows to {target}\n"
        data = target.read_bytes()
        assert b"\r" not in data.replace(b"\\r", b"")  # \n line endings (the note has \n)
        text = data.decode("utf-8")
        assert text.startswith(",".join(LOG_COLUMNS) + "\n")
        rows = read_csv(text)
        assert [int(r["seq"]) for r in rows] == [row[0] for row in log.rows]
        for r, row in zip(rows, log.rows, strict=True):
            assert (r["namespace"], r["field"], r["context"]) == (row[1], row[2], row[5])
            assert datetime.fromisoformat(r["time"]).timestamp() == pytest.approx(row[4], abs=1e-6)
            assert r["unavailable"] == ("true" if row[3] is None else "false")
            if row[3] is None:
                assert r["value"] == ""
        values = {
            r["field"]: json.loads(r["value"])
            for r in rows
            if r["namespace"] == P1 and r["unavailable"] == "false"
        }
        assert values["name"] == "Alice"
        assert values["score"] == 25
        assert values["note"] == NOTE
        assert values["items"] == ["sword", "shield"]
        assert values["share"] == {"$type": 20, "$json": "1/3"}
        assert values["when"] == "2024-05-01T10:00:00+00:00"
        assert values["blob"] == "AAE="
        assert values["nothing"] is None
        assert values["flag"] is True

    def test_jsonl_log_to_stdout(self, log: Log) -> None:
        lines = ok(run("export", log.path, "--format", "jsonl")).splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == len(log.rows)
        assert all(list(record) == LOG_COLUMNS for record in records)
        bonus = [r for r in records if r["field"] == "bonus"]
        assert [(r["value"], r["unavailable"]) for r in bonus] == [(5, False), (None, True)]
        note = next(r for r in records if r["field"] == "note")
        assert note["value"] == NOTE

    def test_csv_latest_one_row_per_namespace(self, log: Log) -> None:
        text = ok(run("export", log.path, "--shape", "latest"))
        header = text.splitlines()[0].split(",")
        assert header == [
            "namespace",
            "name",
            "treatment",
            "round",
            "choice",
            "score",
            "items",
            "share",
            "note",
            "when",
            "blob",
            "nothing",
            "flag",
            "rounds",
        ]  # bonus is deleted everywhere: no column
        rows = {r["namespace"]: r for r in read_csv(text)}
        assert list(rows) == ["session1", P1, "session1/p2", "session1/p10", "session10/p1"]
        p1 = rows[P1]
        assert p1["name"] == "Alice"
        assert p1["score"] == "25"
        assert p1["note"] == NOTE
        assert p1["items"] == '["sword","shield"]'
        assert json.loads(p1["share"]) == {"$type": 20, "$json": "1/3"}
        assert p1["when"] == "2024-05-01T10:00:00+00:00"
        assert p1["nothing"] == ""
        assert p1["flag"] == "true"
        assert p1["rounds"] == ""
        assert rows["session1/p2"]["treatment"] == ""
        assert rows["session1"]["rounds"] == "2"

    def test_jsonl_latest_with_namespace_prefix(self, log: Log, tmp_path: Path) -> None:
        target = tmp_path / "p.jsonl"
        ok(
            run(
                "export",
                log.path,
                "--shape",
                "latest",
                "--format",
                "jsonl",
                "--namespace",
                "session1",
                "-o",
                target,
            )
        )
        records = [json.loads(line) for line in target.read_text("utf-8").splitlines()]
        assert [r["namespace"] for r in records] == ["session1", P1, "session1/p2", "session1/p10"]
        assert records[2] == {"namespace": "session1/p2", "name": "Bob", "round": 1, "score": 7}
        assert records[1]["share"] == {"$type": 20, "$json": "1/3"}
        assert "bonus" not in records[1]

    def test_namespace_filter_on_the_log_shape(self, log: Log) -> None:
        rows = read_csv(ok(run("export", log.path, "--namespace", "session1/p2")))
        assert [(r["field"], r["value"]) for r in rows] == [
            ("name", '"Bob"'),
            ("round", "1"),
            ("score", "7"),
        ]

    def test_field_called_namespace_gets_its_own_column(self, tmp_path: Path) -> None:
        db = tmp_path / "ns.sqlite3"
        with Store(Sqlite3(db)) as store:
            store.storage("a").namespace = "x"
            store.storage("a").namespace_ = "y"
        rows = read_csv(ok(run("export", db, "--shape", "latest")))
        assert rows == [{"namespace": "a", "namespace__": "x", "namespace_": "y"}]

    def test_output_file_is_not_left_half_written(self, log: Log, tmp_path: Path) -> None:
        target = tmp_path / "out.csv"
        fails(run("export", log.path, "--table-prefix", "nosuch", "-o", target))
        assert list(tmp_path.iterdir()) == []

    def test_refuses_to_overwrite_the_database(self, fresh: Log) -> None:
        before = fresh.path.read_bytes()
        assert "database itself" in fails(run("export", fresh.path, "-o", fresh.path))
        assert fresh.path.read_bytes() == before


class TestDumpRestore:
    """``dump`` writes the driver's dump format; ``restore`` appends it, all or nothing."""

    def test_round_trip_is_byte_identical(self, log: Log, tmp_path: Path) -> None:
        dump = tmp_path / "backup.msgpack"
        assert ok(run("dump", log.path, "-o", dump)) == f"dumped 23 rows to {dump}\n"
        assert dump.read_bytes() == b"".join(pack_rows(log.rows))
        copy = tmp_path / "copy.sqlite3"
        out = ok(run("restore", copy, dump))
        assert out.startswith("restored 23 rows into table appendmuch_values")
        assert stored_rows(copy) == log.rows
        with Store(Sqlite3(copy), codec=fraction_codec()) as store:
            assert store.storage("session1", "p1").share == Fraction(1, 3)

    def test_dump_to_stdout_and_restore_from_stdin(self, log: Log, tmp_path: Path) -> None:
        result = run("dump", log.path, "-o", "-")
        assert result.status == 0 and result.err == ""
        assert result.raw == b"".join(pack_rows(log.rows))
        copy = tmp_path / "copy.sqlite3"
        ok(run("restore", copy, "-", stdin=result.raw))
        assert stored_rows(copy) == log.rows

    def test_restore_is_all_or_nothing(self, log: Log, tmp_path: Path) -> None:
        dump = tmp_path / "backup.msgpack"
        ok(run("dump", log.path, "-o", dump))
        copy = tmp_path / "copy.sqlite3"
        ok(run("restore", copy, dump))
        assert "already exists" in fails(run("restore", copy, dump), status=1)
        assert stored_rows(copy) == log.rows
        truncated = tmp_path / "truncated.msgpack"
        truncated.write_bytes(dump.read_bytes()[:-5])
        assert "truncated" in fails(run("restore", copy, truncated), status=1)
        assert stored_rows(copy) == log.rows
        other = tmp_path / "other.sqlite3"
        assert "truncated" in fails(run("restore", other, truncated), status=1)
        assert not other.exists()  # a bad dump creates no database

    def test_custom_types_restore_unless_strict(self, log: Log, tmp_path: Path) -> None:
        dump = tmp_path / "backup.msgpack"
        ok(run("dump", log.path, "-o", dump))
        strict = tmp_path / "strict.sqlite3"
        assert "type id 20" in fails(run("restore", strict, dump, "--strict"), status=1)
        assert not strict.exists()
        Store(Sqlite3(strict)).close()
        assert "type id 20" in fails(run("restore", strict, dump, "--strict"), status=1)
        assert stored_rows(strict) == []

    def test_damaged_builtin_value_is_refused(self, tmp_path: Path) -> None:
        dump = tmp_path / "bad.msgpack"
        rows = [
            (1, "a", "x", b"\x001", 1.0, "t"),
            (2, "a", "y", b'\x00"not an int"', 2.0, "t"),
        ]
        dump.write_bytes(b"".join(pack_rows(rows)))
        db = tmp_path / "db.sqlite3"
        assert "does not decode" in fails(run("restore", db, dump), status=1)
        assert not db.exists()

    def test_missing_dump_file_creates_nothing(self, tmp_path: Path) -> None:
        assert "no such file" in fails(run("restore", tmp_path / "db.sqlite3", tmp_path / "x"))
        assert list(tmp_path.iterdir()) == []

    def test_restore_into_a_log_open_for_writing_is_refused(self, log: Log, tmp_path: Path) -> None:
        dump = tmp_path / "backup.msgpack"
        ok(run("dump", log.path, "-o", dump))
        db = tmp_path / "busy.sqlite3"
        with Store(Sqlite3(db)) as writer:
            writer.storage("w").x = 1
            writer.flush()
            assert "open for writing" in fails(run("restore", db, dump))
        assert len(stored_rows(db)) == 1

    def test_dump_refuses_to_overwrite_the_database(self, fresh: Log) -> None:
        before = fresh.path.read_bytes()
        assert "database itself" in fails(run("dump", fresh.path, "-o", fresh.path))
        assert fresh.path.read_bytes() == before


def corrupt(path: Path) -> None:
    """Add damaged rows, as a foreign writer or a disk fault could."""
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, context) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (1000, P1, "broken", b'\x00"abc"', 1.0, "test"),
                (1001, "bad token", "x", b"\x001", 1.0, "test"),
                (1002, "session1", "p1", b"\x001", 1.0, "test"),  # p1: field and namespace
                (1003, P1, "empty", b"", 1.0, "test"),
            ],
        )
    conn.close()


class TestVerify:
    """``verify``: every row decodes, seqs are unique; status 1 and a list otherwise."""

    def test_healthy_log(self, log: Log) -> None:
        lines = ok(run("verify", log.path)).splitlines()
        assert lines[-1] == "ok: 23 rows, seq 1..23, every row decodes, seqs are unique"
        assert "type 20: 1" in lines[0]  # the custom type is a note, not a problem

    def test_strict_counts_unknown_types_as_problems(self, log: Log) -> None:
        result = run("verify", log.path, "--strict")
        assert result.status == 1
        lines = result.out.splitlines()
        assert lines[0] == f"seq 12 {P1} share: type id 20 is unknown to the default codec"
        assert lines[-1] == "1 problem in 23 rows, seq 1..23"

    def test_damaged_rows_are_listed(self, fresh: Log) -> None:
        corrupt(fresh.path)
        result = run("verify", fresh.path)
        assert result.status == 1
        assert "Traceback" not in result.err
        out = result.out
        assert f"seq 1000 {P1} broken: value does not decode: malformed int" in out
        assert "seq 1001 bad token x: invalid namespace 'bad token'" in out
        assert "seq 1003" in out and "empty value" in out
        assert "log session1 p1: 'p1' is both a field of 'session1'" in out
        assert out.splitlines()[-1] == "4 problems in 27 rows, seq 1..1003"

    def test_json_report(self, fresh: Log) -> None:
        corrupt(fresh.path)
        result = run("verify", fresh.path, "--json")
        assert result.status == 1
        report = json.loads(result.out)
        assert report["ok"] is False
        assert report["rows"] == 27
        assert report["problem_count"] == 4
        assert [p["seq"] for p in report["problems"]] == [1000, 1001, 1003, None]
        assert report["unknown_types"] == {"20": 1}
        assert report["problems"][0] == {
            "seq": 1000,
            "namespace": P1,
            "field": "broken",
            "message": "value does not decode: malformed int (type id 0): expected an integer, "
            "got str",
        }

    def test_inspection_survives_damaged_rows(self, fresh: Log) -> None:
        corrupt(fresh.path)
        shown = json.loads(ok(run("show", fresh.path, P1, "--json")))
        assert shown["fields"]["broken"]["value"]["$type"] == 0
        assert "$error" in shown["fields"]["broken"]["value"]
        assert '<malformed int> "abc"' in ok(run("history", fresh.path, P1, "broken"))
        rows = read_csv(ok(run("export", fresh.path, "--namespace", P1)))
        assert json.loads(rows[-1]["value"])["$text"] == ""


class TestReplay:
    """``replay FILE DB`` writes a recovery file into the log."""

    def recovery_file(self, directory: Path, database: Path | None = None) -> Path:
        """A recovery file of ``database`` (None: a file without a header)."""
        path = directory / "appendmuch_values.recovery-20240501T100000-1.msgpack"
        rows = [
            (100, "late", "x", b"\x001", 1714557600.0, "app.late:1"),
            (101, "late", "y", b'\x02"two"', 1714557601.0, "app.late:2"),
        ]
        identity = None if database is None else Sqlite3(database).identity()
        write_recovery_file(str(path), rows, [], identity)
        return path

    def test_a_file_of_no_or_another_database_needs_any_database(
        self, fresh: Log, tmp_path: Path
    ) -> None:
        before = stored_rows(fresh.path)
        headerless = self.recovery_file(tmp_path)
        assert "--any-database" in fails(run("replay", headerless, fresh.path), status=1)
        assert stored_rows(fresh.path) == before
        out = ok(run("replay", headerless, fresh.path, "--any-database"))
        assert out.startswith("replayed 2 rows")
        assert [row[0] for row in stored_rows(fresh.path)][-2:] == [
            len(before) + 1,
            len(before) + 2,
        ]

    def test_replay_writes_the_rows_once(self, fresh: Log, tmp_path: Path) -> None:
        recovery = self.recovery_file(tmp_path, fresh.path)
        out = ok(run("replay", recovery, fresh.path))
        assert out.startswith("replayed 2 rows into table appendmuch_values")
        with Store(Sqlite3(fresh.path, read_only=True), codec=fraction_codec()) as store:
            late = store.storage("late")
            assert (late.x, late.y) == (1, "two")
        again = ok(run("replay", recovery, fresh.path))
        assert again.startswith("replayed 0 rows") and "2 rows already there" in again
        assert len(stored_rows(fresh.path)) == len(fresh.rows) + 2

    def test_missing_or_damaged_recovery_file(self, fresh: Log, tmp_path: Path) -> None:
        before = stored_rows(fresh.path)
        assert "no such file" in fails(run("replay", tmp_path / "nope.msgpack", fresh.path))
        garbage = tmp_path / "garbage.msgpack"
        garbage.write_bytes(b"\xc1 not msgpack")
        fails(run("replay", garbage, fresh.path), status=1)
        assert stored_rows(fresh.path) == before


READ_COMMANDS: list[list[str]] = [
    ["info"],
    ["ls"],
    ["show", P1],
    ["history", P1],
    ["within", P1, "score", "--where", "round=1"],
    ["export", "--format", "jsonl"],
    ["dump", "-o", "-"],
    ["verify"],
]


class TestReadOnly:
    """Inspection commands never create, change or lock the database."""

    @pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
    def test_missing_path_is_an_error_and_stays_missing(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        missing = tmp_path / "nothing.sqlite3"
        name, *rest = command
        assert "no such file" in fails(run(name, missing, *rest))
        assert list(tmp_path.iterdir()) == []

    def test_database_bytes_and_mtime_are_unchanged(self, fresh: Log) -> None:
        before = fresh.path.read_bytes(), fresh.path.stat().st_mtime_ns
        for name, *rest in READ_COMMANDS:
            assert run(name, fresh.path, *rest).status == 0
        assert (fresh.path.read_bytes(), fresh.path.stat().st_mtime_ns) == before

    def test_creates_no_file_next_to_the_database(self, fresh: Log) -> None:
        """Not even SQLite's -wal/-shm files, nor a lock file."""
        before = files_in(fresh.path.parent)
        for name, *rest in READ_COMMANDS:
            assert run(name, fresh.path, *rest).status == 0
        assert files_in(fresh.path.parent) == before

    def test_works_while_an_application_writes(self, fresh: Log) -> None:
        with Store(Sqlite3(fresh.path), codec=fraction_codec()) as writer:
            player = writer.storage("session1", "p1")
            player.round = 3
            player.score = 40
            writer.flush()
            directory = fresh.path.parent
            snapshot = {
                name: data for name, (data, _) in files_in(directory).items() if "-shm" not in name
            }
            info = json.loads(ok(run("info", fresh.path, "--json")))
            assert info["rows"] == len(fresh.rows) + 2
            assert info["writer_open"] is True
            assert ok(run("within", fresh.path, P1, "score", "--where", "round=3")) == "40\n"
            assert run("verify", fresh.path).status == 0
            rows = read_csv(ok(run("export", fresh.path)))
            assert rows[-1]["value"] == "40"
            # the readers changed nothing (the -shm file is SQLite's shared memory)
            assert {
                name: data for name, (data, _) in files_in(directory).items() if "-shm" not in name
            } == snapshot
            # and took no lock: the application goes on writing
            player.score = 41
            writer.flush()
        assert stored_rows(fresh.path)[-1][3] == b"\x0041"


def run_with_terminal_stderr(*args: object) -> tuple[int, bytes]:
    """Run the command with stderr on a pseudo-terminal; return (status, stderr bytes)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [*ENTRY_POINTS["module"], *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=slave,
            timeout=120,
        )
    finally:
        os.close(slave)
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    return proc.returncode, data


class TestProgress:
    """Long commands draw a progress bar on a terminal, and nothing when piped."""

    @pytest.mark.parametrize(
        "command",
        [["dump", "-o", "{tmp}/d.msgpack"], ["export", "-o", "{tmp}/e.csv"], ["verify"]],
        ids=lambda c: c[0],
    )
    def test_bar_on_a_terminal_only(self, log: Log, tmp_path: Path, command: list[str]) -> None:
        name, *rest = [part.format(tmp=tmp_path) for part in command]
        piped = run(name, log.path, *rest)
        assert piped.status == 0
        assert piped.err == ""
        status, terminal = run_with_terminal_stderr(name, log.path, *rest)
        assert status == 0
        assert b"\r" in terminal
        assert b"100%" in terminal
        assert b"23/23" in terminal

    def test_restore_bar_counts_bytes(self, log: Log, tmp_path: Path) -> None:
        dump = tmp_path / "d.msgpack"
        ok(run("dump", log.path, "-o", dump))
        piped = run("restore", tmp_path / "a.sqlite3", dump)
        assert piped.status == 0 and piped.err == ""
        status, terminal = run_with_terminal_stderr("restore", tmp_path / "b.sqlite3", dump)
        assert status == 0
        size = dump.stat().st_size
        assert f"{size:,}/{size:,} bytes".encode() in terminal


# --------------------------------------------------------------------------- PostgreSQL


def pg_url(conninfo: str) -> str:
    """The session server as a postgresql:// URL."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(conninfo)
    user = parts.get("user", "postgres")
    host = parts.get("host", "localhost")
    port = parts.get("port", 5432)
    return f"postgresql://{user}@{host}:{port}/{parts.get('dbname', 'postgres')}"


@dataclass
class PgLog:
    conninfo: str
    url: str
    prefix: str
    rows: list[Row]


@pytest.fixture(scope="module")
def pg_log() -> Iterator[PgLog]:
    """The experiment log in a table of its own on the test server."""
    conninfo = pg_conninfo()
    prefix = f"cli{uuid.uuid4().hex[:10]}"
    driver = PostgreSQL(conninfo, table_prefix=prefix, min_size=1, max_size=2, timeout=10.0)
    with Store(driver, codec=fraction_codec()) as store:
        write_experiment(store)
        store.flush()
        rows = [tuple(row) for row in store.driver.load_rows()]
    try:
        yield PgLog(conninfo, pg_url(conninfo), prefix, rows)
    finally:
        import psycopg

        with psycopg.connect(conninfo, autocommit=True) as conn:
            for (table,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (prefix + "%",)
            ).fetchall():
                conn.execute(f'DROP TABLE "{table}"')


def pg_rows(conninfo: str, table: str) -> list[Row]:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        return [
            tuple(row)
            for row in conn.execute(
                f'SELECT seq, namespace, field, value, created_at, context FROM "{table}" '
                "ORDER BY seq"
            )
        ]


class TestPostgreSQL:
    """The same commands on a PostgreSQL table named by URL and --table-prefix."""

    def test_inspection(self, pg_log: PgLog) -> None:
        url, prefix = pg_log.url, pg_log.prefix
        info = json.loads(ok(run("info", url, "--table-prefix", prefix, "--json")))
        assert info["backend"] == "postgresql"
        assert info["table"] == f"{prefix}_values"
        assert info["rows"] == 23
        assert info["custom_types"] == {"20": 1}
        assert info["size"] > 0
        tree = json.loads(ok(run("ls", url, "--table-prefix", prefix, "--json")))
        assert [n["namespace"] for n in tree][:2] == ["session1", P1]
        assert (
            ok(run("within", url, P1, "score", "--where", "round=1", "--table-prefix", prefix))
            == "10\n"
        )
        history = json.loads(
            ok(run("history", url, P1, "bonus", "--table-prefix", prefix, "--json"))
        )
        assert [e["value"] for e in history["entries"]] == [5, None]
        assert ok(run("verify", url, "--table-prefix", prefix)).startswith("note:")
        assert pg_rows(pg_log.conninfo, f"{prefix}_values") == pg_log.rows  # untouched

    def test_export(self, pg_log: PgLog) -> None:
        rows = read_csv(ok(run("export", pg_log.url, "--table-prefix", pg_log.prefix)))
        assert [int(r["seq"]) for r in rows] == [row[0] for row in pg_log.rows]
        latest = read_csv(
            ok(run("export", pg_log.url, "--table-prefix", pg_log.prefix, "--shape", "latest"))
        )
        assert next(r for r in latest if r["namespace"] == P1)["score"] == "25"

    def test_dump_to_sqlite_and_back(self, pg_log: PgLog, tmp_path: Path) -> None:
        dump = tmp_path / "pg.msgpack"
        ok(run("dump", pg_log.url, "--table-prefix", pg_log.prefix, "-o", dump))
        assert dump.read_bytes() == b"".join(pack_rows(pg_log.rows))
        db = tmp_path / "copy.sqlite3"
        ok(run("restore", db, dump))
        assert stored_rows(db) == pg_log.rows
        other = f"{pg_log.prefix}copy"
        out = ok(run("restore", pg_log.url, dump, "--table-prefix", other))
        assert f"{other}_values" in out
        assert pg_rows(pg_log.conninfo, f"{other}_values") == pg_log.rows
        fails(run("restore", pg_log.url, dump, "--table-prefix", other), status=1)
        assert pg_rows(pg_log.conninfo, f"{other}_values") == pg_log.rows

    def test_unknown_table_is_an_error(self, pg_log: PgLog) -> None:
        line = fails(run("info", pg_log.url, "--table-prefix", f"{pg_log.prefix}none"))
        assert f"{pg_log.prefix}none_values" in line
        assert f"{pg_log.prefix}_values" in line

    def test_unreachable_server_is_a_one_line_error(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        line = fails(run("info", f"postgresql://nobody:secret@127.0.0.1:{port}/nodb"))
        assert "cannot connect" in line
        assert "secret" not in line
