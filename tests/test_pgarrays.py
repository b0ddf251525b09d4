"""The batch columns packed as PostgreSQL binary arrays (drivers/pgarrays.py).

The packed bytes must be exactly what psycopg dumps for the same lists (the server
reads them the same way), and anything psycopg would treat differently must be left
to psycopg.  The PostgreSQL contract suite writes every batch through this path.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appendmuch.drivers.pgarrays import ARRAY_OIDS, pack_rows

psycopg = pytest.importorskip("psycopg")  # the pg extra; CI installs it


def psycopg_dump(rows: list[tuple[Any, ...]]) -> tuple[list[bytes], list[int]]:
    from psycopg.adapt import PyFormat, Transformer
    from psycopg.types.numeric import Int8

    transformer = Transformer()
    columns: list[list[Any]] = [list(column) for column in zip(*rows, strict=True)]
    columns[0] = [Int8(seq) for seq in columns[0]]
    dumped = transformer.dump_sequence(columns, [PyFormat.BINARY] * 6)
    return [bytes(value) for value in dumped if value is not None], list(transformer.types or ())


texts = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
rows = st.lists(
    st.tuples(
        st.integers(-(2**63), 2**63 - 1),
        st.one_of(st.sampled_from(["game/p1", "game/p2"]), texts),
        texts,
        st.one_of(st.none(), st.binary(max_size=40)),
        st.floats(),
        st.one_of(st.just("app.py.main:3"), texts),
    ),
    min_size=1,
    max_size=30,
)


@given(rows)
def test_packed_columns_are_what_psycopg_dumps(batch: list[tuple[Any, ...]]) -> None:
    packed = pack_rows(batch)
    assert packed is not None
    dumped, types = psycopg_dump(batch)
    if all(row[3] is None for row in batch):
        # psycopg sends a list of NULLs only as text ('{NULL,...}', no element type):
        # the binary bytea[] of as many NULLs is what the server makes of it
        count = len(batch)
        assert dumped[3] == b"{" + b",".join([b"NULL"] * count) + b"}"
        dumped[3] = struct.pack(f">iiIii{count}i", 1, 1, 17, count, 1, *[-1] * count)
        types[3] = ARRAY_OIDS[3]
    assert packed == dumped
    assert types == ARRAY_OIDS


@pytest.mark.parametrize(
    "row",
    [
        (1, "game/p1", "x", b"\x005", 1.0, "a\x00b"),  # psycopg refuses NUL in text
        (1, "game/p1", "x\ud800", b"\x005", 1.0, "c"),  # a lone surrogate
        (2**63, "game/p1", "x", b"\x005", 1.0, "c"),  # beyond int8
        (True, "game/p1", "x", b"\x005", 1.0, "c"),  # a bool is no seq
        (1, "game/p1", "x", b"\x005", None, "c"),  # no time
        (1, "game/p1", "x", b"\x005", 1, "c"),  # an int time
        (1, "game/p1", "x", "5", 1.0, "c"),  # a str value
        (1, b"game", "x", b"\x005", 1.0, "c"),  # a bytes name
    ],
)
def test_what_psycopg_would_treat_otherwise_is_left_to_it(row: tuple[Any, ...]) -> None:
    good = (2, "game/p1", "x", b"\x006", 2.0, "c")
    assert pack_rows([good, row]) is None
    assert pack_rows([good]) is not None
