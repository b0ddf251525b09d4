"""Taking in rows other processes wrote (shared mode), against a plain-Python model.

A shared-mode Store takes every row another writer commits into its cache: row by
row while ``on_change`` must see each one, in runs of one field at a time
(``FieldLog.extend``) otherwise.  Both must give the cache a reopen would load: every
entry with its seq, time, data and context, tombstones as unavailable, a replaced
field holding its newest entry only, and rows delivered twice (a delivery cut short
and repeated) taken once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appendmuch import Sqlite3, Store
from appendmuch.fieldlog import FieldLog
from appendmuch.names import tuple2dbns

NAMESPACES = [("g", "p1"), ("g", "p2"), ("h",)]
FIELDS = ["a", "b", "state"]
CONTEXTS = ["app.py.main:1", "app.py.loop:7"]

values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.text(max_size=5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.sampled_from("xyz"), st.integers(0, 9), max_size=2),
    st.none(),
    st.just(...),  # a tombstone (a deleted field)
)
entries = st.lists(
    st.tuples(
        st.sampled_from(NAMESPACES),
        st.sampled_from(FIELDS),
        values,
        st.floats(1.6e9, 1.8e9),
        st.sampled_from(CONTEXTS),
    ),
    min_size=1,
    max_size=40,
)


def replaced(dbns: str, field: str) -> bool:
    return field == "state"


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[Store]]:
    stores: list[Store] = []
    yield stores
    for store in stores:
        store.close()


def _open(directory: Path, name: str, stores: list[Store], **kwargs: Any) -> Store:
    store = Store(Sqlite3(directory / f"{name}.sqlite3", shared=True), **kwargs)
    stores.append(store)
    return store


def _rows(store: Store, drawn: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Stored rows (seq 1, 2, ...) for the drawn entries, as a driver returns them."""
    rows = []
    for seq, (namespace, field, value, created_at, context) in enumerate(drawn, start=1):
        raw = None if value is ... else store.codec.encode(value)
        rows.append((seq, tuple2dbns(namespace), field, raw, created_at, context))
    return rows


def _model(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """(namespace, field) -> the entries the cache must hold: (seq, time, gone, context)."""
    model: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for seq, dbns, field, raw, created_at, context in rows:
        entry = (seq, created_at, raw is None, context)
        if replaced(dbns, field):
            model[(dbns, field)] = [entry]
        else:
            model.setdefault((dbns, field), []).append(entry)
    return model


def _deliver(store: Store, chunks: list[list[tuple[Any, ...]]]) -> None:
    sharing = store._sharing
    assert sharing is not None
    for chunk in chunks:
        with store._mutex, sharing.lock:
            store._take_rows(chunk)


def _chunks(
    rows: list[tuple[Any, ...]], cuts: list[int], repeats: list[int]
) -> list[list[tuple[Any, ...]]]:
    """``rows`` cut at ``cuts``; each chunk after the first also starts with the last
    ``repeats[i]`` rows of the chunk before it (delivered again)."""
    bounds = [0, *sorted({c % (len(rows) + 1) for c in cuts}), len(rows)]
    chunks = []
    for i, (start, end) in enumerate(itertools.pairwise(bounds)):
        again = repeats[i % len(repeats)] if repeats and i else 0
        chunks.append(rows[max(0, start - again) : end])
    return chunks


def _cache(store: Store, rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], list[Any]]:
    seen: dict[tuple[str, str], list[Any]] = {}
    for _, dbns, field, *_rest in rows:
        node = store._by_dbns.get(dbns)
        log = node.get(field) if node is not None else None
        assert type(log) is FieldLog, (dbns, field)
        seen[(dbns, field)] = [(v.seq, v.time, v.unavailable, v.context) for v in log]
    return seen


@settings(max_examples=60, deadline=None)
@given(
    drawn=entries,
    cuts=st.lists(st.integers(0, 60), max_size=4),
    repeats=st.lists(st.integers(0, 5), max_size=3),
)
def test_rows_taken_in_match_the_model_and_a_reopen(
    tmp_path_factory: pytest.TempPathFactory,
    drawn: list[tuple[Any, ...]],
    cuts: list[int],
    repeats: list[int],
) -> None:
    directory = tmp_path_factory.mktemp("take")
    stores: list[Store] = []
    try:
        called: list[tuple[Any, ...]] = []
        runs = _open(directory, "runs", stores, replace_predicate=replaced)
        one_by_one = _open(
            directory,
            "one",
            stores,
            replace_predicate=replaced,
            on_change=lambda ns, field, value: called.append((value.seq, field)),
        )
        rows = _rows(runs, drawn)
        chunks = _chunks(rows, cuts, repeats)
        _deliver(runs, chunks)
        _deliver(one_by_one, chunks)

        model = _model(rows)
        assert _cache(runs, rows) == model
        assert _cache(one_by_one, rows) == model
        assert called == [(row[0], row[2]) for row in rows]  # each once, in seq order
        for store in (runs, one_by_one):
            assert store._sharing is not None and store._sharing.hwm == len(rows)
            for (dbns, field), expected in model.items():
                log = store._by_dbns[dbns][field]
                datas = [v.data for v in log]
                stored = {row[0]: row for row in rows}
                for (seq, _, gone, _), data in zip(expected, datas, strict=True):
                    raw = stored[seq][3]
                    assert (data is None) if gone else data == store.codec.decode(raw)
                # the latest value, as an attribute read returns it
                namespace = tuple(dbns.split("/")) if dbns else ()
                storage = store.storage(*namespace)
                if expected[-1][2]:
                    assert not hasattr(storage, field)
                else:
                    latest = store.codec.decode(stored[expected[-1][0]][3])
                    with storage:  # (lists and dicts are read in a with block)
                        assert getattr(storage, field) == latest
    finally:
        for store in stores:
            store.close()


def test_a_row_refused_midway_keeps_the_rows_before_it(opened: list[Store], tmp_path: Path) -> None:
    """Rows before one that cannot be decoded are in the cache, and the mark after
    them: the delivery resumes at the bad row, never after it."""
    store = _open(tmp_path, "bad", opened)
    good = [(seq, "g/p1", "a", store.codec.encode(seq), 1.7e9, "app.py.main:1") for seq in (1, 2)]
    bad = (3, "g/p1", "a", b"\x80[1", 1.7e9, "app.py.main:1")  # a list cut short
    with pytest.raises(Exception, match="seq 3"):
        _deliver(store, [[*good, bad]])
    assert [v.data for v in store._by_dbns["g/p1"]["a"]] == [1, 2]
    assert store._sharing is not None and store._sharing.hwm == 2
    assert not store._sharing.stale


def test_a_run_whose_time_is_no_number_is_refused_and_changes_nothing(
    opened: list[Store], tmp_path: Path
) -> None:
    """A stored time that is no number (a damaged SQLite file) raises, as it did row by
    row; the cache keeps what came before, is not marked for a reload, and the mark
    stays before the bad row (sync() would raise again rather than skip it)."""
    store = _open(tmp_path, "time", opened)
    good = (1, "g/p1", "a", store.codec.encode(1), 1.7e9, "app.py.main:1")
    bad = (2, "g/p2", "b", store.codec.encode(2), "yesterday", "app.py.main:1")
    with pytest.raises(TypeError):
        _deliver(store, [[good, bad]])
    assert [v.data for v in store._by_dbns["g/p1"]["a"]] == [1]
    assert "b" not in store._by_dbns.get("g/p2", {})
    assert store._sharing is not None
    assert store._sharing.hwm == 1
    assert not store._sharing.stale
