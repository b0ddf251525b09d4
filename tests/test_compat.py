"""Drop-in compatibility with applications written for 0.0.8 (issue 9, items 1-5, 13).

Each test pins one behaviour such an application relies on: ``flatten`` returning a
dict, codec errors that are also ``NotImplementedError``, re-registering a class under
an extra type id, the message phrases applications match on, ``__context_fields__``
of ``within`` objects, and error messages that say where a value differs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from appendmuch import Codec, Memory, Store, flatten, within
from appendmuch.errors import (
    DecodeError,
    InvalidNameError,
    ReservedNameError,
    RoundTripError,
    UnsupportedTypeError,
)
from appendmuch.fieldlog import FieldLog
from appendmuch.tree import iter_fields
from backends import Backend

# --------------------------------------------------------------------------- flatten (item 1)


class TestFlatten:
    """``flatten(d, trail=())`` maps path tuples to leaves, as in 0.0.8 (SPEC §1)."""

    def test_plain_nested_dict(self) -> None:
        d = {"a": {"b": 1, "c": [1]}, "d": "x"}
        assert flatten(d) == {("a", "b"): 1, ("a", "c"): [1], ("d",): "x"}

    def test_trail_prefixes_every_path(self) -> None:
        assert flatten({"k": "v"}, ("p",)) == {("p", "k"): "v"}
        assert flatten({"k": "v"}, trail=("p", "q")) == {("p", "q", "k"): "v"}

    def test_empty(self) -> None:
        assert flatten({}) == {}
        assert flatten({"a": {}}) == {}

    def test_returns_a_dict_that_merges(self) -> None:
        matches: dict[tuple[str, ...], Any] = {}
        matches |= flatten({"x": 1}, ("n1",))
        matches |= flatten({"y": {"z": 2}}, ("n2",))
        assert matches == {("n1", "x"): 1, ("n2", "y", "z"): 2}

    def test_leaves_of_the_cache_are_field_logs(self, backend: Backend) -> None:
        with backend.store() as store:
            self._check_cache(store)

    @staticmethod
    def _check_cache(store: Store) -> None:
        store.storage("game", "p1").score = 1
        store.storage("game", "p1").score = 2
        store.storage("game").round = 3
        flat = flatten(store.cache)
        assert set(flat) == {("game", "p1", "score"), ("game", "round")}
        assert [v.data for v in flat["game", "p1", "score"]] == [1, 2]
        assert isinstance(flat["game", "round"], FieldLog)
        node = store.get_namespace(("game", "p1"))
        assert node is not None
        assert list(flatten(node, ("game", "p1"))) == [("game", "p1", "score")]

    def test_field_walker_keeps_the_old_shape(self) -> None:
        store = Store(Memory())
        store.storage("game", "p1").score = 1
        assert [(ns, f, len(log)) for ns, f, log in iter_fields(store.cache)] == [
            (("game", "p1"), "score", 1)
        ]


# --------------------------------------------------------------------------- codec (items 2, 3)


class TestCodecCompat:
    def test_unsupported_type_is_not_implemented(self) -> None:
        with pytest.raises(NotImplementedError) as info:
            Codec().encode(object())
        assert isinstance(info.value, UnsupportedTypeError)
        assert isinstance(info.value, TypeError)

    def test_unsupported_type_on_assignment_is_not_implemented(self) -> None:
        s = Store(Memory()).storage("n")
        with pytest.raises(NotImplementedError):
            s.x = object()
        assert s.get("x") is None

    def test_unknown_type_id_is_not_implemented(self) -> None:
        with pytest.raises(NotImplementedError) as info:
            Codec().decode(b"\xf0null")
        assert isinstance(info.value, DecodeError)
        assert isinstance(info.value, ValueError)
        assert "240" in str(info.value)

    def test_malformed_document_is_not_not_implemented(self) -> None:
        with pytest.raises(DecodeError) as info:
            Codec().decode(b"\x00[]")
        assert not isinstance(info.value, NotImplementedError)

    def test_register_builtin_class_under_extra_id(self) -> None:
        codec = Codec()
        codec.register(
            Decimal, 40, lambda d: f'"{d}"'.encode(), lambda r: Decimal(r[1:-1].decode())
        )
        # encoding keeps the existing id; the new id decodes too
        assert codec.encode(Decimal("1.5"))[0] == 8
        assert codec.decode(b'\x28"2.5"') == Decimal("2.5")
        assert codec.type_map()[Decimal] == 8

    def test_register_custom_class_twice(self) -> None:
        class Point(tuple[int, int]):
            pass

        codec = Codec()
        codec.register(Point, 50, lambda p: b"[%d,%d]" % p, lambda r: Point(orjson.loads(r)))
        codec.register(Point, 51, lambda p: b"", lambda r: Point((int(r), 0)))
        assert codec.encode(Point((1, 2))) == b"\x32[1,2]"
        assert codec.decode(b"\x337") == Point((7, 0))

    def test_extra_id_is_used_when_loading(self, backend: Backend) -> None:
        with backend.store() as store:
            store.storage("n").d = Decimal("3")
        codec = Codec()
        codec.register(
            Decimal, 41, lambda d: f'"{d}"'.encode(), lambda r: Decimal(r[1:-1].decode())
        )
        with Store(backend.driver(), codec=codec) as store:
            s = store.storage("n")
            assert s.d == Decimal("3")
            s.e = Decimal("4")
        assert [row[3][0] for row in backend.raw_rows()] == [8, 8]

    @pytest.mark.parametrize("taken", [0, 8, 128, 133])
    def test_other_class_under_taken_id(self, taken: int) -> None:
        class Other:
            pass

        codec = Codec()
        with pytest.raises(ValueError, match=f"Type ID {taken} already registered"):
            codec.register(Other, taken, lambda v: b"null", lambda r: Other())
        assert Other not in codec.type_map()


# --------------------------------------------------------------------------- messages (item 4)


class TestMessages:
    @pytest.mark.parametrize(
        "namespace", [(), ("",), ("a b",), ("a/b",), (1,), ("ok", "")], ids=repr
    )
    def test_invalid_namespace(self, namespace: tuple[Any, ...]) -> None:
        store = Store(Memory())
        with pytest.raises(InvalidNameError, match="invalid namespace"):
            store.storage(*namespace)

    def test_namespace_validation(self) -> None:
        store = Store(Memory(), namespace_validator=lambda ns: ns[0] == "game")
        store.storage("game", "p1")
        with pytest.raises(ValueError, match="namespace validation"):
            store.storage("other", "p1")
        assert store.cache == {}

    def test_cannot_assign_to_virtual(self, backend: Backend) -> None:
        with backend.store() as store:
            s = store.storage("g", virtual={"group": lambda p: 1})
            with pytest.raises(AttributeError, match="Cannot assign to virtual"):
                s.group = 2
            assert s.__history__() == {}

    def test_reserved_name_grammar(self) -> None:
        s = Store(Memory()).storage("g")
        with pytest.raises(ReservedNameError) as info:
            s.get = 1
        assert "is a reserved" not in str(info.value)
        assert "'get'" in str(info.value)

    def test_namespace_token_type_grammar(self) -> None:
        with pytest.raises(InvalidNameError) as info:
            Store(Memory()).storage(1)  # type: ignore[arg-type]
        assert "is an int" in str(info.value)


# --------------------------------------------------------------------------- within (item 5)


def test_within_exposes_context_fields() -> None:
    s = Store(Memory()).storage("g", "p")
    s.round = 1
    w = within(s, round=1)
    assert w.__context_fields__ == {"round": 1}
    assert within.strict(s, round=1, stage=2).__context_fields__ == {"round": 1, "stage": 2}
    for _, ctx in within.along(s, "round"):
        assert ctx.__context_fields__ == {"round": 1}
    assert within(s).__context_fields__ == {}


# --------------------------------------------------------------------------- RoundTripError (13)


class TestRoundTripMessages:
    def test_block_exit_names_namespace_field_and_difference(self, backend: Backend) -> None:
        with backend.store() as store:
            s = store.storage("game", "p1")
            s.log = [{"k": "x" * 200}]
            with pytest.raises(RoundTripError) as info, s:
                s.log.append({"k": "y" * 300, "t": (1, 2)})
            message = str(info.value)
            assert "'game', 'p1'" in message
            assert "'log'" in message
            assert "[1]['t']" in message
            assert "(1, 2)" in message
            assert "[1, 2]" in message
            with s:
                assert s.log == [{"k": "x" * 200}]

    def test_difference_after_a_long_prefix_is_shown(self) -> None:
        value = ["a" * 500, (1,)]
        with pytest.raises(RoundTripError) as info:
            Codec().encode(value)
        assert "[1]" in str(info.value)
        assert "(1,)" in str(info.value)

    def test_assignment_names_namespace_and_field(self) -> None:
        s = Store(Memory()).storage("game", "p1")
        with pytest.raises(RoundTripError) as info:
            s.pairs = [(1, 2)]
        assert "'pairs'" in str(info.value)
        assert "'game', 'p1'" in str(info.value)
