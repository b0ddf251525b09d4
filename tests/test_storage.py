"""Store and Storage: namespaces, fields, writes, reads, deletes, callbacks, replace
semantics and the compatibility surface (SPEC sections 2, 3, 5, 6, 8, 12).

Every test runs on every backend through the ``backend`` fixture; where persistence
matters the Store is closed and reopened on the same log (``backend.reopen``).
"""

from __future__ import annotations

import bisect
import contextlib
import time
from typing import Any

import pytest

from appendmuch import Codec, Memory, Storage, Store, Value, iter_fields
from backends import Backend
from helpers import datas, history, kept_to_the_end, next_line, settled, where
from snapshots import cache_snapshot, unchanged

# --------------------------------------------------------------------------- helpers


def all_seqs(store: Store) -> list[int]:
    """Every seq in the in-memory log."""
    return [value.seq for _, _, log in iter_fields(store.cache) for value in log]


def write_score_from_helper(storage: Storage, value: int) -> int:
    """Write ``score`` from a helper function; return the line of the write."""
    line = next_line()
    storage.score = value
    return line


# --------------------------------------------------------------------------- writes and reads


class TestWriteRead:
    """``s.x = v`` appends an entry; ``s.x`` returns the latest value (SPEC §3)."""

    def test_read_returns_latest_write(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.score = 1
        s.score = 2
        s.label = "x"
        assert s.score == 2
        assert s.label == "x"
        store = backend.reopen(store)
        s = store.storage("game", "p1")
        assert (s.score, s.label) == (2, "x")
        store.close()

    def test_every_write_appends_one_entry(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        for i in range(5):
            s.score = i
        s.score = 4  # an equal value is still a new entry
        assert datas(s, "score") == [0, 1, 2, 3, 4, 4]
        store.flush()
        rows = [r for r in backend.raw_rows() if r[1] == "game/p1" and r[2] == "score"]
        assert [store.codec.decode(r[3]) for r in rows] == [0, 1, 2, 3, 4, 4]
        store = backend.reopen(store)
        assert datas(store.storage("game", "p1"), "score") == [0, 1, 2, 3, 4, 4]
        store.close()

    def test_missing_field_raises_attribute_error_naming_storage_and_field(
        self, backend: Backend
    ) -> None:
        store = backend.store()
        s = store.storage("game", "player_q7")
        with pytest.raises(AttributeError) as info:
            s.never_written_field
        message = str(info.value)
        assert "player_q7" in message
        assert "never_written_field" in message
        store.close()

    def test_deleted_field_raises_attribute_error_naming_storage_and_field(
        self, backend: Backend
    ) -> None:
        store = backend.store()
        s = store.storage("game", "player_q7")
        s.gone_field = 1
        del s.gone_field
        for _ in range(2):
            with pytest.raises(AttributeError) as info:
                s.gone_field
            assert "player_q7" in str(info.value)
            assert "gone_field" in str(info.value)
            store = backend.reopen(store)
            s = store.storage("game", "player_q7")
        store.close()

    def test_get_returns_value_or_default(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.score = 7
        s.gone = 1
        del s.gone
        assert s.get("score") == 7
        assert s.get("score", 0) == 7
        assert s.get("missing") is None
        assert s.get("missing", "fallback") == "fallback"
        assert s.get("gone", 42) == 42
        store.close()

    def test_unencodable_value_raises_and_changes_nothing(self, backend: Backend) -> None:
        """A value the codec refuses leaves no entry, no seq used, no callback."""
        calls: list[Any] = []
        store = backend.store(on_change=lambda *args: calls.append(args))
        s = store.storage("game", "p1")
        s.score = 1
        settled(store)
        with unchanged(store, calls):
            with pytest.raises((TypeError, ValueError)):
                s.score = object()
            with pytest.raises((TypeError, ValueError)):
                s.score = float("inf")
        assert s.score == 1
        store.close()


class TestDelete:
    """``del s.x`` appends a tombstone; deleting what is not there appends nothing."""

    def test_delete_appends_tombstone(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.score = 5
        del s.score
        last = history(s, "score")[-1]
        assert last.unavailable is True
        assert last.data is None
        assert len(history(s, "score")) == 2
        store.flush()
        rows = [r for r in backend.raw_rows() if r[2] == "score"]
        assert len(rows) == 2
        assert rows[-1][3] is None
        store = backend.reopen(store)
        reopened = history(store.storage("game", "p1"), "score")
        assert [v.unavailable for v in reopened] == [False, True]
        assert reopened[-1].data is None
        store.close()

    def test_delete_missing_field_raises_and_appends_nothing(self, backend: Backend) -> None:
        calls: list[Any] = []
        store = backend.store(on_change=lambda *args: calls.append(args))
        s = store.storage("game", "p1")
        s.other = 1
        settled(store)
        with unchanged(store, calls):
            with pytest.raises(AttributeError):
                del s.never_there
        store.close()

    def test_delete_deleted_field_raises_and_appends_nothing(self, backend: Backend) -> None:
        calls: list[Any] = []
        store = backend.store(on_change=lambda *args: calls.append(args))
        s = store.storage("game", "p1")
        s.score = 1
        del s.score
        with unchanged(store, calls):
            with pytest.raises(AttributeError):
                del s.score
        store = backend.reopen(store, on_change=lambda *args: calls.append(args))
        s = store.storage("game", "p1")
        with unchanged(store):
            with pytest.raises(AttributeError):
                del s.score
        assert calls == []
        store.close()

    def test_set_after_delete_is_a_fresh_write(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.score = 1
        del s.score
        s.score = 2
        assert s.score == 2
        assert "score" in s.__fields__()
        assert [(v.unavailable, v.data) for v in history(s, "score")] == [
            (False, 1),
            (True, None),
            (False, 2),
        ]
        store = backend.reopen(store)
        s = store.storage("game", "p1")
        assert s.score == 2
        del s.score  # and it can be deleted again
        assert s.get("score") is None
        store.close()


# --------------------------------------------------------------------------- entry metadata


class TestSequence:
    """Sequence numbers: strictly increasing across the whole store, never reused."""

    def test_seq_strictly_increasing_across_store(self, backend: Backend) -> None:
        store = backend.store()
        a = store.storage("game", "a")
        b = store.storage("game", "b")
        top = store.storage("other")
        seen: list[int] = []

        def check_one_new_entry() -> None:
            settled(store)  # (shared mode: a write's seq is final once committed)
            seqs = all_seqs(store)
            assert len(seqs) == len(set(seqs))
            new = sorted(set(seqs) - set(seen))
            assert len(new) == 1
            assert not seen or new[0] > max(seen)
            seen.append(new[0])

        a.x = 1
        check_one_new_entry()
        b.y = 2
        check_one_new_entry()
        a.x = 3
        check_one_new_entry()
        del b.y
        check_one_new_entry()
        b.y = 4
        check_one_new_entry()
        top.z = 5
        check_one_new_entry()
        a.w = 6
        check_one_new_entry()
        store.close()

    def test_seq_continues_after_reopen(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.a = 1
        s.b = 2
        del s.a
        settled(store)
        before = all_seqs(store)
        store = backend.reopen(store)
        assert sorted(all_seqs(store)) == sorted(before)
        s = store.storage("game", "p1")
        s.a = 3
        store.storage("game", "p2").c = 4
        settled(store)
        after = sorted(set(all_seqs(store)) - set(before))
        assert len(after) == 2
        assert min(after) > max(before)
        assert history(s, "a")[-1].seq == after[0]
        store = backend.reopen(store)
        store.storage("game", "p1").d = 5
        settled(store)
        newest = max(all_seqs(store))
        assert newest > after[-1]
        store.flush()
        seqs = [row[0] for row in backend.raw_rows()]
        assert len(seqs) == len(set(seqs)) == 6
        store.close()


class TestCreatedAt:
    """Each entry records the wall-clock time of the write (``time.time()``)."""

    def test_created_at_is_wall_clock_time(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        before = time.time()
        s.score = 1
        del s.score
        after = time.time()
        times = [v.time for v in history(s, "score")]
        assert all(t is not None and before <= t <= after for t in times)
        store.flush()
        assert [row[4] for row in backend.raw_rows()] == times
        store = backend.reopen(store)
        assert [v.time for v in history(store.storage("game", "p1"), "score")] == times
        store.close()


def test_context_names_module_function_and_line(backend: Backend) -> None:
    """The context of a write is ``module.function:lineno`` of the assignment."""
    store = backend.store()
    s = store.storage("game", "p1")
    first = next_line()
    s.score = 1
    second = next_line()
    s.score = 2
    expected = [
        where("test_context_names_module_function_and_line", first),
        where("test_context_names_module_function_and_line", second),
    ]
    assert [v.context for v in history(s, "score")] == expected
    store = backend.reopen(store)
    assert [v.context for v in history(store.storage("game", "p1"), "score")] == expected
    store.close()


def test_context_of_delete_names_del_statement(backend: Backend) -> None:
    store = backend.store()
    s = store.storage("game", "p1")
    s.score = 1
    line = next_line()
    del s.score
    expected = where("test_context_of_delete_names_del_statement", line)
    assert history(s, "score")[-1].context == expected
    store = backend.reopen(store)
    assert history(store.storage("game", "p1"), "score")[-1].context == expected
    store.close()


def test_context_of_write_in_helper_names_helper_function(backend: Backend) -> None:
    store = backend.store()
    s = store.storage("game", "p1")
    line = write_score_from_helper(s, 3)
    context = history(s, "score")[-1].context
    assert context == where("write_score_from_helper", line)
    assert "write_score_from_helper" in context
    store.close()


# --------------------------------------------------------------------------- fields, bool, refresh


class TestFields:
    """``__fields__()`` and ``bool()``: the currently available fields."""

    def test_fields_in_order_of_first_write_excluding_deleted(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.a = 1
        s.b = 2
        s.c = 3
        s.a = 4
        assert s.__fields__() == ["a", "b", "c"]
        del s.b
        assert s.__fields__() == ["a", "c"]
        store = backend.reopen(store)
        s = store.storage("game", "p1")
        assert s.__fields__() == ["a", "c"]
        s.d = 5
        s.b = 6  # re-set after delete: b was first written before c
        assert s.__fields__() == ["a", "b", "c", "d"]
        store = backend.reopen(store)
        assert store.storage("game", "p1").__fields__() == ["a", "b", "c", "d"]
        store.close()

    def test_bool_tracks_available_fields(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        assert not s
        s.a = 0  # a falsy value is still a field
        assert s
        del s.a
        assert not s
        s.b = None
        store = backend.reopen(store)
        s = store.storage("game", "p1")
        assert s
        del s.b
        assert not s
        store.close()

    def test_namespace_with_only_subnamespaces_is_empty(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("game", "p1").x = 1
        parent = store.storage("game")
        assert not parent
        assert parent.__fields__() == []
        store.close()


class TestRefresh:
    """``s.refresh(*fields)`` drops cached working copies so reads see the store again."""

    def test_refresh_named_field_discards_its_working_copy(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        s.tags = ["a"]
        with s:
            s.items.append(2)
            s.tags.append("b")
            s.refresh("items")
            assert s.items == [1]
            assert s.tags == ["a", "b"]
        assert datas(s, "items") == [[1]]
        assert datas(s, "tags") == [["a"], ["a", "b"]]
        store = backend.reopen(store)
        with store.storage("game", "p1") as s:
            assert (s.items, s.tags) == ([1], ["a", "b"])
        store.close()

    def test_refresh_without_names_discards_all_working_copies(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.items = [1]
        s.tags = ["a"]
        with unchanged(store):
            with s:
                s.items.append(2)
                s.tags.append("b")
                s.refresh()
                assert s.items == [1]
                assert s.tags == ["a"]
        store.close()

    def test_refresh_outside_block_changes_nothing(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.score = 3
        s.items = [1]
        with unchanged(store):
            s.refresh()
            s.refresh("score", "items")
        assert s.score == 3
        store.close()


# --------------------------------------------------------------------------- identity


class TestIdentity:
    """repr, equality and hashing of Storage objects (SPEC §2)."""

    def test_repr(self, backend: Backend) -> None:
        store = backend.store()
        assert repr(store.storage("game", "player1")) == "Storage('game', 'player1')"
        assert repr(store.storage("a", "b-c", "d.e")) == "Storage('a', 'b-c', 'd.e')"
        store.close()

    def test_equal_and_hash_equal_for_same_namespace(self, backend: Backend) -> None:
        store = backend.store()
        other_store = Store(Memory())
        a = store.storage("game", "p1")
        b = store.storage("game", "p1")
        c = other_store.storage("game", "p1")
        assert a is not b
        assert a == b == c
        assert hash(a) == hash(b) == hash(c)
        assert len({a, b, c}) == 1
        assert {a: 1}[c] == 1
        store.close()
        other_store.close()

    @pytest.mark.parametrize(
        ("left", "right"),
        [
            (("game", "p1"), ("game", "p2")),
            (("game", "p1"), ("game",)),
            (("game", "p1"), ("p1", "game")),
            (("game", "p1"), ("game", "p1", "x")),
        ],
    )
    def test_unequal_for_different_namespaces(
        self, backend: Backend, left: tuple[str, ...], right: tuple[str, ...]
    ) -> None:
        store = backend.store()
        assert store.storage(*left) != store.storage(*right)
        assert len({store.storage(*left), store.storage(*right)}) == 2
        store.close()

    def test_not_equal_to_its_namespace_tuple(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        assert s != ("game", "p1")
        assert s != "game/p1"
        store.close()

    def test_many_storage_objects_see_the_same_data(self, backend: Backend) -> None:
        store = backend.store()
        a = store.storage("game", "p1")
        b = store.storage("game", "p1")
        a.score = 1
        assert b.score == 1
        b.score = 2
        assert a.score == 2
        with b:
            b.items = [1]
        with a:
            assert a.items == [1]
        del b.score
        with pytest.raises(AttributeError):
            a.score
        assert a.__fields__() == b.__fields__() == ["items"]
        store.close()

    def test_a_handle_is_reused_only_when_nobody_holds_it(self, backend: Backend) -> None:
        """store.storage(...) may hand out a handle again once the application dropped
        it; one still held is never handed out twice."""
        store = backend.store()
        held = [store.storage("game", "p1") for _ in range(3)]
        assert len({id(h) for h in held}) == 3
        held[0].score = 1
        assert all(h.score == 1 for h in held)
        del held
        assert store.storage("game", "p1").score == 1
        store.close()

    def test_virtual_fields_stay_with_their_object(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("game", "p1").score = 5
        a = store.storage("game", "p1")
        a.virtual["double"] = lambda s: 2 * s.score
        assert a.double == 10
        del a
        b = store.storage("game", "p1")
        assert b.get("double") is None
        with pytest.raises(AttributeError):
            b.double
        assert dict(b.virtual) == {}
        c = store.storage("game", "p1", virtual={"triple": lambda s: 3 * s.score})
        assert c.triple == 15
        del c
        assert store.storage("game", "p1").get("triple") is None
        store.close()

    def test_a_reused_handle_still_checks_for_collisions(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("game", "p1")  # made and dropped, never written to
        store.storage("game").p1 = 1
        with pytest.raises(ValueError, match="p1"):
            store.storage("game", "p1")
        store.close()

    def test_handles_see_a_reload(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("game", "p1").score = 1
        assert store.storage("game", "p1").score == 1
        store.load()
        assert store.storage("game", "p1").score == 1
        store.storage("game", "p1").score = 2
        store.load()
        assert store.storage("game", "p1").score == 2
        store.close()


# --------------------------------------------------------------------------- names


class TestNamespaceNames:
    """Namespace tokens: non-empty str of ``A-Z a-z 0-9 - . _`` (SPEC §2)."""

    @pytest.mark.parametrize(
        "namespace",
        [
            ("game",),
            ("A-Z.a_z-09",),
            ("game", "p.1", "x_y-z"),
            ("-",),
            ("_", ".", "0"),
        ],
    )
    def test_valid_namespace_round_trips(
        self, backend: Backend, namespace: tuple[str, ...]
    ) -> None:
        store = backend.store()
        store.storage(*namespace).x = 1
        store.flush()
        assert [row[1] for row in backend.raw_rows()] == ["/".join(namespace)]
        store = backend.reopen(store)
        assert store.storage(*namespace).x == 1
        assert store.storage(*namespace).__namespace__ == namespace
        store.close()

    @pytest.mark.parametrize(
        "namespace",
        [
            (),
            ("",),
            ("game", ""),
            ("a/b",),
            ("a b",),
            ("tab\t",),
            ("line\n",),
            ("a*b",),
            ("ünï",),
            (1,),
            ("game", None),
            (["game"],),
            (b"game",),
        ],
        ids=repr,
    )
    def test_invalid_namespace_raises_value_error(
        self, backend: Backend, namespace: tuple[Any, ...]
    ) -> None:
        store = backend.store()
        store.storage("game", "p1").x = 1
        with unchanged(store):
            with pytest.raises(ValueError):
                store.storage(*namespace)
        store.close()

    def test_namespace_validator_gets_tuple_and_can_reject(self, backend: Backend) -> None:
        calls: list[Any] = []

        def only_game(namespace: tuple[str, ...]) -> bool:
            calls.append(namespace)
            return namespace[0] == "game"

        store = backend.store(namespace_validator=only_game)
        store.storage("game", "p1").x = 1
        with unchanged(store):
            with pytest.raises(ValueError):
                store.storage("other", "p1")
        assert ("game", "p1") in calls
        assert ("other", "p1") in calls
        assert all(type(call) is tuple for call in calls)
        store.close()

    @pytest.mark.parametrize("answer", [False, None, 0, "", []], ids=repr)
    def test_namespace_validator_falsy_answer_rejects(self, backend: Backend, answer: Any) -> None:
        store = backend.store(namespace_validator=lambda ns: answer)
        with pytest.raises(ValueError):
            store.storage("game", "p1")
        store.close()

    @pytest.mark.parametrize("answer", [True, 1, "yes", [0]], ids=repr)
    def test_namespace_validator_truthy_answer_accepts(self, backend: Backend, answer: Any) -> None:
        store = backend.store(namespace_validator=lambda ns: answer)
        store.storage("game", "p1").x = 1
        assert store.storage("game", "p1").x == 1
        store.close()


class TestFieldNames:
    """Field names are identifiers; reserved and internal names are never stored."""

    @pytest.mark.parametrize("field", ["score", "_group", "x1", "café", "Name_2"])
    def test_identifier_fields_round_trip(self, backend: Backend, field: str) -> None:
        store = backend.store()
        setattr(store.storage("game", "p1"), field, 9)
        store = backend.reopen(store)
        s = store.storage("game", "p1")
        assert getattr(s, field) == 9
        assert s.__fields__() == [field]
        store.close()

    @pytest.mark.parametrize("field", ["1abc", "a-b", "a b", "", "x.y"], ids=repr)
    def test_non_identifier_field_is_refused(self, backend: Backend, field: str) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.x = 1
        with unchanged(store):
            with pytest.raises((AttributeError, ValueError)):
                setattr(s, field, 1)
        store.close()

    @pytest.mark.parametrize("field", ["virtual", "get", "flush", "refresh"])
    def test_reserved_names_cannot_be_fields(self, backend: Backend, field: str) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.score = 1
        with unchanged(store):
            with pytest.raises((AttributeError, ValueError)):
                setattr(s, field, 5)
        assert field not in s.__fields__()
        # the attribute keeps working as Storage's own
        assert s.get("score") == 1
        s.refresh()
        assert isinstance(s.virtual, dict)
        store.close()

    def test_name_reads_last_token_when_not_a_field(self, backend: Backend) -> None:
        store = backend.store()
        assert store.storage("game", "player1").name == "player1"
        assert store.storage("solo").name == "solo"
        store.close()

    def test_name_can_be_a_field(self, backend: Backend) -> None:
        """design.md: the description assigns ``player.name = "Alice"``."""
        store = backend.store()
        s = store.storage("game", "player1")
        s.score = 1
        s.name = "Alice"
        assert s.name == "Alice"
        assert s.__fields__() == ["score", "name"]
        store = backend.reopen(store)
        s = store.storage("game", "player1")
        assert s.name == "Alice"
        assert datas(s, "name") == ["Alice"]
        del s.name
        assert s.name == "player1"
        assert s.__fields__() == ["score"]
        store.close()

    def test_dunder_names_are_never_stored(self, backend: Backend) -> None:
        class Extended(Storage):
            """A subclass has a ``__dict__``, so a dunder assignment can succeed."""

        store = backend.store()
        plain = store.storage("game", "p1")
        extended = Extended("game", "p1", store=store)
        plain.x = 1
        with unchanged(store):
            with contextlib.suppress(AttributeError):
                plain.__custom__ = 5
            with contextlib.suppress(AttributeError):
                extended.__custom__ = 5
        assert plain.__fields__() == ["x"]
        assert "__custom__" not in plain.__history__()
        store.close()


class TestNamespaceFieldTree:
    """A name cannot be both a field of a namespace and a deeper namespace token."""

    def test_storage_below_a_field_raises(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("a").b = 1
        with unchanged(store):
            with pytest.raises(ValueError):
                store.storage("a", "b")
            with pytest.raises(ValueError):
                store.storage("a", "b", "c")
        store.close()

    def test_field_over_a_namespace_raises(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("a", "b", "c").x = 1
        with unchanged(store):
            with pytest.raises(ValueError):
                store.storage("a").b = 2
            with pytest.raises(ValueError):
                store.storage("a", "b").c = 2
        assert store.storage("a").__fields__() == []
        store.close()

    def test_write_through_earlier_storage_below_new_field_raises(self, backend: Backend) -> None:
        """A Storage made before the collision existed cannot create it by writing."""
        store = backend.store()
        deep = store.storage("a", "b")
        store.storage("a").b = 1
        with unchanged(store):
            with pytest.raises(ValueError):
                deep.x = 1
        assert store.storage("a").b == 1
        store.close()

    def test_write_through_earlier_storage_over_new_namespace_raises(
        self, backend: Backend
    ) -> None:
        store = backend.store()
        shallow = store.storage("a")
        store.storage("a", "b").x = 1
        with unchanged(store):
            with pytest.raises(ValueError):
                shallow.b = 1
        assert store.storage("a", "b").x == 1
        store.close()

    def test_sibling_fields_and_namespaces_coexist(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("a").c = 1
        store.storage("a", "b").x = 2
        store = backend.reopen(store)
        assert store.storage("a").c == 1
        assert store.storage("a", "b").x == 2
        store.close()

    def test_collision_rule_holds_after_reopen(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("a").b = 1
        store.storage("c", "d").x = 1
        store = backend.reopen(store)
        with unchanged(store):
            with pytest.raises(ValueError):
                store.storage("a", "b")
            with pytest.raises(ValueError):
                store.storage("c").d = 1
        store.close()


# --------------------------------------------------------------------------- on_change


class TestOnChange:
    """``on_change(namespace, field, value)`` after every appended entry (SPEC §5)."""

    def test_called_for_every_write_with_the_appended_value(self, backend: Backend) -> None:
        calls: list[tuple[tuple[str, ...], str, Value]] = []
        store = backend.store(on_change=lambda ns, f, v: calls.append((ns, f, v)))
        s = store.storage("game", "p1")
        s.score = 1
        s.score = 2
        store.storage("game", "p2").label = "x"
        settled(store)
        assert [(ns, f, v.data) for ns, f, v in calls] == [
            (("game", "p1"), "score", 1),
            (("game", "p1"), "score", 2),
            (("game", "p2"), "label", "x"),
        ]
        assert all(type(ns) is tuple and isinstance(v, Value) for ns, _, v in calls)
        recorded = {v.seq: v for _, _, v in calls}
        in_history = [*history(s, "score"), *history(store.storage("game", "p2"), "label")]
        for value in in_history:
            got = recorded[value.seq]
            assert (got.seq, got.context, got.data, got.unavailable, got.time) == (
                value.seq,
                value.context,
                value.data,
                value.unavailable,
                value.time,
            )
        store.close()

    def test_called_for_tombstone(self, backend: Backend) -> None:
        calls: list[tuple[tuple[str, ...], str, Value]] = []
        store = backend.store(on_change=lambda ns, f, v: calls.append((ns, f, v)))
        s = store.storage("game", "p1")
        s.score = 1
        line = next_line()
        del s.score
        assert len(calls) == 2
        ns, field, value = calls[-1]
        assert (ns, field) == (("game", "p1"), "score")
        assert value.unavailable is True
        assert value.data is None
        assert value.seq == history(s, "score")[-1].seq
        assert value.context == where("test_called_for_tombstone", line)
        store.close()

    def test_called_for_flushed_mutations(self, backend: Backend) -> None:
        calls: list[tuple[tuple[str, ...], str, Value]] = []
        store = backend.store(on_change=lambda ns, f, v: calls.append((ns, f, v)))
        s = store.storage("game", "p1")
        s.items = [1]
        with s:
            s.items.append(2)
            s.flush()
            assert [v.data for _, _, v in calls] == [[1], [1, 2]]
            s.items.append(3)
        assert [v.data for _, _, v in calls] == [[1], [1, 2], [1, 2, 3]]
        assert [v.seq for _, _, v in calls] == [v.seq for v in history(s, "items")]
        store.close()

    def test_called_after_the_entry_is_in_the_log(self, backend: Backend) -> None:
        seen: list[tuple[int, Any]] = []

        def observe(ns: tuple[str, ...], field: str, value: Value) -> None:
            storage = store.storage(*ns)
            if kept_to_the_end(store):
                # (shared mode: reported at commit, where later writes may be committed
                # in the same round: the entry is in the log, maybe not the latest)
                entry = next(v for v in history(storage, field) if v.seq == value.seq)
                seen.append((entry.seq, None if entry.unavailable else entry.data))
                return
            seen.append((history(storage, field)[-1].seq, storage.get(field)))
            assert value.seq == history(storage, field)[-1].seq

        store = backend.store(on_change=observe)
        s = store.storage("game", "p1")
        s.score = 1
        s.score = 2
        del s.score
        settled(store)
        assert [data for _, data in seen] == [1, 2, None]
        assert [seq for seq, _ in seen] == [v.seq for v in history(s, "score")]
        store.close()

    def test_receives_a_copy_of_the_data(self, backend: Backend) -> None:
        calls: list[Value] = []
        store = backend.store(on_change=lambda ns, f, v: calls.append(v))
        s = store.storage("game", "p1")
        s.items = [1, {"k": [2]}]
        with unchanged(store):
            calls[-1].data.append("mutated")
            calls[-1].data[1]["k"].append("mutated")
        with s:
            assert s.items == [1, {"k": [2]}]
        assert datas(s, "items") == [[1, {"k": [2]}]]
        store.close()


class CallbackError(Exception):
    """Raised by a failing on_change callback."""


class TestOnChangeRaising:
    """A callback that raises never splits a write: every entry is stored and every
    callback called, then the first callback exception is re-raised (README "Change
    tracking")."""

    @staticmethod
    def failing(calls: list[tuple[str, Any]], fail_on: set[str]) -> Any:
        def on_change(ns: tuple[str, ...], field: str, value: Value) -> None:
            calls.append((field, value.data))
            if field in fail_on:
                raise CallbackError(f"callback failed for {field}")

        return on_change

    def test_block_exit_is_all_or_nothing_when_callbacks_raise(self, backend: Backend) -> None:
        calls: list[tuple[str, Any]] = []
        store = backend.store(on_change=self.failing(calls, {"a", "b"}))
        s = store.storage("game", "p1")
        with contextlib.suppress(CallbackError):
            s.a = [0]
        with contextlib.suppress(CallbackError):
            s.b = [0]
        s.c = [0]
        with contextlib.suppress(CallbackError):
            settled(store)  # (shared mode: the callbacks run at commit, and raise there)
        calls.clear()
        with pytest.raises(CallbackError, match="failed for a") as raised, s:
            s.a.append(1)
            s.b.append(2)
            s.c.append(3)
        assert calls == [("a", [0, 1]), ("b", [0, 2]), ("c", [0, 3])]
        assert any("'b'" in note for note in raised.value.__notes__)
        assert (datas(s, "a"), datas(s, "b"), datas(s, "c")) == (
            [[0], [0, 1]],
            [[0], [0, 2]],
            [[0], [0, 3]],
        )
        store = backend.reopen(store)
        with store.storage("game", "p1") as s:
            assert (s.a, s.b, s.c) == ([0, 1], [0, 2], [0, 3])
        store.close()

    def test_plain_assignment_and_delete_are_stored_before_the_exception(
        self, backend: Backend
    ) -> None:
        calls: list[tuple[str, Any]] = []
        store = backend.store(on_change=self.failing(calls, {"x"}))
        s = store.storage("game", "p1")
        with pytest.raises(CallbackError):
            s.x = 1
            settled(store)  # (shared mode: the callback runs at commit, and raises there)
        assert s.x == 1
        with pytest.raises(CallbackError):
            del s.x
        assert s.get("x") is None
        assert [v.unavailable for v in history(s, "x")] == [False, True]
        store = backend.reopen(store)
        assert [v.unavailable for v in history(store.storage("game", "p1"), "x")] == [False, True]
        store.close()

    def test_a_full_batch_is_handed_to_the_driver_although_the_callback_raises(
        self, backend: Backend
    ) -> None:
        """In write-through mode an assignment whose callback raises is committed
        before the exception reaches the application."""
        calls: list[tuple[str, Any]] = []
        through = {} if backend.name == "memory" else {"write_through": True}  # Memory: always
        store = Store(backend.driver(**through), on_change=self.failing(calls, {"x"}))
        s = store.storage("game", "p1")
        with pytest.raises(CallbackError):
            s.x = 1
        assert [row[2] for row in backend.raw_rows()] == ["x"]
        with pytest.raises(CallbackError), s:
            s.y = [1]  # written at once, its callback passes
            s.x = 2
        assert [row[2] for row in backend.raw_rows()] == ["x", "y", "x"]
        store.close()


# --------------------------------------------------------------------------- replace semantics


def replace_status(dbns: str, field: str) -> bool:
    return field == "status"


class TestReplacePredicate:
    """Where ``replace_predicate(dbns, field)`` holds, a field keeps only its latest entry."""

    def test_replace_field_keeps_only_latest_entry_in_memory(self, backend: Backend) -> None:
        store = backend.store(replace_predicate=replace_status)
        s = store.storage("game", "p1")
        for value in ("a", "b", "c"):
            s.status = value
            s.score = value
        assert s.status == "c"
        status = history(s, "status")
        assert len(status) == 1
        assert status[0].data == "c"
        score = history(s, "score")
        assert [v.data for v in score] == ["a", "b", "c"]
        assert score[1].seq < status[0].seq < score[2].seq
        assert len(store.cache["game"]["p1"]["status"]) == 1
        store.close()

    def test_replace_field_has_one_row_in_database(self, backend: Backend) -> None:
        store = backend.store(replace_predicate=replace_status)
        s = store.storage("game", "p1")
        s.status = "a"
        store.flush()  # the first row is in the table, not only queued
        s.status = "b"
        s.other = 1
        store.flush()
        s.status = "c"
        s.other = 2
        store.flush()
        rows = backend.raw_rows()
        status_rows = [r for r in rows if (r[1], r[2]) == ("game/p1", "status")]
        other_rows = [r for r in rows if r[2] == "other"]
        if backend.name != "memory":
            assert len(status_rows) == 1
        assert store.codec.decode(status_rows[-1][3]) == "c"
        assert status_rows[-1][0] == history(s, "status")[0].seq
        assert [store.codec.decode(r[3]) for r in other_rows] == [1, 2]
        store.close()

    def test_replace_survives_reopen(self, backend: Backend) -> None:
        store = backend.store(replace_predicate=replace_status)
        s = store.storage("game", "p1")
        s.status = "a"
        s.status = "b"
        s.score = 1
        s.score = 2
        store = backend.reopen(store, replace_predicate=replace_status)
        s = store.storage("game", "p1")
        assert datas(s, "status") == ["b"]
        assert datas(s, "score") == [1, 2]
        s.status = "c"
        store = backend.reopen(store, replace_predicate=replace_status)
        s = store.storage("game", "p1")
        assert datas(s, "status") == ["c"]
        assert datas(s, "score") == [1, 2]
        store.flush()
        status_rows = [r for r in backend.raw_rows() if r[2] == "status"]
        if backend.name != "memory":
            assert len(status_rows) == 1
        store.close()

    def test_replace_predicate_receives_dbns_and_field(self, backend: Backend) -> None:
        calls: list[tuple[Any, Any]] = []

        def predicate(dbns: str, field: str) -> bool:
            calls.append((dbns, field))
            return dbns == "game/p1" and field == "status"

        store = backend.store(replace_predicate=predicate)
        store.storage("game", "p1").status = "a"
        store.storage("game", "p1").status = "b"
        store.storage("game", "p2").status = "a"
        store.storage("game", "p2").status = "b"
        assert ("game/p1", "status") in calls
        assert ("game/p2", "status") in calls
        assert datas(store.storage("game", "p1"), "status") == ["b"]
        assert datas(store.storage("game", "p2"), "status") == ["a", "b"]
        store.close()

    def test_replace_field_tombstone_replaces_too(self, backend: Backend) -> None:
        store = backend.store(replace_predicate=replace_status)
        s = store.storage("game", "p1")
        s.status = "a"
        del s.status
        only = history(s, "status")
        assert len(only) == 1
        assert only[0].unavailable is True
        store = backend.reopen(store, replace_predicate=replace_status)
        s = store.storage("game", "p1")
        assert s.get("status") is None
        s.status = "b"
        assert datas(s, "status") == ["b"]
        store.close()


# --------------------------------------------------------------------------- subclasses


class Account(Storage):
    """A Storage subclass with properties (SPEC §8)."""

    @property
    def euros(self) -> float:
        return self.cents / 100

    @euros.setter
    def euros(self, value: float) -> None:
        self.cents = round(value * 100)

    @property
    def label(self) -> str:
        return f"account {self.name}"


class Player(Storage):
    """A Storage subclass overriding ``__init__`` and ``__repr__`` (SPEC §12)."""

    def __init__(self, player_id: str, *, store: Store) -> None:
        super().__init__("game", player_id, store=store, virtual={"doubled": lambda p: p.score * 2})

    def __repr__(self) -> str:
        return f"<Player {self.__namespace__[-1]}>"


class TestSubclasses:
    def test_property_takes_precedence_for_read(self, backend: Backend) -> None:
        store = backend.store()
        plain = store.storage("bank", "a1")
        plain.cents = 250
        plain.label = "stored label"
        plain.euros = 99  # a plain Storage stores it as a field
        account = Account("bank", "a1", store=store)
        assert account.euros == 2.5
        assert account.label == "account a1"
        assert plain.euros == 99
        store.close()

    def test_property_setter_takes_precedence_for_write(self, backend: Backend) -> None:
        store = backend.store()
        account = Account("bank", "a1", store=store)
        account.euros = 1.5
        assert account.cents == 150
        assert account.euros == 1.5
        assert account.__fields__() == ["cents"]
        assert "euros" not in account.__history__()
        store = backend.reopen(store)
        assert Account("bank", "a1", store=store).euros == 1.5
        store.close()

    def test_read_only_property_cannot_be_assigned(self, backend: Backend) -> None:
        store = backend.store()
        account = Account("bank", "a1", store=store)
        account.cents = 1
        with unchanged(store):
            with pytest.raises(AttributeError):
                account.label = "x"
        store.close()

    def test_subclass_overriding_init_and_repr(self, backend: Backend) -> None:
        store = backend.store()
        player = Player("p1", store=store)
        player.score = 21
        assert repr(player) == "<Player p1>"
        assert player.__namespace__ == ("game", "p1")
        assert player.__store__ is store
        assert player.doubled == 42
        assert player == store.storage("game", "p1")
        assert store.storage("game", "p1").score == 21
        store = backend.reopen(store)
        assert Player("p1", store=store).score == 21
        store.close()


# --------------------------------------------------------------------------- compatibility surface


class TestCompatibilitySurface:
    """store.cache, get_namespace, load, driver/codec, __namespace__/__store__ (SPEC §12)."""

    def test_cache_is_a_tree_of_plain_dicts_ending_in_value_sequences(
        self, backend: Backend
    ) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.score = 1
        s.score = 2
        del s.score
        store.storage("game").round = 3
        for _ in range(2):
            cache = store.cache
            assert type(cache) is dict
            assert type(cache["game"]) is dict
            assert type(cache["game"]["p1"]) is dict
            log = cache["game"]["p1"]["score"]
            assert not isinstance(log, dict | str)
            assert len(log) == 3
            assert all(isinstance(v, Value) for v in log)
            assert [v.data for v in log] == [1, 2, None]
            assert [v.unavailable for v in log] == [False, False, True]
            assert [v.seq for v in log] == sorted(v.seq for v in log)
            assert [v.data for v in cache["game"]["round"]] == [3]
            store = backend.reopen(store)
        store.close()

    def test_cache_sequence_supports_indexing_slicing_and_bisect(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        for i in range(4):
            s.score = i * 10
        log = store.cache["game"]["p1"]["score"]
        seqs = [v.seq for v in log]
        assert log[0].data == 0
        assert log[-1].data == 30
        assert [v.data for v in log[1:3]] == [10, 20]
        assert bisect.bisect_left(log, seqs[2], key=lambda v: v.seq) == 2
        assert bisect.bisect_right(log, seqs[2], key=lambda v: v.seq) == 3
        assert [v.data for v in reversed(log)] == [30, 20, 10, 0]
        store.close()

    def test_get_namespace_returns_the_cache_dict_or_none(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("game", "p1").score = 1
        node = store.get_namespace(("game", "p1"))
        assert node is store.cache["game"]["p1"]
        assert store.get_namespace(("game",)) is store.cache["game"]
        assert store.get_namespace(("nothing",)) is None
        assert store.get_namespace(("game", "p2")) is None
        assert store.get_namespace(("game", "p1", "score")) is None
        store = backend.reopen(store)
        assert store.get_namespace(("game", "p1")) is store.cache["game"]["p1"]
        store.close()

    def test_get_namespace_create_makes_the_dict_writes_use(self, backend: Backend) -> None:
        store = backend.store()
        node = store.get_namespace(("new", "ns"), create=True)
        assert type(node) is dict
        assert store.get_namespace(("new", "ns")) is node
        store.storage("new", "ns").x = 1
        assert [v.data for v in node["x"]] == [1]
        with pytest.raises(ValueError):
            store.get_namespace(("bad/token",), create=True)
        store.close()

    def test_load_refills_the_same_cache_object(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.score = 1
        s.items = [1]
        del s.items
        store.storage("other").x = 2
        cache = store.cache
        settled(store)
        before = cache_snapshot(store)
        cache["junk"] = {}
        del cache["other"]
        store.load()
        assert store.cache is cache
        assert "junk" not in cache
        assert cache_snapshot(store) == before
        # Storage objects made before the reload keep working on the rebuilt tree
        s.score = 3
        assert s.score == 3
        assert [v.data for v in cache["game"]["p1"]["score"]] == [1, 3]
        store.load()
        assert store.cache is cache
        assert [v.data for v in cache["game"]["p1"]["score"]] == [1, 3]
        store.close()

    def test_driver_and_codec_are_the_objects_passed_in(self, backend: Backend) -> None:
        driver = backend.driver()
        codec = Codec()
        store = Store(driver, codec=codec)
        assert store.driver is driver
        assert store.codec is codec
        store.close()
        default = backend.store()
        assert isinstance(default.codec, Codec)
        default.close()

    def test_storage_exposes_namespace_and_store(self, backend: Backend) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        assert s.__namespace__ == ("game", "p1")
        assert type(s.__namespace__) is tuple
        assert s.__store__ is store
        assert isinstance(s, Storage)
        store.close()


# --------------------------------------------------------------------------- lifecycle


class TestStoreLifecycle:
    def test_store_as_context_manager_closes_and_persists(self, backend: Backend) -> None:
        with backend.store() as store:
            assert isinstance(store, Store)
            store.storage("game", "p1").score = 5
        # closing wrote the queued row: a separate driver sees it
        rows = backend.raw_rows()
        assert [(r[1], r[2], store.codec.decode(r[3])) for r in rows] == [("game/p1", "score", 5)]
        reopened = backend.store()
        assert reopened.storage("game", "p1").score == 5
        reopened.close()

    def test_close_is_idempotent(self, backend: Backend) -> None:
        store = backend.store()
        store.storage("game", "p1").score = 5
        store.close()
        store.close()
        assert len(backend.raw_rows()) == 1
        reopened = backend.store()
        assert reopened.storage("game", "p1").score == 5
        reopened.close()
