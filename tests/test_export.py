"""The export from Python: ``appendmuch.export`` rows, files and DataFrame, on every backend.

``export_rows`` gives the log as dicts (one per entry, or one per namespace with the
current values), ``write_export`` the CSV and JSON Lines files of ``appendmuch export``,
``to_dataframe`` a pandas DataFrame without making pandas a dependency.  Values take
the JSON forms documented in :mod:`appendmuch.rendering`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import uuid
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson
import pytest

from appendmuch import Codec, Store
from appendmuch.export import LOG_COLUMNS, export_rows, to_dataframe, write_export
from appendmuch.inspection import NotInLogError
from appendmuch.rendering import Opaque, stored_json
from backends import Backend
from helpers import codec_with, python_without

FRACTION_ID = 20


def fraction_codec() -> Codec:
    return codec_with(
        Fraction,
        FRACTION_ID,
        lambda f: orjson.dumps(str(f)),
        lambda raw: Fraction(orjson.loads(raw)),
    )


def write_game(store: Store) -> None:
    """Three players (p1, p2, p10), rounds, a deletion, a list, a custom type."""
    p1 = store.storage("game", "p1")
    p1.round = 1
    p1.score = 10
    p1.round = 2
    p1.score = 25
    p1.bonus = 3
    del p1.bonus
    p1.items = ["sword"]
    p1.share = Fraction(1, 3)
    store.storage("game", "p10").score = 1
    store.storage("game", "p2").score = 2
    store.storage("game").rounds = 2
    store.storage("games", "p1").score = 99


def utc(created_at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(created_at, tz=dt.UTC)


class TestLogShape:
    """``shape="log"``: one dict per entry, in seq order, tombstones included."""

    def test_rows_match_the_stored_log(self, backend: Backend) -> None:
        store = backend.store(codec=fraction_codec())
        write_game(store)
        store = backend.reopen(store, codec=fraction_codec())
        rows = list(export_rows(store))
        raw = backend.raw_rows()
        assert [r["seq"] for r in rows] == [row[0] for row in raw]
        for r, (_seq, namespace, field, value, created_at, context) in zip(rows, raw, strict=True):
            assert list(r) == list(LOG_COLUMNS)
            assert (r["namespace"], r["field"], r["context"]) == (namespace, field, context)
            assert r["time"] == utc(created_at)
            assert r["unavailable"] is (value is None)
            expected = None if value is None else store.codec.decode(value)
            assert r["value"] == expected
        bonus = [(r["value"], r["unavailable"]) for r in rows if r["field"] == "bonus"]
        assert bonus == [(3, False), (None, True)]

    def test_driver_source_decodes_with_the_default_codec(self, backend: Backend) -> None:
        """A type the codec does not know comes back Opaque; the right codec decodes it."""
        store = backend.store(codec=fraction_codec())
        write_game(store)
        store.flush()
        by_store = {r["field"]: r["value"] for r in export_rows(store) if r["field"] == "share"}
        assert by_store == {"share": Fraction(1, 3)}
        share = next(r for r in export_rows(store.driver) if r["field"] == "share")
        assert share["value"] == Opaque(FRACTION_ID, b'"1/3"')
        assert not share["value"].malformed
        decoded = next(
            r for r in export_rows(store.driver, codec=fraction_codec()) if r["field"] == "share"
        )
        assert decoded["value"] == Fraction(1, 3)

    def test_queued_rows_are_included(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("a").x = 1  # possibly still queued in a batch
        assert [(r["field"], r["value"]) for r in export_rows(store)] == [("x", 1)]

    def test_namespace_selects_a_subtree_token_wise(self, backend: Backend) -> None:
        store = backend.store(codec=fraction_codec())
        write_game(store)
        as_text = [r["namespace"] for r in export_rows(store, namespace="game")]
        as_tuple = [r["namespace"] for r in export_rows(store, namespace=("game",))]
        assert as_text == as_tuple
        assert set(as_text) == {"game/p1", "game/p10", "game/p2", "game"}  # not games/p1
        only = list(export_rows(store, namespace="game/p2"))
        assert [(r["field"], r["value"]) for r in only] == [("score", 2)]

    def test_values_are_independent_copies(self, backend: Backend) -> None:
        store = backend.store()
        with store.storage("a") as a:
            a.items = ["sword"]
        row = next(export_rows(store))
        row["value"].append("stolen")
        with store.storage("a") as a:
            assert a.items == ["sword"]
        assert next(export_rows(store))["value"] == ["sword"]


class TestLatestShape:
    """``shape="latest"``: one dict per namespace with its current values."""

    def test_current_values_per_namespace(self, backend: Backend) -> None:
        store = backend.store(codec=fraction_codec())
        write_game(store)
        store = backend.reopen(store, codec=fraction_codec())
        rows = list(export_rows(store, shape="latest"))
        assert [r["namespace"] for r in rows] == [
            "game",
            "game/p1",
            "game/p2",
            "game/p10",
            "games/p1",
        ]
        assert rows[1] == {
            "namespace": "game/p1",
            "round": 2,
            "score": 25,
            "items": ["sword"],
            "share": Fraction(1, 3),
        }  # bonus is deleted: absent
        assert rows[0] == {"namespace": "game", "rounds": 2}
        assert list(export_rows(store, shape="latest", namespace="game/p2")) == [
            {"namespace": "game/p2", "score": 2}
        ]

    def test_a_deleted_then_rewritten_field_is_current(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("a")
        s.x = 1
        del s.x
        s.x = 2
        assert list(export_rows(store, shape="latest")) == [{"namespace": "a", "x": 2}]

    def test_field_called_namespace(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("a").namespace = "x"
        assert list(export_rows(store, shape="latest")) == [{"namespace": "a", "namespace_": "x"}]


class TestFiles:
    """``write_export``: the files of ``appendmuch export``, parsed back."""

    def test_csv_log(self, backend: Backend) -> None:
        store = backend.store(codec=fraction_codec())
        write_game(store)
        out = io.StringIO(newline="")
        count = write_export(store, out, format="csv", shape="log")
        raw = backend.raw_rows()
        assert count == len(raw)
        text = out.getvalue()
        assert text.splitlines()[0] == ",".join(LOG_COLUMNS)
        assert "\r" not in text
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        for r, (seq, _ns, _field, value, created_at, _context) in zip(rows, raw, strict=True):
            assert int(r["seq"]) == seq
            assert dt.datetime.fromisoformat(r["time"]) == utc(created_at)
            if value is None:
                assert (r["value"], r["unavailable"]) == ("", "true")
            else:
                assert json.loads(r["value"]) == json.loads(stored_json(value))
                assert r["unavailable"] == "false"
        share = next(r for r in rows if r["field"] == "share")
        assert json.loads(share["value"]) == {"$type": FRACTION_ID, "$json": "1/3"}

    def test_jsonl_latest(self, backend: Backend) -> None:
        store = backend.store(codec=fraction_codec())
        write_game(store)
        out = io.StringIO()
        assert write_export(store, out, format="jsonl", shape="latest", namespace="game") == 4
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        assert records[1] == {
            "namespace": "game/p1",
            "round": 2,
            "score": 25,
            "items": ["sword"],
            "share": {"$type": FRACTION_ID, "$json": "1/3"},
        }

    @pytest.mark.parametrize("shape", ["log", "latest"])
    def test_unknown_namespace_raises_before_writing(self, backend: Backend, shape: str) -> None:
        """A namespace that is not in the log is an error, not an empty export; a
        namespace whose rows are still queued is in the log."""
        store = backend.store(codec=fraction_codec())
        write_game(store)
        out = io.StringIO()
        with pytest.raises(NotInLogError, match="gme"):
            write_export(store, out, shape=shape, namespace="gme")  # type: ignore[arg-type]
        assert out.getvalue() == ""
        store.storage("fresh").x = 1
        assert write_export(store, out, shape=shape, namespace="fresh") == 1  # type: ignore[arg-type]
        store.close()

    def test_csv_latest_cells(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("a")
        s.text = 'say "hi", then\nleave'
        s.amount = Decimal("1.50")
        s.day = dt.date(2024, 5, 1)
        s.ok = False
        s.nothing = None
        s.pair = (1, 2)
        store.storage("b").text = "other"
        out = io.StringIO(newline="")
        write_export(store, out, format="csv", shape="latest")
        rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
        assert rows == [
            {
                "namespace": "a",
                "text": 'say "hi", then\nleave',
                "amount": "1.50",
                "day": "2024-05-01",
                "ok": "false",
                "nothing": "",
                "pair": "[1,2]",
            },
            {
                "namespace": "b",
                "text": "other",
                "amount": "",
                "day": "",
                "ok": "",
                "nothing": "",
                "pair": "",
            },
        ]

    def test_progress_reaches_the_last_seq(self, backend: Backend) -> None:
        store = backend.store()
        for i in range(600):
            store.storage("a").x = i
        seen: list[int] = []
        write_export(store, io.StringIO(), format="jsonl", progress=seen.append)
        assert seen and seen == sorted(seen)
        assert seen[-1] == 600


class TestJsonForms:
    """The JSON form of every built-in type, and of values that do not decode."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (42, 42),
            (1.5, 1.5),
            ("é\n", "é\n"),
            (True, True),
            (None, None),
            ([1, "a", None], [1, "a", None]),
            ({"b": 1, "a": [2]}, {"a": [2], "b": 1}),
            ((1, "x"), [1, "x"]),
            ({3, 1, 2}, [1, 2, 3]),
            (frozenset({"b", "a"}), ["a", "b"]),
            (b"\x00\x01\xff", "AAH/"),
            (bytearray(b"ab"), "YWI="),
            (complex(1, -2), [1.0, -2.0]),
            (Decimal("1.50"), "1.50"),
            (dt.date(2024, 5, 1), "2024-05-01"),
            (dt.time(10, 0, 1, 5), "10:00:01.000005"),
            (dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC), "2024-05-01T10:00:00+00:00"),
            (
                uuid.UUID("12345678-1234-5678-1234-567812345678"),
                "12345678-1234-5678-1234-567812345678",
            ),
        ],
    )
    def test_builtin(self, value: Any, expected: Any) -> None:
        assert json.loads(stored_json(Codec().encode(value))) == expected

    def test_random_state(self) -> None:
        rng = random.Random(7)
        version, state, gauss = rng.getstate()
        assert json.loads(stored_json(Codec().encode(rng))) == [version, list(state), gauss]

    def test_custom_unknown_malformed_and_tombstone(self) -> None:
        custom = fraction_codec().encode(Fraction(2, 3))
        assert json.loads(stored_json(custom)) == {"$type": FRACTION_ID, "$json": "2/3"}
        assert json.loads(stored_json(b"\x99not json")) == {"$type": 153, "$text": "not json"}
        malformed = json.loads(stored_json(b'\x00"abc"'))
        assert malformed["$type"] == 0 and malformed["$json"] == "abc"
        assert "malformed int" in malformed["$error"]
        assert stored_json(None) == b"null"


class TestErrors:
    """Wrong arguments raise clear errors before anything is read."""

    def test_bad_arguments(self, backend: Backend) -> None:
        store = backend.store()
        with pytest.raises(ValueError, match="shape"):
            list(export_rows(store, shape="wide"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="format"):
            write_export(store, io.StringIO(), format="xml")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="namespace"):
            list(export_rows(store, namespace="bad token"))
        with pytest.raises(TypeError, match="Store or a driver"):
            list(export_rows("log.sqlite3"))  # type: ignore[arg-type]


class TestDataFrame:
    """``to_dataframe`` imports pandas only when called; pandas is not a dependency of
    appendmuch (it is one of the ``dev`` extra, so both paths are tested)."""

    def test_without_pandas_a_clear_import_error(self) -> None:
        code = (
            "from appendmuch import Memory, Store\n"
            "from appendmuch.export import to_dataframe\n"
            "store = Store(Memory()); store.storage('g').x = 1\n"
            "try:\n"
            "    to_dataframe(store)\n"
            "except ImportError as exc:\n"
            "    print('ImportError:', exc)\n"
        )
        out = python_without(("pandas",), code)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("ImportError:") and "pandas" in out.stdout

    def test_dataframe(self, backend: Backend) -> None:
        store = backend.store(codec=fraction_codec())
        write_game(store)
        frame = to_dataframe(store)
        assert list(frame.columns) == list(LOG_COLUMNS)
        assert len(frame) == len(backend.raw_rows())
        latest = to_dataframe(store, shape="latest")
        assert list(latest["namespace"]) == ["game", "game/p1", "game/p2", "game/p10", "games/p1"]
        assert latest.set_index("namespace").loc["game/p1", "score"] == 25
