"""Memory that grows with the stored bytes: older entries of lists, dicts and other
non-atomic values are held as their stored bytes and decoded on demand.

What must hold (issue 11): the cache of a value-heavy log costs about its stored bytes;
an older entry read back (history, ``within``, ``along``) is identical in type and value
to what a reopen decodes, before and after the reopen; nothing handed out is shared with
the log.  Every test runs on every backend.
"""

from __future__ import annotations

import tracemalloc
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from appendmuch import Codec, Sqlite3, Store, within
from backends import Backend
from helpers import codec_with


def _identical(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_identical, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    return bool(a == b)


def _history_data(store: Store, *namespace: str) -> dict[str, list[Any]]:
    history = store.storage(*namespace).__history__()
    return {name: [v.data for v in values] for name, values in history.items()}


class TestStoredBytes:
    def test_reopened_cache_costs_about_the_stored_bytes(self, backend: Backend) -> None:
        """A list appended to 300 times: opening the log allocates at most twice the
        bytes of its stored values (decoded lists of ints took about 9 times as much)."""
        store = backend.store()
        s = store.storage("exp", "p1")
        with s:
            s.items = list(range(1000, 1100))
        for k in range(300):
            with s:
                s.items.append(1000 + k)
        store.close()
        stored = sum(len(row[3]) for row in backend.raw_rows())
        driver = backend.driver()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            store = Store(driver)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        try:
            assert held <= 2 * stored, f"opening holds {held:,} bytes for {stored:,} stored"
            with store.storage("exp", "p1") as s:
                assert s.items == [*range(1000, 1100), *range(1000, 1300)]
        finally:
            store.close()

    def test_older_entries_read_as_a_reopen_decodes_them(self, backend: Backend) -> None:
        """Without the vigilant check a UUID inside a dict stays a UUID within the
        session, latest or superseded (SPEC 12; its stored bytes would not decode to it,
        so the object is kept); a reopen reads what was stored (the UUID's string)."""
        key = uuid.UUID(int=7)
        store = backend.store(codec=Codec(vigilant=False))
        s = store.storage("exp", "p1")
        s.d = {"u": key}
        with s:
            assert _identical(s.d, {"u": key})  # the latest keeps the assigned objects
        s.d = {"u": None}
        written = [{"u": key}, {"u": None}]
        assert _identical(_history_data(store, "exp", "p1")["d"], written)
        store = backend.reopen(store, codec=Codec(vigilant=False))
        stored = [{"u": str(key)}, {"u": None}]
        assert _identical(_history_data(store, "exp", "p1")["d"], stored)
        store.close()

    def test_every_kind_of_value_survives_being_superseded(self, backend: Backend) -> None:
        values: list[Any] = [
            [1, [2, "x"]],
            {"a": {"b": [1.5, None]}},
            (1, "two", 3.0),
            frozenset({1, 2}),
            {3, 4},
            bytearray(b"ab"),
            ([1], 2),
            Decimal("1.10"),
            b"raw",
            uuid.UUID(int=3),
            None,
        ]
        store = backend.store()
        s = store.storage("exp", "p1")
        for value in values:
            s.v = value
        for attempt in ("written", "reopened"):
            got = _history_data(store, "exp", "p1")["v"]
            assert all(map(_identical, got, values)), (attempt, got)
            if attempt == "written":
                store = backend.reopen(store)
        store.close()

    def test_values_handed_out_are_never_the_logs(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("exp", "p1")
        s.round = 1
        s.items = [1, {"k": [2]}]
        s.round = 2
        s.items = [3]
        for attempt in ("written", "reopened"):
            handed = [
                s.__history__()["items"][0].data,
                within(s, round=1).items,
                next(iter(within.along(s, "round")))[1].items,
                store.cache["exp"]["p1"]["items"][0].data,
            ]
            for value in handed:
                assert value == [1, {"k": [2]}]
                value[1]["k"].append(99)
                value.append(99)
            assert within(s, round=1).items == [1, {"k": [2]}]
            assert s.__history__()["items"][0].data == [1, {"k": [2]}]
            if attempt == "written":
                store = backend.reopen(store)
                s = store.storage("exp", "p1")
        store.close()

    def test_contexts_on_superseded_values(self, backend: Backend) -> None:
        """Hashable (tuple) and unhashable (list) context values whose entries are held
        as stored bytes by the time the query first runs, repeated queries included."""
        store = backend.store()
        s = store.storage("exp", "p1")
        for k in range(5):
            s.pos = (k, k)
            s.tags = [k]
            s.score = 10 * k
        for attempt in ("written", "reopened"):
            for _ in range(3):
                for k in range(5):
                    assert within(s, pos=(k, k)).score == 10 * k
                    assert within(s, tags=[k]).score == 10 * k
                    assert within.strict(s, tags=[k], pos=(k, k)).score == 10 * k
            assert [v for v, _ in within.along(s, "pos")] == [(k, k) for k in range(5)]
            if attempt == "written":
                store = backend.reopen(store)
                s = store.storage("exp", "p1")
        store.close()


class Box:
    """A mutable, unhashable registered type (type id 140 in one codec)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.items == self.items  # type: ignore[attr-defined]


class Crate(Box):
    """Another class stored under the same type id by another codec."""


def _codec_for(cls: type[Box]) -> Codec:
    return codec_with(
        cls,
        140,
        lambda box: orjson.dumps(box.items),
        lambda raw: cls(orjson.loads(raw)),
        mutable=True,
    )


def test_decoded_entries_are_never_mixed_up_between_codecs(tmp_path: Path) -> None:
    """The same stored bytes mean a Box to one Store and a Crate to another; queries that
    compare older entries of each (through the cache of decoded entries) see their own."""
    stores = []
    for cls, score in ((Box, 1), (Crate, 5)):
        store = Store(Sqlite3(tmp_path / f"{cls.__name__}.sqlite3"), codec=_codec_for(cls))
        s = store.storage("exp", "p1")
        s.v = cls([1])
        s.score = score
        s.v = cls([2])
        stores.append(store)
    for _ in range(2):
        for store, cls, score in ((stores[0], Box, 1), (stores[1], Crate, 5)):
            s = store.storage("exp", "p1")
            assert within(s, v=cls([1])).score == score
            assert within(s, v=cls([1])).v == cls([1])
            assert type(s.__history__()["v"][0].data) is cls
    for store in stores:
        store.close()
