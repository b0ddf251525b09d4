"""Mutable values and ``with storage:`` blocks (SPEC §4).

Mutable values are read only inside a ``with`` block; each block hands out one
working copy per field, detects in-place changes on exit by comparing encodings,
and appends each changed field once.  Values handed out and values stored never
alias.  Every test runs on every backend; persistence is checked by reopening.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import pytest

from appendmuch import Codec, Storage, Store
from backends import Backend
from helpers import codec_with, datas, history, kept_to_the_end, next_line, where
from snapshots import unchanged

# --------------------------------------------------------------------------- helpers


def same(store: Store, left: Any, right: Any) -> bool:
    """Equal by encoding (also for values without ``==``, like random.Random)."""
    return bool(store.codec.encode(left) == store.codec.encode(right))


class Tally:
    """A custom type the tests register as mutable."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tally) and other.n == self.n

    __hash__ = None  # type: ignore[assignment]


def tally_codec() -> Codec:
    return codec_with(
        Tally, 140, lambda t: orjson.dumps(t.n), lambda raw: Tally(orjson.loads(raw)), mutable=True
    )


def seeded(seed: int, draws: int = 0) -> random.Random:
    rng = random.Random(seed)
    for _ in range(draws):
        rng.random()
    return rng


# ------------------------------------------------------------------ which values are mutable

IMMUTABLE = [
    True,
    0,
    -12,
    1.5,
    "text",
    b"\x00bytes",
    1 + 2j,
    None,
    Decimal("1.10"),
    date(2024, 1, 2),
    time(3, 4, 5),
    datetime(2024, 1, 2, 3, 4, 5),
    UUID(int=12345),
    (),
    (1, "a", 2.5, None),
    frozenset({1, "a", 2.5}),
]

MUTABLE = [
    [1, 2],
    {"k": 1},
    {1, 2},
    bytearray(b"ab"),
    random.Random(7),
    (1, [2]),
    (1, {"k": [2]}),
    ("x", [], {}),
]


def stable_id(value: Any) -> str:
    """A test id that is the same in every process (pytest-xdist's workers must agree):
    a frozenset's repr follows string hashing, a Random's names its address."""
    if isinstance(value, frozenset):
        return "frozenset(" + ", ".join(sorted(map(repr, value))) + ")"
    if isinstance(value, random.Random):
        return "random.Random"
    return repr(value)


class TestMutability:
    """Immutable values read anywhere; mutable ones need ``with`` (SPEC §4)."""

    @pytest.mark.parametrize("value", IMMUTABLE, ids=stable_id)
    def test_immutable_value_reads_outside_with(self, backend: Backend, value: Any) -> None:
        store = backend.store()
        store.storage("game", "p1").v = value
        assert store.storage("game", "p1").v == value
        store = backend.reopen(store)
        read = store.storage("game", "p1").v
        assert read == value
        assert type(read) is type(value)
        store.close()

    @pytest.mark.parametrize("value", MUTABLE, ids=stable_id)
    def test_mutable_value_read_outside_with_raises_type_error(
        self, backend: Backend, value: Any
    ) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.v = value  # writing is allowed anywhere
        with pytest.raises(TypeError, match="context manager"):
            s.v
        with s:
            assert same(store, s.v, value)
        store = backend.reopen(store)
        s = store.storage("game", "p1")
        with pytest.raises(TypeError, match="context manager"):
            s.v
        with s:
            assert same(store, s.v, value)
        store.close()

    def test_registered_mutable_type_needs_with(self, backend: Backend) -> None:
        store = backend.store(codec=tally_codec())
        s = store.storage("game", "p1")
        s.t = Tally(1)
        with pytest.raises(TypeError, match="context manager"):
            s.t
        with s:
            s.t.n += 1
        assert [v.data.n for v in history(s, "t")] == [1, 2]
        store = backend.reopen(store, codec=tally_codec())
        s = store.storage("game", "p1")
        with pytest.raises(TypeError, match="context manager"):
            s.t
        with s:
            assert s.t == Tally(2)
        store.close()

    def test_get_of_mutable_outside_with_raises_too(self, backend: Backend) -> None:
        """``get`` must not hand out a mutable value that could not be saved."""
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with pytest.raises(TypeError, match="context manager"):
            s.get("items")
        store.close()


# --------------------------------------------------------------------------- working copies


def append_three(s: Storage) -> None:
    s.v.append(3)


def set_dict_item(s: Storage) -> None:
    s.v["b"] = 2


def add_to_set(s: Storage) -> None:
    s.v.add(2)


def extend_bytearray(s: Storage) -> None:
    s.v.extend(b"c")


def append_in_tuple(s: Storage) -> None:
    s.v[1].append(3)


def set_nested_dict_item(s: Storage) -> None:
    s.v["a"]["c"] = 2


def append_in_dict_list(s: Storage) -> None:
    s.v["a"].append(2)


def draw_random(s: Storage) -> None:
    s.v.random()


MUTATIONS: list[tuple[str, Any, Callable[[Storage], None], Any]] = [
    ("list-append", [1, 2], append_three, [1, 2, 3]),
    ("dict-item", {"a": 1}, set_dict_item, {"a": 1, "b": 2}),
    ("set-add", {1}, add_to_set, {1, 2}),
    ("bytearray-extend", bytearray(b"ab"), extend_bytearray, bytearray(b"abc")),
    ("list-in-tuple", (1, [2]), append_in_tuple, (1, [2, 3])),
    ("nested-dict", {"a": {"b": 1}}, set_nested_dict_item, {"a": {"b": 1, "c": 2}}),
    ("list-in-dict", {"a": [1]}, append_in_dict_list, {"a": [1, 2]}),
    ("random-state", seeded(5), draw_random, seeded(5, draws=1)),
]


class TestWorkingCopies:
    """In-place changes are detected on exit, once per changed field."""

    def test_one_working_copy_per_field_per_block(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        s.d = {"k": 1}
        with s:
            first = s.items
            assert s.items is first
            assert s.d is s.d
            assert s.items is not s.d
        store.close()

    @pytest.mark.parametrize(
        ("initial", "mutate", "expected"),
        [m[1:] for m in MUTATIONS],
        ids=[m[0] for m in MUTATIONS],
    )
    def test_in_place_mutation_written_on_exit(
        self,
        backend: Backend,
        initial: Any,
        mutate: Callable[[Storage], None],
        expected: Any,
    ) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.v = initial
        with s:
            mutate(s)
            assert len(history(s, "v")) == 1  # not written before the exit
        values = history(s, "v")
        assert len(values) == 2
        assert same(store, values[-1].data, expected)
        store = backend.reopen(store)
        s = store.storage("game", "p1")
        assert len(history(s, "v")) == 2
        with s:
            assert same(store, s.v, expected)
        store.close()

    def test_each_changed_field_appended_once(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.a = []
        s.b = {}
        s.c = [0]
        with s:
            for i in range(3):
                s.a.append(i)
                s.b[str(i)] = i
            s.c.append(1)
        assert datas(s, "a") == [[], [0, 1, 2]]
        assert datas(s, "b") == [{}, {"0": 0, "1": 1, "2": 2}]
        assert datas(s, "c") == [[0], [0, 1]]
        store.close()

    def test_unchanged_fields_append_nothing(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1, 2]
        s.d = {"a": 1, "b": 2}
        s.tags = {"x", "y"}
        s.score = 3
        with unchanged(store):
            with s:
                s.items
                s.score
                # changes that are undone, or only reorder, leave the encoding equal
                s.items.append(3)
                s.items.pop()
                del s.d["a"]
                s.d["a"] = 1
                s.tags.discard("x")
                s.tags.add("x")
        store.close()

    def test_assignment_in_block_writes_at_once(self, backend: Backend) -> None:
        """Single-writer mode: at once.  Shared mode: kept until the block ends (read
        back inside it), then committed with the block's other writes."""
        store = backend.store()
        s = store.storage("game", "p1")
        with s:
            s.items = ["sword"]
            s.score = 1
            assert s.score == 1
            assert s.items == ["sword"]
            if kept_to_the_end(store):
                assert "items" not in s.__history__()
            else:
                assert datas(s, "items") == [["sword"]]
                assert datas(s, "score") == [1]
        assert datas(s, "items") == [["sword"]]
        assert datas(s, "score") == [1]
        store.close()

    def test_mutating_assigned_value_in_block_writes_again_at_exit(self, backend: Backend) -> None:
        """The description's example: assign, then append, in one block."""
        store = backend.store()
        player = store.storage("game", "player1")
        with player:
            player.items = ["sword"]
            player.items.append("shield")
        assert datas(player, "items") == [["sword"], ["sword", "shield"]]
        store = backend.reopen(store)
        player = store.storage("game", "player1")
        with player:
            assert player.items == ["sword", "shield"]
        store.close()

    def test_mutating_assigned_object_itself_writes_again_at_exit(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        with s:
            items = ["sword"]
            s.items = items
            items.append("shield")
            if not kept_to_the_end(store):
                assert datas(s, "items") == [["sword"]]  # the stored entry is not the object
        assert datas(s, "items") == [["sword"], ["sword", "shield"]]
        store.close()

    def test_flush_persists_mutations_immediately(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with s:
            s.items.append(2)
            s.flush()
            assert datas(s, "items") == [[1], [1, 2]]
            s.flush()  # nothing changed since: nothing appended
            assert len(history(s, "items")) == 2
            s.items.append(3)
        assert datas(s, "items") == [[1], [1, 2], [1, 2, 3]]
        store = backend.reopen(store)
        assert datas(store.storage("game", "p1"), "items") == [[1], [1, 2], [1, 2, 3]]
        store.close()

    def test_flushed_mutation_survives_a_later_exception(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with pytest.raises(RuntimeError), s:
            s.items.append(2)
            s.flush()
            s.items.append(3)
            raise RuntimeError("boom")
        assert datas(s, "items") == [[1], [1, 2]]
        store.close()


class TestExceptions:
    """A block left by an exception writes no detected mutation."""

    def test_exception_in_block_writes_nothing(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        s.d = {"k": 1}
        with unchanged(store):
            with pytest.raises(RuntimeError, match="boom"), s:
                s.items.append(2)
                s.d["k"] = 2
                raise RuntimeError("boom")
        with s:
            assert s.items == [1]
            assert s.d == {"k": 1}
        store = backend.reopen(store)
        with store.storage("game", "p1") as s:
            assert s.items == [1]
        store.close()

    def test_assignment_before_exception_stays_written(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.b = [0]
        with pytest.raises(RuntimeError), s:
            s.a = [1]
            s.b.append(1)
            raise RuntimeError("boom")
        if kept_to_the_end(store):
            assert "a" not in s.__history__()  # shared mode: a failed block writes nothing
        else:
            assert datas(s, "a") == [[1]]
        assert datas(s, "b") == [[0]]
        store.close()


# --------------------------------------------------------------------------- nesting


class TestNestedBlocks:
    """Nested ``with`` blocks never lose a mutation."""

    def test_nested_blocks_on_same_object(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.a = [0]
        s.b = [0]
        with s:
            s.a.append(1)
            with s:
                s.b.append(2)
                s.a.append(3)
            s.a.append(4)
        with s:
            assert s.a == [0, 1, 3, 4]
            assert s.b == [0, 2]
        store = backend.reopen(store)
        with store.storage("game", "p1") as s:
            assert (s.a, s.b) == ([0, 1, 3, 4], [0, 2])
        store.close()

    def test_nested_blocks_on_objects_of_same_namespace(self, backend: Backend) -> None:
        store = backend.store()
        outer = store.storage("game", "p1")
        inner = store.storage("game", "p1")
        outer.items = [0]
        with outer:
            held = outer.items
            held.append(1)
            with inner:
                inner.items.append(2)
            held.append(3)
        with outer:
            assert outer.items == [0, 1, 2, 3]
        store = backend.reopen(store)
        with store.storage("game", "p1") as s:
            assert s.items == [0, 1, 2, 3]
        store.close()

    def test_nested_blocks_on_different_namespaces(self, backend: Backend) -> None:
        store = backend.store()
        a = store.storage("game", "a")
        b = store.storage("game", "b")
        a.items = [0]
        b.items = [0]
        with a:
            a.items.append(1)
            with b:
                b.items.append(2)
                a.items.append(3)
            b_after = datas(b, "items")
            if kept_to_the_end(store):  # (shared mode: with a's, at a's end)
                assert b_after == [[0]]
            else:
                assert b_after == [[0], [0, 2]]
        assert datas(a, "items")[-1] == [0, 1, 3]
        assert datas(b, "items") == [[0], [0, 2]]
        store = backend.reopen(store)
        with store.storage("game", "a") as a, store.storage("game", "b") as b:
            assert (a.items, b.items) == ([0, 1, 3], [0, 2])
        store.close()


class AppError(Exception):
    """Raised inside a block and caught by the application."""


class TestFailedNestedBlocks:
    """A nested block that ends with an exception (caught by the application) discards
    only the unsaved changes made during it; the enclosing block keeps its own and saves
    them when it ends normally (README "Mutable values")."""

    @pytest.mark.parametrize("same_object", [True, False], ids=["same-object", "other-object"])
    def test_failed_inner_block_keeps_the_outer_blocks_changes(
        self, backend: Backend, same_object: bool
    ) -> None:
        store = backend.store()
        outer = store.storage("game", "p1")
        inner = outer if same_object else store.storage("game", "p1")
        outer.a = [0]
        outer.b = [0]
        outer.c = {"k": 0}
        with outer:
            held = outer.a
            held.append(1)
            outer.c["k"] = 1
            with pytest.raises(AppError), inner:
                inner.a.append(2)
                inner.c["k"] = 2
                inner.b.append(9)  # first read inside the failing block
                raise AppError
            assert outer.a == [0, 1]
            assert outer.a is held  # rewound in place: the outer block's reference works
            assert outer.c == {"k": 1}
            assert outer.b == [0]
            held.append(3)
        assert datas(outer, "a") == [[0], [0, 1, 3]]
        assert datas(outer, "b") == [[0]]
        assert datas(outer, "c") == [{"k": 0}, {"k": 1}]
        store = backend.reopen(store)
        with store.storage("game", "p1") as s:
            assert (s.a, s.b, s.c) == ([0, 1, 3], [0], {"k": 1})
        store.close()

    def test_failed_block_keeps_what_a_deeper_block_saved(self, backend: Backend) -> None:
        """Three levels: the middle block's normal exit saves the namespace's changes so
        far (like ``flush()``); the failing block around it rewinds to what was saved,
        dropping only its later, unsaved change; the outermost block goes on."""
        store = backend.store()
        s = store.storage("game", "p1")
        s.a = [0]
        with s:
            s.a.append(1)
            with pytest.raises(AppError), s:
                s.a.append(2)
                with s:
                    s.a.append(3)
                if not kept_to_the_end(store):
                    assert datas(s, "a")[-1] == [0, 1, 2, 3]  # saved by the middle exit
                s.a.append(4)
                raise AppError
            if kept_to_the_end(store):
                # shared mode: a nested block that fails rolls back all it did
                assert s.a == [0, 1]
                s.a.append(5)
            else:
                assert s.a == [0, 1, 2, 3]
                s.a.append(5)
        if kept_to_the_end(store):
            assert datas(s, "a") == [[0], [0, 1, 5]]
        else:
            assert datas(s, "a") == [[0], [0, 1, 2, 3], [0, 1, 2, 3, 5]]
        store.close()

    def test_inner_normal_exit_saves_the_outer_changes_too(self, backend: Backend) -> None:
        """While an outer block is open, an inner block's normal exit saves every changed
        working copy of the namespace (the outer block's changes so far included); an
        outer failure afterwards discards only what changed since."""
        store = backend.store()
        s = store.storage("game", "p1")
        other = store.storage("game", "p1")
        s.a = [0]
        s.b = [0]
        with pytest.raises(AppError), s:
            s.a.append(1)
            with other:
                other.b.append(2)
            if not kept_to_the_end(store):
                assert datas(s, "a") == [[0], [0, 1]]
                assert datas(s, "b") == [[0], [0, 2]]
            s.a.append(3)
            raise AppError
        # (shared mode: the failed outermost block writes nothing)
        assert datas(s, "a") == ([[0]] if kept_to_the_end(store) else [[0], [0, 1]])
        store.close()

    def test_rewind_replaces_objects_it_cannot_restore_in_place(self, backend: Backend) -> None:
        """A mutable custom type changed in a failed inner block reads back as it was."""
        store = backend.store(codec=tally_codec())
        s = store.storage("game", "p1")
        s.t = Tally(0)
        with s:
            s.t.n = 1
            with pytest.raises(AppError), s:
                s.t.n = 2
                raise AppError
            assert s.t == Tally(1)
        assert [t.n for t in datas(s, "t")] == [0, 1]
        store.close()


class TestConcurrentWrites:
    """A newer write by another Storage object wins over the block's stale copy."""

    def test_other_storage_assignment_during_block_wins(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        other = store.storage("game", "p1")
        s.items = [1]
        with s:
            stale = s.items
            stale.append("stale")
            other.items = ["newer"]
        assert datas(s, "items") == [[1], ["newer"]]
        store = backend.reopen(store)
        with store.storage("game", "p1") as s:
            assert s.items == ["newer"]
        store.close()

    def test_other_storage_scalar_write_during_block_wins(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with s:
            s.items.append(2)
            store.storage("game", "p1").items = "replaced"
        assert s.items == "replaced"
        assert len(history(s, "items")) == 2
        store.close()

    def test_other_storage_delete_during_block_wins(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with s:
            s.items.append(2)
            del store.storage("game", "p1").items
        assert s.get("items") is None
        assert [v.unavailable for v in history(s, "items")] == [False, True]
        store = backend.reopen(store)
        assert store.storage("game", "p1").get("items") is None
        store.close()


# --------------------------------------------------------------------------- aliasing


class TestNoAliasing:
    """Values handed out and values stored never alias."""

    def test_mutating_assigned_list_outside_block_changes_nothing(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        items = [1]
        nested = {"a": [1]}
        s.items = items
        s.nested = nested
        with unchanged(store):
            items.append(2)
            nested["a"].append(2)
        with s:
            assert s.items == [1]
            assert s.nested == {"a": [1]}
        store = backend.reopen(store)
        with store.storage("game", "p1") as s:
            assert (s.items, s.nested) == ([1], {"a": [1]})
        store.close()

    def test_mutating_value_read_in_failed_block_changes_nothing(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with unchanged(store):
            with pytest.raises(RuntimeError), s:
                read = s.items
                read.append(2)
                raise RuntimeError("boom")
            read.append(3)
        assert datas(s, "items") == [[1]]
        with s:
            assert s.items == [1]
        store.close()

    def test_mutating_value_after_its_block_changes_nothing(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with s:
            kept = s.items
        with unchanged(store):
            kept.append(2)
        with s:
            assert s.items == [1]
        assert datas(s, "items") == [[1]]
        store.close()

    def test_working_copy_is_not_the_stored_entry(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with s:
            s.items.append(2)
            assert datas(s, "items") == [[1]]
            assert store.cache["game"]["p1"]["items"][-1].data == [1]
        store.close()

    def test_mutating_history_data_changes_nothing(self, backend: Backend) -> None:
        """History Values are handed out too: mutating their data must not change
        the log, later history snapshots or reads."""
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        with unchanged(store):
            history(s, "items")[0].data.append("mutated")
        assert datas(s, "items") == [[1]]
        with s:
            assert s.items == [1]
        store.close()


# ------------------------------------------------------------------ context and persistence


def test_exit_write_context_names_with_statement(backend: Backend) -> None:
    store = backend.store()
    s = store.storage("game", "p1")
    s.items = [1]
    line = next_line()
    with s:
        s.items.append(2)
    expected = where("test_exit_write_context_names_with_statement", line)
    assert history(s, "items")[-1].context == expected
    store = backend.reopen(store)
    assert history(store.storage("game", "p1"), "items")[-1].context == expected
    store.close()


def test_flush_context_names_flush_call(backend: Backend) -> None:
    store = backend.store()
    s = store.storage("game", "p1")
    s.items = [1]
    with s:
        s.items.append(2)
        line = next_line()
        s.flush()
    assert history(s, "items")[-1].context == where("test_flush_context_names_flush_call", line)
    assert len(history(s, "items")) == 2
    store.close()


def test_mutations_of_many_fields_survive_reopen(backend: Backend) -> None:
    store = backend.store()
    s = store.storage("game", "p1")
    s.items = ["a"]
    s.d = {"k": {"n": 1}}
    s.tags = set()
    s.raw = bytearray()
    s.pair = ("x", [])
    with s:
        s.items.append("b")
        s.d["k"]["n"] += 1
        s.tags.add("t")
        s.raw += b"\x01"
        s.pair[1].append(None)
    store = backend.reopen(store)
    s = store.storage("game", "p1")
    with s:
        assert s.items == ["a", "b"]
        assert s.d == {"k": {"n": 2}}
        assert s.tags == {"t"}
        assert s.raw == bytearray(b"\x01")
        assert s.pair == ("x", [None])
    for field in ("items", "d", "tags", "raw", "pair"):
        assert len(history(s, field)) == 2
    store.close()
