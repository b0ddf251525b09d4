"""The web view's index and queries against a brute-force reading of the same rows:
random logs (hypothesis), sparse seqs from a restored dump, rows arriving while the
index is built, and an index kept current by a live follower equal to one built anew."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from appendmuch import Memory, Sqlite3, Store
from appendmuch.dumpfile import pack_rows
from appendmuch.rendering import LenientCodec
from appendmuch.web.index import LogIndex
from appendmuch.web.logpage import LogFilter, log_page
from appendmuch.web.namespaces import Steps, namespace_page
from webfixtures import poll

NAMESPACES = ["a", "a/x", "a/y", "b", "b/x/deep"]
FIELDS = ["f", "g", "h"]

writes = st.lists(
    st.tuples(
        st.sampled_from(NAMESPACES),
        st.sampled_from(FIELDS),
        st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3)),
        st.booleans(),  # delete instead (when the field has a value)
    ),
    min_size=1,
    max_size=60,
)


def build(ops: list[tuple[str, str, Any, bool]]) -> tuple[Store, LogIndex, list[tuple[Any, ...]]]:
    store = Store(Memory())
    for dbns, name, value, delete in ops:
        storage = store.storage(*dbns.split("/"))
        if delete and storage.get(name) is not None:
            delattr(storage, name)
        else:
            setattr(storage, name, value)
    index = LogIndex()
    index.build(store)
    return store, index, list(store.driver.load_rows())


def check_index(index: LogIndex, rows: list[tuple[Any, ...]]) -> None:
    assert list(index.seqs) == [row[0] for row in rows]
    assert [(index.fields[f].dbns, index.fields[f].name) for f in index.fids] == [
        (row[1], row[2]) for row in rows
    ]
    latest: dict[tuple[str, str], bool] = {}
    for row in rows:
        latest[(row[1], row[2])] = row[3] is None
    counts = index.counts()
    assert counts.rows == len(rows)
    assert counts.fields == len(latest)
    assert counts.deleted_fields == sum(latest.values())
    assert counts.tombstones == sum(row[3] is None for row in rows)
    assert counts.namespaces == len({row[1] for row in rows})
    for prefix, node in index.nodes.items():
        below = [r for r in rows if not prefix or r[1] == prefix or r[1].startswith(prefix + "/")]
        assert node.entries == len(below)
        assert node.namespaces == len({r[1] for r in below})
        assert node.last_seq == max((r[0] for r in below), default=0)


@settings(max_examples=60, deadline=None)
@given(writes)
def test_index_and_steps_match_the_rows(ops: list[tuple[str, str, Any, bool]]) -> None:
    _store, index, rows = build(ops)
    check_index(index, rows)
    for dbns in {row[1] for row in rows}:
        changes = [row[0] for row in rows if row[1] == dbns]
        steps = Steps(index.namespace_fields(dbns))
        assert steps.count == len(changes)
        assert [steps.select(i) for i in range(len(changes))] == changes
        for seq in range(rows[-1][0] + 1):
            assert steps.rank(seq) == sum(change <= seq for change in changes)
        page = namespace_page(index, dbns, at=changes[len(changes) // 2])
        state = {r[2]: r[0] for r in rows if r[1] == dbns and r[0] <= page.at}
        assert {s.name: s.entry.seq for s in page.fields if s.entry} == state


filters = st.builds(
    LogFilter,
    namespace=st.sampled_from([None, "a", "b", "a/x", "b/x"]),
    field=st.sampled_from([None, "f", "g"]),
    context=st.sampled_from([None, "build", "nowhere"]),
)


def selected(rows: list[tuple[Any, ...]], filt: LogFilter) -> list[int]:
    def keep(row: tuple[Any, ...]) -> bool:
        ns = filt.namespace
        return (
            (ns is None or row[1] == ns or row[1].startswith(ns + "/"))
            and (filt.field is None or row[2] == filt.field)
            and (filt.context is None or filt.context in row[5])
        )

    return [row[0] for row in rows if keep(row)]


@settings(max_examples=80, deadline=None)
@given(writes, filters, st.integers(1, 7), st.integers(1, 9))
def test_log_pages_with_any_budget_cover_the_selection_once(
    ops: list[tuple[str, str, Any, bool]], filt: LogFilter, limit: int, budget: int
) -> None:
    """Following the cursors (including "searched as far as") from either end gives
    exactly the selected entries, in order, however small the scan budget."""
    _store, index, rows = build(ops)
    names = {row[1] for row in rows}
    if filt.namespace is not None and not any(
        n == filt.namespace or n.startswith(filt.namespace + "/") for n in names
    ):
        return  # (an unknown namespace is a 404: tested with the API)
    if filt.field is not None and filt.field not in {row[2] for row in rows}:
        return
    expected = selected(rows, filt)
    seen: list[int] = []
    page = log_page(index, filt, after=0, limit=limit, budget=budget)
    for _ in range(10 * len(rows) + 10):
        assert len(page.entries) <= limit
        seen.extend(entry.seq for entry in page.entries)
        if page.newer is None:
            break
        page = log_page(index, filt, after=page.newer, limit=limit, budget=budget)
    assert seen == expected and page.tail
    # where live updates go on from: nothing is left after it, nothing skipped before it
    assert page.follow_from is not None and page.follow_from >= (expected or [0])[-1]
    rest = log_page(index, filt, after=page.follow_from, limit=limit, budget=budget)
    assert rest.entries == [] and rest.tail
    back: list[int] = []
    page = log_page(index, filt, limit=limit, budget=budget)
    assert page.tail and page.follow_from == rows[-1][0]
    for _ in range(10 * len(rows) + 10):
        back[:0] = [entry.seq for entry in page.entries]
        if page.older is None:
            break
        page = log_page(index, filt, before=page.older, limit=limit, budget=budget)
    assert back == expected


def test_sparse_seqs_from_a_dump_are_ordered(tmp_path: Path) -> None:
    rows = [
        (seq, f"n{seq % 3}", "v", b"\x00" + str(seq).encode(), 1700000000.0 + i, "t:1")
        for i, seq in enumerate([5, 9, 10**9, 10**12, 10**15 + 3, 2**61])
    ]
    driver = Memory()
    driver.restore(io.BytesIO(b"".join(pack_rows(rows))))
    store = Store(driver, codec=LenientCodec())
    index = LogIndex()
    index.build(store)
    check_index(index, [tuple(row) for row in driver.load_rows()])
    page = log_page(index, LogFilter(), before=10**12, limit=2)
    assert [entry.seq for entry in page.entries] == [9, 10**9]
    assert page.older == 9 and page.newer == 10**9


def test_rows_reported_during_the_build_are_indexed_once() -> None:
    store = Store(Memory())
    player = store.storage("game", "p1")
    player.score = 1
    index = LogIndex()
    # the follower may report rows the walk will find anyway, before the build
    for value in store.storage("game", "p1").__history__()["score"]:
        index.note(("game", "p1"), "score", value)
    player.score = 2  # appended to the cache; reported only after the build
    index.build(store)
    last = store.storage("game", "p1").__history__()["score"][-1]
    index.note(("game", "p1"), "score", last)
    check_index(index, list(store.driver.load_rows()))


def test_a_followed_index_equals_one_built_anew(tmp_path: Path) -> None:
    """Rows a single writer commits reach the index through the read-only Store's
    follower; the index then equals one built from a fresh open."""
    path = tmp_path / "live.sqlite3"
    writer = Store(Sqlite3(path))
    writer.storage("a").f = 0
    writer.flush()
    index = LogIndex()
    reader = Store(
        Sqlite3(path, read_only=True, shared=True), codec=LenientCodec(), on_change=index.note
    )
    index.build(reader)
    try:
        for i in range(200):
            storage = writer.storage("a" if i % 3 else "b", f"n{i % 7}")
            setattr(storage, FIELDS[i % 3], i)
            if i % 50 == 49:
                delattr(storage, FIELDS[i % 3])
        writer.flush()
        rows = [tuple(row) for row in Sqlite3(path, read_only=True).load_rows()]
        poll(lambda: index.counts().rows == len(rows), timeout=10)
        check_index(index, rows)
        fresh = LogIndex()
        fresh.build(reader)
        assert list(fresh.seqs) == list(index.seqs)
        assert sorted(fresh.nodes) == sorted(index.nodes)
        assert list(fresh.block_min) == list(index.block_min)
        assert list(fresh.block_max) == list(index.block_max)
    finally:
        writer.close()
        reader.close()


def test_the_chart_runs_over_time_unless_times_are_missing_or_bunched() -> None:
    from appendmuch.fieldlog import GONE, FieldLog
    from appendmuch.web.fieldpage import numeric_points
    from appendmuch.web.index import FieldRef

    def points(times: list[float]) -> tuple[list[tuple[float, float]], tuple[float, ...], bool]:
        log = FieldLog()
        for i, stamp in enumerate(times):
            log.append(i + 1, stamp, GONE if i == 2 else [1.5, 7, True, "x", 3][i % 5], "c:1")
        found, deletions, use_time = numeric_points(FieldRef(0, "n", "f", log), len(times))
        return [(p.x, p.y) for p in found], deletions, use_time

    spread = [100.0, 101.0, 102.0, 103.0, 104.0]
    assert points(spread) == ([(100.0, 1.5), (101.0, 7.0), (104.0, 3.0)], (102.0,), True)
    bunched = [100.0, 100.0, 100.0, 100.0, 101.0]
    assert points(bunched) == ([(1.0, 1.5), (2.0, 7.0), (5.0, 3.0)], (3.0,), False)
    assert points([100.0, float("nan"), 102.0, 103.0, 104.0])[2] is False
