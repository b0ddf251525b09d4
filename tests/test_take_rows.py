"""Taking in rows other processes committed (shared mode), against plain-Python models.

A shared-mode Store's engine delivers every row another writer commits, in seq order,
to the Store's shared side (``SharedSide.take_in``): each goes into its field's log
*before* this process's own writes that are not committed yet (their final seqs will
come after it), a replaced field keeps its newest entry, ``on_change`` hears of each
row once, in seq order, and a row delivered again (a read that overlapped the last
one) is taken once.  A row this process cannot decode is kept as it is stored:
reading that field raises, everything else goes on.
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
from appendmuch.errors import DecodeError, UnknownTypeIdError
from appendmuch.fieldlog import PROVISIONAL, FieldLog
from appendmuch.names import tuple2dbns

NAMESPACES = [("g", "p1"), ("g", "p2"), ("h",)]
FIELDS = ["a", "b", "state"]
CONTEXTS = ["app.py.main:1", "app.py.loop:7"]
#: seqs of the rows delivered start far above the table's own (nothing collides)
BASE = 1_000_000

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
    """Committed rows (seq BASE+1, +2, ...) for the drawn entries, as a driver reads them."""
    rows = []
    for seq, (namespace, field, value, created_at, context) in enumerate(drawn, start=BASE + 1):
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
    """Hand the chunks to the Store as its engine does, in the engine's thread."""
    engine: Any = store.driver.sharing
    driver: Any = store.driver
    for chunk in chunks:
        driver.in_writer(lambda chunk=chunk: (engine._deliver(chunk), engine._target().announce()))


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
        log = store.get_namespace(tuple(dbns.split("/")))[field]  # type: ignore[index]
        assert type(log) is FieldLog, (dbns, field)
        seen[(dbns, field)] = [(v.seq, v.time, v.unavailable, v.context) for v in log]
    return seen


@settings(max_examples=60, deadline=None)
@given(
    drawn=entries,
    cuts=st.lists(st.integers(0, 60), max_size=4),
    repeats=st.lists(st.integers(0, 5), max_size=3),
)
def test_rows_taken_in_match_the_model(
    tmp_path_factory: pytest.TempPathFactory,
    drawn: list[tuple[Any, ...]],
    cuts: list[int],
    repeats: list[int],
) -> None:
    directory = tmp_path_factory.mktemp("take")
    stores: list[Store] = []
    try:
        called: list[tuple[Any, ...]] = []
        store = _open(
            directory,
            "one",
            stores,
            replace_predicate=replaced,
            on_change=lambda ns, field, value: called.append((value.seq, field)),
        )
        rows = _rows(store, drawn)
        _deliver(store, _chunks(rows, cuts, repeats))
        model = _model(rows)
        assert _cache(store, rows) == model
        assert called == [(row[0], row[2]) for row in rows]  # each once, in seq order
        engine: Any = store.driver.sharing
        assert engine.hwm == rows[-1][0]
        stored = {row[0]: row for row in rows}
        for (dbns, field), expected in model.items():
            storage = store.storage(*dbns.split("/"))
            datas = [v.data for v in storage.__history__()[field]]
            for (seq, _, gone, _), data in zip(expected, datas, strict=True):
                raw = stored[seq][3]
                assert (data is None) if gone else data == store.codec.decode(raw)
            if expected[-1][2]:
                assert not hasattr(storage, field)
            else:
                latest = store.codec.decode(stored[expected[-1][0]][3])
                with storage:  # (lists and dicts are read in a with block)
                    assert getattr(storage, field) == latest
    finally:
        for store in stores:
            store.close()


#: one step of the log of one field: ("own", data) an own write, ("theirs", data) a
#: row another writer committed, ("commit",) own writes so far committed
steps = st.lists(
    st.one_of(
        st.tuples(st.just("own"), st.integers(0, 99)),
        st.tuples(st.just("theirs"), st.integers(0, 99)),
        st.tuples(st.just("commit")),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(steps=steps)
def test_own_writes_stay_after_rows_committed_before_them(steps: list[tuple[Any, ...]]) -> None:
    """A field's log against a model of the final order: rows of others go before the
    own writes not yet committed (those commit after them), a commit gives the own
    writes the next seqs in order; the latest value is always the newest write."""
    log = FieldLog()
    provisional = PROVISIONAL
    committed = 0
    pending: list[tuple[int, int]] = []  # (provisional seq, data)
    final: list[tuple[int, int]] = []  # (seq, data) in final order, committed ones
    latest = None
    for step in steps:
        if step[0] == "own":
            provisional += 1
            log.append(provisional, 1.0, step[1], "own:1")
            pending.append((provisional, step[1]))
            latest = step[1]
        elif step[0] == "theirs":
            committed += 1
            log.insert_committed(committed, 1.0, step[1], "theirs:1", None)
            final.append((committed, step[1]))
            if not pending:
                latest = step[1]
        else:
            for seq, data in pending:
                committed += 1
                log.settle(seq, committed)
                final.append((committed, data))
            pending = []
        expected = final + pending
        assert [(v.seq, v.data) for v in log] == expected
        assert list(log.seqs) == sorted(log.seqs)
        if latest is not None:
            assert log.latest == latest
        assert log.committed_seq == (committed or None)


def test_a_row_that_does_not_decode_is_kept_and_raises_only_when_read(
    opened: list[Store], tmp_path: Path
) -> None:
    """A type id this process's codec does not know (another writer registered it)
    and bytes that are not a value at all: both kept as stored, the fields reading
    them raise the codec's error, the rows after them are taken in, and the engine
    goes on (no error recorded)."""
    store = _open(tmp_path, "bad", opened)
    enc = store.codec.encode
    rows = [
        (BASE + 1, "g/p1", "a", enc(1), 1.7e9, "app.py.main:1"),
        (BASE + 2, "g/p1", "custom", b"\xc8[1]", 1.7e9, "app.py.main:1"),  # type id 200
        (BASE + 3, "g/p1", "cut", b"\x80[1", 1.7e9, "app.py.main:1"),  # a list cut short
        (BASE + 4, "g/p1", "a", enc(2), 1.7e9, "app.py.main:1"),
    ]
    _deliver(store, [rows])
    p = store.storage("g", "p1")
    assert p.a == 2
    with pytest.raises(UnknownTypeIdError, match="200"):
        p.custom
    with pytest.raises(DecodeError):
        p.cut
    assert p.__fields__() == ["a", "custom", "cut"]
    engine: Any = store.driver.sharing
    assert engine.hwm == BASE + 4 and engine.last_error is None
    p.after = 3  # writes go on
    store.flush()
    assert p.after == 3


def test_a_row_the_tree_cannot_hold_is_left_out_and_noted(
    opened: list[Store], tmp_path: Path
) -> None:
    """A row whose field is also a namespace below (a table another tool wrote): left
    out of the cache and noted (SharedSide.refused), the rows around it taken in."""
    store = _open(tmp_path, "names", opened)
    enc = store.codec.encode
    rows = [
        (BASE + 1, "g/p1", "a", enc(1), 1.7e9, "app.py.main:1"),
        (BASE + 2, "g", "p1", enc(2), 1.7e9, "app.py.main:1"),  # g/p1 is a namespace
        (BASE + 3, "g/p1", "b", enc(3), 1.7e9, "app.py.main:1"),
    ]
    _deliver(store, [rows])
    p = store.storage("g", "p1")
    assert (p.a, p.b) == (1, 3)
    side: Any = store._shared_side
    assert [row[0] for row, _ in side.refused] == [BASE + 2]
