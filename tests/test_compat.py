"""Drop-in compatibility with applications written for 0.0.8 (issue 9, items 1-5, 13).

Each test pins one behaviour such an application relies on: ``flatten`` returning a
dict, codec errors that are also ``NotImplementedError``, re-registering a class under
an extra type id, the message phrases applications match on, ``__context_fields__``
of ``within`` objects, and error messages that say where a value differs.
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
import random
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
import orjson
import pytest

from appendmuch import Codec, Memory, Store, flatten, within
from appendmuch.errors import (
    DecodeError,
    DumpFormatError,
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

    def test_dump_row_type_grammar(self) -> None:
        with pytest.raises(DumpFormatError, match="dump row 0 is an int, not a map"):
            Memory().restore([msgpack.packb(5)])

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


# --------------------------------------------------------------------------- subclasses

try:
    import numpy
except ImportError:  # numpy is optional: its cases are added only where it imports
    numpy = None


class Colour(str, enum.Enum):  # noqa: UP042 (the mixin form applications use)
    RED = "red"


class Side(enum.StrEnum):
    LEFT = "left"


class Level(enum.IntEnum):
    HIGH = 3


class Perm(enum.IntFlag):
    R = 4
    W = 2


class Name(str):
    pass


class Count(int):
    pass


class Ratio(float):
    pass


class Blob(bytes):
    pass


class Money(Decimal):
    pass


Pair = collections.namedtuple("Pair", "a b")


class Items(list[Any]):
    pass


class Attrs(dict[str, Any]):
    pass


class Tags(set[Any]):
    pass


class Frozen(frozenset[Any]):
    pass


class Buffer(bytearray):
    pass


class Dice(random.Random):
    pass


BERLIN = dt.datetime(2024, 7, 1, 12, 30, tzinfo=ZoneInfo("Europe/Berlin"))

#: (value, the plain value memory and disk hold)
NORMALISED: list[tuple[Any, Any]] = [
    (Colour.RED, "red"),
    (Side.LEFT, "left"),
    (Level.HIGH, 3),
    (Perm.R | Perm.W, 6),
    (Name("n"), "n"),
    (Count(7), 7),
    (Ratio(0.5), 0.5),
    (Blob(b"\x00b"), b"\x00b"),
    (Money("1.25"), Decimal("1.25")),
    (BERLIN, dt.datetime(2024, 7, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    # the repeated hour when clocks go back: each fold keeps its own offset
    (
        dt.datetime(2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),
        dt.datetime(2024, 10, 27, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ),
    (
        dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
        dt.datetime(2024, 10, 27, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ),
    # a wall time skipped when clocks go forward: the offset before the change
    (
        dt.datetime(2024, 3, 31, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),
        dt.datetime(2024, 3, 31, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ),
    ([Colour.RED, Level.HIGH, Ratio(1.5), {"k": Name("v")}], ["red", 3, 1.5, {"k": "v"}]),
    ((Count(1), Name("x")), (1, "x")),
    ({Count(1), Name("x")}, {1, "x"}),
    (frozenset({Level.HIGH}), frozenset({3})),
]
if numpy is not None:
    NORMALISED += [
        (numpy.float64(1.5), 1.5),
        (numpy.float32(0.1), float(numpy.float32(0.1))),
        (numpy.int64(-3), -3),
        (numpy.uint8(200), 200),
        (numpy.bool_(True), True),
        (numpy.str_("s"), "s"),
        (numpy.bytes_(b"b"), b"b"),
        (numpy.complex128(1 + 2j), 1 + 2j),
        ([numpy.float64(2.5), numpy.int32(4), numpy.bool_(False)], [2.5, 4, False]),
        ({"mean": numpy.float64(0.25)}, {"mean": 0.25}),
        ((numpy.int64(1),), (1,)),
        ({numpy.int16(5)}, {5}),
    ]

REFUSED: list[tuple[Any, str]] = [
    (collections.OrderedDict(a=1), "OrderedDict"),
    (collections.defaultdict(list), "defaultdict"),
    (collections.Counter("ab"), "Counter"),
    (Pair(1, 2), "Pair"),
    (Items([1]), "Items"),
    (Attrs(a=1), "Attrs"),
    (Tags({1}), "Tags"),
    (Frozen({1}), "Frozen"),
    (Buffer(b"x"), "Buffer"),
    (Dice(1), "Dice"),
    ([collections.OrderedDict(a=1)], "OrderedDict"),
    ({"k": Pair(1, 2)}, "Pair"),
    ((Items(),), "Items"),
]
if numpy is not None:
    REFUSED += [
        (numpy.array([1, 2]), "ndarray"),
        ([numpy.array([1.0])], "ndarray"),
        (numpy.datetime64("2024-01-01"), "datetime64"),
    ]


def identical(a: Any, b: Any) -> bool:
    """Equal, with exactly the same types at every depth."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(identical, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, set | frozenset):
        return sorted(map(repr, a)) == sorted(map(repr, b))
    if isinstance(a, dt.datetime):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold
    return bool(a == b)


def read(store: Store, field: str) -> Any:
    s = store.storage("n")
    with s:
        return getattr(s, field)


class TestSubclassRule:
    """One rule: memory holds exactly what a reopen decodes (README "Values and custom
    types").  Subclasses of built-in scalars and numpy scalars are kept as the plain
    value; subclasses of built-in containers are refused."""

    @pytest.mark.parametrize(("value", "plain"), NORMALISED, ids=lambda v: type(v).__name__)
    def test_normalised_on_write(self, backend: Backend, value: Any, plain: Any) -> None:
        with backend.store() as store:
            store.storage("n").v = value
            in_memory = read(store, "v")
            assert identical(in_memory, plain), (in_memory, plain)
            assert identical(store.storage("n").__history__()["v"][0].data, plain)
        with backend.store() as store:
            assert identical(read(store, "v"), in_memory)

    @pytest.mark.parametrize(
        ("value", "plain"),
        [(v, p) for v, p in NORMALISED if type(p) is not type(v) and not isinstance(p, dt.date)],
        ids=lambda v: type(v).__name__,
    )
    def test_scalars_normalised_without_the_round_trip_check(self, value: Any, plain: Any) -> None:
        """A subclass of a built-in scalar is kept as the plain value even when the
        check is off (values inside containers are then kept as assigned, SPEC §12)."""
        store = Store(Memory(), codec=Codec(vigilant=False))
        store.storage("n").v = value
        assert identical(read(store, "v"), plain)
        store = Store(Memory(), codec=Codec(vigilant_skip=lambda v: True))
        store.storage("n").v = value
        assert identical(read(store, "v"), plain)

    @pytest.mark.parametrize(("value", "name"), REFUSED, ids=lambda v: type(v).__name__)
    def test_container_subclasses_refused(self, backend: Backend, value: Any, name: str) -> None:
        seen: list[Any] = []
        with backend.store(on_change=lambda *a: seen.append(a)) as store:
            s = store.storage("n")
            s.v = 1
            with pytest.raises(UnsupportedTypeError, match=name) as info:
                s.v = value
            assert "'v'" in str(info.value)
            assert s.v == 1
            assert len(s.__history__()["v"]) == 1
            assert len(seen) == 1
        assert len(backend.raw_rows()) == 1

    def test_mutation_adding_a_container_subclass_is_refused(self, backend: Backend) -> None:
        with backend.store() as store:
            s = store.storage("n")
            s.items = [1]
            with pytest.raises(UnsupportedTypeError, match="OrderedDict"), s:
                s.items.append(collections.OrderedDict(a=1))
            with s:
                assert s.items == [1]

    def test_registered_subclass_codec_wins(self, backend: Backend) -> None:
        def make() -> Codec:
            codec = Codec()
            codec.register(
                collections.OrderedDict,
                150,
                lambda d: orjson.dumps(list(d.items())),
                lambda raw: collections.OrderedDict(orjson.loads(raw)),
                mutable=True,
            )
            codec.register(Level, 30, lambda v: b"%d" % v, lambda raw: Level(int(raw)))
            return codec

        with backend.store(codec=make()) as store:
            s = store.storage("n")
            s.od = collections.OrderedDict([("b", 1), ("a", 2)])
            s.level = Level.HIGH
            assert type(s.level) is Level
        with backend.store(codec=make()) as store:
            assert identical(read(store, "od"), collections.OrderedDict([("b", 1), ("a", 2)]))
            assert read(store, "level") is Level.HIGH


def test_round_trip_message_points_at_the_unequal_member() -> None:
    """A member that only changes type (an enum member) is not the difference."""
    with pytest.raises(RoundTripError) as info:
        Codec().encode([Colour.RED, "x" * 300, {"a": 1, "b": (2,)}])
    message = str(info.value)
    assert "at [2]['b'], (2,) (tuple) would be read back as [2] (list)" in message


def test_str_subclass_dict_keys_are_plain() -> None:
    codec = Codec()
    assert codec.encode({Colour.RED: 1, Name("b"): [{Name("c"): 2}]}) == (
        b'\x81{"b":[{"c":2}],"red":1}'
    )
    with pytest.raises(UnsupportedTypeError, match="Dict key must be str"):
        codec.encode({1: 2})
