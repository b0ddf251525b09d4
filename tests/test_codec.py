"""The typed codec (SPEC section 9, and the codec parts of section 12).

A stored value is one type-id byte followed by an orjson document.  Expected bytes
come from the hand-written table in ``wire_fixtures.py``; nothing here compares the
codec with itself except where determinism is the point.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from appendmuch import Codec, Memory, Store
from backends import Backend
from snapshots import state
from wire_fixtures import BUILTIN_IDS, FIXTURE_IDS, FIXTURES, UUID_COUNTING, Fixture, same_value

# ---------------------------------------------------------------- custom types used below


class Point:
    """An immutable value type that orjson cannot serialise by itself."""

    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))

    def __repr__(self) -> str:
        return f"Point({self.x}, {self.y})"


def encode_point(p: Point) -> bytes:
    return b"[%d,%d]" % (p.x, p.y)


def decode_point(raw: bytes) -> Point:
    x, y = json.loads(raw)
    return Point(x, y)


class Bag:
    """A mutable value type: its ``items`` list is changed in place."""

    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return type(other) is Bag and self.items == other.items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Bag({self.items!r})"


def encode_bag(b: Bag) -> bytes:
    return json.dumps(b.items, separators=(",", ":")).encode()


def decode_bag(raw: bytes) -> Bag:
    return Bag(json.loads(raw))


class Tag(str):
    """A str subclass registered with its own type id."""


class Shout(str):
    """A str subclass that is *not* registered."""


def encode_tag(t: Tag) -> bytes:
    return json.dumps(str(t)).encode()


def decode_tag(raw: bytes) -> Tag:
    return Tag(json.loads(raw))


def is_point_list(value: Any) -> bool:
    return bool(value) and all(type(m) is Point for m in value)


def encode_point_list(points: list[Point]) -> bytes:
    return b"[" + b",".join(encode_point(p) for p in points) + b"]"


def decode_point_list(raw: bytes) -> list[Point]:
    return [Point(x, y) for x, y in json.loads(raw)]


POINT_ID, TAG_ID, POINT_LIST_ID, BAG_ID = 20, 21, 132, 140


def full_codec(**kwargs: Any) -> Codec:
    """A codec with every custom registration used in this file."""
    codec = Codec(**kwargs)
    codec.register(Point, POINT_ID, encode_point, decode_point)
    codec.register(Tag, TAG_ID, encode_tag, decode_tag)
    codec.register(
        list,
        POINT_LIST_ID,
        encode_point_list,
        decode_point_list,
        mutable=True,
        predicate=is_point_list,
    )
    codec.register(Bag, BAG_ID, encode_bag, decode_bag, mutable=True)
    return codec


def stored_values(backend: Backend, field: str) -> list[bytes | None]:
    """The raw value column of every stored row of ``field``, in seq order."""
    return [row[3] for row in backend.raw_rows() if row[2] == field]


# ---------------------------------------------------------------- built-in wire format


class TestBuiltinWireFormat:
    """Every built-in type encodes to the exact hand-written bytes and decodes back
    to an equal value of the exact same type."""

    @pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
    def test_encode_gives_exact_bytes(self, fixture: Fixture) -> None:
        assert Codec().encode(fixture.fresh()) == fixture.expected

    @pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
    def test_decode_gives_equal_value_of_exact_type(self, fixture: Fixture) -> None:
        decoded = Codec().decode(fixture.expected)
        assert type(decoded) is type(fixture.value)
        assert same_value(decoded, fixture.value), (decoded, fixture.value)

    @pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
    def test_encode_raw_is_id_and_json(self, fixture: Fixture) -> None:
        type_id, raw = Codec().encode_raw(fixture.fresh())
        assert type(type_id) is int
        assert (type_id, raw) == (fixture.expected[0], fixture.expected[1:])

    def test_fixtures_cover_every_builtin_type_with_its_id(self) -> None:
        """Sanity of the table itself: each built-in type appears, under SPEC's id."""
        assert {type(f.value) for f in FIXTURES} == set(BUILTIN_IDS)
        for f in FIXTURES:
            assert f.type_id == BUILTIN_IDS[type(f.value)], f.label

    def test_decode_accepts_bytearray_and_memoryview(self) -> None:
        """Database drivers hand back blobs as bytes, bytearray or memoryview."""
        codec = Codec()
        assert codec.decode(bytearray(b'\x81{"a":2,"b":1}')) == {"a": 2, "b": 1}
        assert codec.decode(memoryview(b"\x0042")) == 42

    def test_decoded_values_are_fresh_objects(self) -> None:
        """Two decodes of one mutable document never share an object."""
        codec = Codec()
        first = codec.decode(b'\x81{"a":[1]}')
        second = codec.decode(b'\x81{"a":[1]}')
        first["a"].append(2)
        assert second == {"a": [1]}


# ---------------------------------------------------------------- determinism


class TestDeterminism:
    """Equal values always encode to the same bytes; decoding accepts any order."""

    def test_dict_insertion_order_does_not_matter(self) -> None:
        codec = Codec()
        one = {"b": {"y": 1, "x": [{"q": 1, "p": 2}]}, "a": 0, "c": None}
        two = {"c": None, "a": 0, "b": {"x": [{"p": 2, "q": 1}], "y": 1}}
        expected = b'\x81{"a":0,"b":{"x":[{"p":2,"q":1}],"y":1},"c":null}'
        assert codec.encode(one) == expected
        assert codec.encode(two) == expected

    def test_dict_keys_sorted_inside_list_and_tuple(self) -> None:
        codec = Codec()
        assert codec.encode([{"b": 1, "a": 2}]) == b'\x80[{"a":2,"b":1}]'
        assert codec.encode(({"b": 1, "a": 2},)) == b'\x03[{"a":2,"b":1}]'

    def test_set_members_ordered_by_their_encoding(self) -> None:
        """{"b", 1, "a"} -> ["a","b",1] because b'"a"' < b'"b"' < b'1'."""
        codec = Codec()
        for members in (["b", 1, "a"], ["a", "b", 1], [1, "a", "b"]):
            assert codec.encode(set(members)) == b'\x83["a","b",1]'
            assert codec.encode(frozenset(members)) == b'\x09["a","b",1]'

    def test_large_sets_built_in_any_order_encode_identically(self) -> None:
        codec = Codec()
        forward = set(range(300))
        backward = set(range(299, -1, -1))
        removed = set(range(1000))
        for n in range(300, 1000):
            removed.discard(n)  # same members, different internal table
        encodings = {codec.encode(s) for s in (forward, backward, removed)}
        assert len(encodings) == 1
        # ordered as byte strings: 0, 1, 10, 100, 101, ...
        members = sorted(str(n).encode() for n in range(300))
        assert encodings == {b"\x83[" + b",".join(members) + b"]"}

    def test_set_encoding_independent_of_hash_seed(self) -> None:
        """String hashing differs between processes; the encoding must not."""
        program = (
            "import sys\n"
            "from appendmuch import Codec\n"
            "words = ['pear', 'apple', 'fig', 'banana', 'kiwi', 'cherry', 'date']\n"
            "sys.stdout.buffer.write(Codec().encode(set(words)))\n"
        )
        outputs = set()
        for seed in ("1", "2", "3"):
            env = {**os.environ, "PYTHONHASHSEED": seed}
            result = subprocess.run(
                [sys.executable, "-c", program], env=env, capture_output=True, check=True
            )
            outputs.add(result.stdout)
        assert outputs == {b'\x83["apple","banana","cherry","date","fig","kiwi","pear"]'}

    def test_equal_values_encode_identically(self) -> None:
        codec = Codec()
        pairs: list[tuple[Any, Any]] = [
            ({1, 2, 3}, {3, 2, 1}),
            (frozenset("abc"), frozenset("cba")),
            ([{"x": 1, "y": 2}], [{"y": 2, "x": 1}]),
            (Decimal("1.50"), Decimal("1.50")),
            (bytearray(b"ab"), bytearray(b"ab")),
        ]
        for one, two in pairs:
            assert codec.encode(one) == codec.encode(two)

    @pytest.mark.parametrize(
        ("document", "expected"),
        [
            (b'\x81{"b":1,"a":2}', {"a": 2, "b": 1}),
            (b'\x81{"z":{"b":1,"a":2},"a":[]}', {"a": [], "z": {"a": 2, "b": 1}}),
            (b"\x83[3,1,2]", {1, 2, 3}),
            (b'\x83[1,"b","a"]', {"a", "b", 1}),
            (b"\x09[3,1,2]", frozenset({1, 2, 3})),
            (b"\x80[3,1,2]", [3, 1, 2]),
        ],
    )
    def test_decode_accepts_unsorted_documents(self, document: bytes, expected: Any) -> None:
        """Older writers did not sort; their documents still decode, and re-encoding
        gives the canonical (sorted) form."""
        codec = Codec()
        decoded = codec.decode(document)
        assert type(decoded) is type(expected)
        assert decoded == expected
        assert codec.decode(codec.encode(decoded)) == expected

    def test_unsorted_document_reencodes_canonically(self) -> None:
        codec = Codec()
        assert codec.encode(codec.decode(b'\x81{"b":1,"a":2}')) == b'\x81{"a":2,"b":1}'
        assert codec.encode(codec.decode(b"\x83[3,1,2]")) == b"\x83[1,2,3]"


# ---------------------------------------------------------------- vigilant mode


def _storage_object() -> Any:
    return Store(Memory()).storage("elsewhere")


#: (label, value factory, type name expected in the message)
UNENCODABLE: list[tuple[str, Callable[[], Any], str]] = [
    ("inf", lambda: math.inf, "float"),
    ("minus_inf", lambda: -math.inf, "float"),
    ("nan", lambda: math.nan, "float"),
    ("inf_in_list", lambda: [1.0, math.inf], "list"),
    ("tuple_in_list", lambda: [(1, 2)], "list"),
    ("tuple_in_tuple", lambda: ((1, 2),), "tuple"),
    ("non_str_keys", lambda: {1: "a"}, "dict"),
    ("uuid_in_dict", lambda: {"id": UUID_COUNTING}, "dict"),
    ("datetime_in_list", lambda: [dt.datetime(2024, 1, 1)], "list"),
    ("storage_object", _storage_object, "Storage"),
    ("storage_in_dict", lambda: {"s": _storage_object()}, "dict"),
    ("int_above_64_bits", lambda: 2**64, "int"),
    ("int_below_64_bits", lambda: -(2**63) - 1, "int"),
    ("lone_surrogate", lambda: "\ud800", "str"),
    ("unregistered_type", lambda: Point(1, 2), "Point"),
]


class TestVigilant:
    """By default a value that cannot be encoded, or would not decode to an equal
    value, raises ValueError or TypeError naming its type."""

    def test_vigilant_is_on_by_default(self) -> None:
        assert Codec().vigilant is True
        assert Codec().vigilant_skip is None

    @pytest.mark.parametrize(
        ("make", "type_name"),
        [(make, name) for _, make, name in UNENCODABLE],
        ids=[label for label, _, _ in UNENCODABLE],
    )
    def test_refused(self, make: Callable[[], Any], type_name: str) -> None:
        codec = Codec()
        value = make()
        with pytest.raises((ValueError, TypeError)) as info:
            codec.encode(value)
        assert type_name in str(info.value)
        with pytest.raises((ValueError, TypeError)):
            codec.encode_raw(value)

    def test_vigilant_false_lets_lossy_values_through(self) -> None:
        codec = Codec(vigilant=False)
        assert codec.encode({"id": UUID_COUNTING}) == (
            b'\x81{"id":"00010203-0405-0607-0809-0a0b0c0d0e0f"}'
        )
        assert codec.encode([(1, 2)]) == b"\x80[[1,2]]"

    def test_vigilant_can_be_switched_off_on_an_instance(self) -> None:
        codec = Codec()
        with pytest.raises(ValueError, match="dict"):
            codec.encode({"id": UUID_COUNTING})
        codec.vigilant = False
        assert codec.encode({"id": UUID_COUNTING}) == (
            b'\x81{"id":"00010203-0405-0607-0809-0a0b0c0d0e0f"}'
        )
        codec.vigilant = True
        with pytest.raises(ValueError, match="dict"):
            codec.encode({"id": UUID_COUNTING})

    def test_vigilant_skip_predicate_skips_only_matching_values(self) -> None:
        seen: list[Any] = []

        def skip(value: Any) -> bool:
            seen.append(value)
            return isinstance(value, dict)

        codec = Codec(vigilant_skip=skip)
        assert codec.vigilant is True
        assert codec.encode({"id": UUID_COUNTING}) == (
            b'\x81{"id":"00010203-0405-0607-0809-0a0b0c0d0e0f"}'
        )
        assert {"id": UUID_COUNTING} in seen
        with pytest.raises(ValueError, match="list"):
            codec.encode([(1, 2)])  # predicate false: still checked

    def test_vigilant_skip_set_as_attribute(self) -> None:
        codec = Codec()
        codec.vigilant_skip = lambda value: isinstance(value, dict)
        assert codec.encode({"id": uuid.UUID(int=0)}) == (
            b'\x81{"id":"00000000-0000-0000-0000-000000000000"}'
        )

    @pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
    def test_non_finite_floats_refused_even_when_not_vigilant(self, value: float) -> None:
        """design.md: JSON would turn them into null, so the encoder refuses them."""
        with pytest.raises((ValueError, TypeError), match="float"):
            Codec(vigilant=False).encode(value)


class TestVigilantThroughStore:
    """A refused value changes nothing in the store; a value let through by a
    non-vigilant codec keeps its assigned form in the cache until reopen (SPEC 12)."""

    @pytest.mark.parametrize(
        "make",
        [make for _, make, _ in UNENCODABLE],
        ids=[label for label, _, _ in UNENCODABLE],
    )
    def test_refused_write_changes_nothing(self, backend: Backend, make: Callable[[], Any]) -> None:
        store = backend.store()
        s = store.storage("game", "p1")
        s.x = 1
        before = state(store)
        with pytest.raises((ValueError, TypeError)):
            s.x = make()
        with pytest.raises((ValueError, TypeError)):
            s.y = make()
        assert state(store) == before
        assert s.x == 1
        assert s.__fields__() == ["x"]
        store = backend.reopen(store)
        assert store.storage("game", "p1").x == 1
        assert [row[0] for row in backend.raw_rows()] == [1]
        store.close()

    @pytest.mark.parametrize(
        "make_codec",
        [
            lambda: Codec(vigilant=False),
            lambda: Codec(vigilant_skip=lambda v: isinstance(v, dict)),
        ],
        ids=["vigilant_false", "vigilant_skip"],
    )
    def test_uuid_in_dict_stays_uuid_until_reopen(
        self, backend: Backend, make_codec: Callable[[], Codec]
    ) -> None:
        store = backend.store(codec=make_codec())
        s = store.storage("game", "p1")
        s.d = {"id": UUID_COUNTING, "n": 1}
        with s:
            assert type(s.d["id"]) is uuid.UUID
            assert s.d == {"id": UUID_COUNTING, "n": 1}
        (entry,) = s.__history__()["d"]
        assert type(entry.data["id"]) is uuid.UUID
        store.flush()
        assert stored_values(backend, "d") == [
            b'\x81{"id":"00010203-0405-0607-0809-0a0b0c0d0e0f","n":1}'
        ]

        store = backend.reopen(store, codec=make_codec())
        s = store.storage("game", "p1")
        with s:
            assert s.d == {"id": "00010203-0405-0607-0809-0a0b0c0d0e0f", "n": 1}
            assert type(s.d["id"]) is str
        store.close()

    @pytest.mark.parametrize(
        "make_codec",
        [
            lambda: Codec(vigilant=False),
            lambda: Codec(vigilant_skip=lambda v: isinstance(v, list)),
        ],
        ids=["vigilant_false", "vigilant_skip"],
    )
    def test_every_version_reads_back_as_assigned_until_reopen(
        self, backend: Backend, make_codec: Callable[[], Codec]
    ) -> None:
        """Older versions of a value the check skipped keep their types within the
        session, like the latest one (0.0.8 behaviour); after a reopen all of them
        read back as stored."""
        store = backend.store(codec=make_codec())
        s = store.storage("model", "m1")
        ids = [uuid.UUID(int=i) for i in range(3)]
        for i, ident in enumerate(ids):
            s.entry = [ident, {"a": i}]
        with s:
            assert [type(v.data[0]) for v in s.__history__()["entry"]] == [uuid.UUID] * 3
            assert [v.data for v in s.__history__()["entry"]] == [
                [ident, {"a": i}] for i, ident in enumerate(ids)
            ]
        store = backend.reopen(store, codec=make_codec())
        s = store.storage("model", "m1")
        assert [v.data for v in s.__history__()["entry"]] == [
            [str(ident), {"a": i}] for i, ident in enumerate(ids)
        ]
        store.close()

    def test_default_store_refuses_uuid_in_dict(self, backend: Backend) -> None:
        store = backend.store()
        assert store.codec.vigilant is True
        s = store.storage("game", "p1")
        with pytest.raises(ValueError, match="dict"):
            s.d = {"id": UUID_COUNTING}
        assert s.__fields__() == []
        assert backend.raw_rows() == []
        store.close()


# ---------------------------------------------------------------- registration


class TestRegisterWireFormat:
    """Codec.register(cls, type_id, encoder, decoder, *, mutable, predicate)."""

    def test_custom_immutable_type_bytes(self) -> None:
        codec = full_codec()
        assert codec.encode(Point(1, -2)) == b"\x14[1,-2]"
        assert codec.encode_raw(Point(1, -2)) == (POINT_ID, b"[1,-2]")
        decoded = codec.decode(b"\x14[1,-2]")
        assert type(decoded) is Point
        assert decoded == Point(1, -2)

    def test_registered_str_subclass_gets_its_own_id(self) -> None:
        """Exact type wins over isinstance."""
        codec = full_codec()
        assert codec.encode(Tag("x")) == b'\x15"x"'
        assert codec.encode("x") == b'\x02"x"'
        decoded = codec.decode(b'\x15"x"')
        assert type(decoded) is Tag
        assert decoded == "x"
        assert type(codec.decode(b'\x02"x"')) is str

    def test_unregistered_str_subclass_encodes_as_str(self) -> None:
        codec = full_codec()
        assert codec.encode(Shout("x")) == b'\x02"x"'
        assert Codec().encode(Shout("h\u00e9")) == b'\x02"h\xc3\xa9"'
        assert type(codec.decode(codec.encode(Shout("x")))) is str

    def test_registered_subclass_of_registered_class_uses_nearest(self) -> None:
        """An unregistered subclass of Tag is encoded by Tag's registration, not str's."""

        class SubTag(Tag):
            pass

        assert full_codec().encode(SubTag("y")) == b'\x15"y"'

    def test_predicate_registration_only_for_matching_values(self) -> None:
        codec = full_codec()
        assert codec.encode([Point(1, 2), Point(3, 4)]) == b"\x84[[1,2],[3,4]]"
        assert codec.encode_raw([Point(1, 2)]) == (POINT_LIST_ID, b"[[1,2]]")
        assert codec.encode([1, 2]) == b"\x80[1,2]"
        assert codec.encode([]) == b"\x80[]"
        assert codec.encode([[1, 2], [3, 4]]) == b"\x80[[1,2],[3,4]]"
        decoded = codec.decode(b"\x84[[1,2],[3,4]]")
        assert type(decoded) is list
        assert decoded == [Point(1, 2), Point(3, 4)]
        assert codec.decode(b"\x80[[1,2]]") == [[1, 2]]

    def test_predicate_false_value_falls_back_and_can_be_refused(self) -> None:
        """A list mixing Points and ints fails the predicate; as a plain list it
        cannot be encoded, so it is refused naming its type."""
        with pytest.raises((ValueError, TypeError), match="list"):
            full_codec().encode([Point(1, 2), 5])

    def test_custom_mutable_type_bytes(self) -> None:
        codec = full_codec()
        assert codec.encode(Bag([1, 2])) == b"\x8c[1,2]"
        assert codec.decode(b"\x8c[1,2]") == Bag([1, 2])

    def test_duplicate_type_id_raises(self) -> None:
        codec = Codec()
        with pytest.raises(ValueError):
            codec.register(Point, 0, encode_point, decode_point)  # int's id
        with pytest.raises(ValueError):
            codec.register(Point, 133, encode_point, decode_point)  # Random's id
        codec.register(Point, POINT_ID, encode_point, decode_point)
        with pytest.raises(ValueError):
            codec.register(Tag, POINT_ID, encode_tag, decode_tag)
        with pytest.raises(ValueError):
            codec.register(
                list, POINT_ID, encode_point_list, decode_point_list, predicate=is_point_list
            )
        # the failed registrations changed nothing
        assert codec.encode(Point(1, 2)) == b"\x14[1,2]"
        assert codec.encode(Tag("t")) == b'\x02"t"'
        with pytest.raises(TypeError, match="list"):
            codec.encode([Point(1, 2)])  # the predicate registration did not happen

    def test_reregistering_a_class_adds_a_decoder(self) -> None:
        """As in 0.0.8: a registered class (built-in or not) registered again under a
        free id keeps encoding with its first id; the new id decodes too."""
        codec = Codec()
        codec.register(Point, POINT_ID, encode_point, decode_point)
        codec.register(Point, 22, encode_point, decode_point)
        codec.register(list, 150, encode_point_list, decode_point_list, mutable=True)
        codec.register(str, 151, encode_tag, decode_tag)
        assert codec.encode(Point(5, 6)) == b"\x14[5,6]"
        assert codec.encode([5]) == b"\x80[5]"
        assert codec.encode("t") == b'\x02"t"'
        assert codec.decode(b"\x16[5,6]") == Point(5, 6)
        assert codec.decode(b"\x96[[1,2]]") == [Point(1, 2)]
        assert codec.decode(b'\x97"t"') == Tag("t")
        assert codec.type_map()[Point] == POINT_ID
        with pytest.raises(ValueError, match="Type ID 22 already registered"):
            codec.register(Tag, 22, encode_tag, decode_tag)

    def test_type_map(self) -> None:
        assert Codec().type_map() == BUILTIN_IDS
        codec = full_codec()
        mapping = codec.type_map()
        assert mapping[Point] == POINT_ID
        assert mapping[Tag] == TAG_ID
        assert mapping[Bag] == BAG_ID
        assert mapping[list] == 128  # a predicate registration does not replace it
        assert mapping[str] == 2

    def test_immutable_and_mutable_types(self) -> None:
        codec = Codec()
        immutable = set(codec.immutable_types())
        mutable = set(codec.mutable_types())
        assert immutable == {
            bool,
            int,
            float,
            str,
            bytes,
            complex,
            type(None),
            Decimal,
            dt.date,
            dt.time,
            dt.datetime,
            uuid.UUID,
            tuple,
            frozenset,
        }
        assert mutable == {list, dict, bytearray, set, random.Random}
        codec = full_codec()
        assert Point in codec.immutable_types()
        assert Tag in codec.immutable_types()
        assert Bag in codec.mutable_types()
        assert Point not in codec.mutable_types()
        assert Bag not in codec.immutable_types()

    def test_ids_from_128_are_the_mutable_builtins(self) -> None:
        codec = Codec()
        for cls, type_id in BUILTIN_IDS.items():
            assert (cls in codec.mutable_types()) == (type_id >= 128), cls


class TestRegisteredTypesThroughStore:
    """Registered types round-trip through a Store on every backend, across reopen
    (the new Store is given a codec with the same registrations)."""

    def test_custom_immutable_type_round_trips(self, backend: Backend) -> None:
        store = backend.store(codec=full_codec())
        s = store.storage("shapes", "a")
        s.p = Point(3, 4)
        s.t = Tag("label")
        s.plain = Shout("loud")
        assert s.p == Point(3, 4)  # immutable: readable outside `with`
        assert type(s.t) is Tag
        store.flush()
        assert stored_values(backend, "p") == [b"\x14[3,4]"]
        assert stored_values(backend, "t") == [b'\x15"label"']
        assert stored_values(backend, "plain") == [b'\x02"loud"']

        store = backend.reopen(store, codec=full_codec())
        s = store.storage("shapes", "a")
        assert type(s.p) is Point
        assert s.p == Point(3, 4)
        assert type(s.t) is Tag
        assert s.t == "label"
        assert type(s.plain) is str
        assert s.plain == "loud"
        store.close()

    def test_reopen_without_registration_fails_to_decode(self, backend: Backend) -> None:
        store = backend.store(codec=full_codec())
        store.storage("shapes", "a").p = Point(3, 4)
        store.close()
        with pytest.raises(ValueError):
            backend.store()

    def test_custom_mutable_type_needs_with_and_tracks_changes(self, backend: Backend) -> None:
        store = backend.store(codec=full_codec())
        s = store.storage("inv", "p1")
        s.bag = Bag([1])  # writing a mutable value is allowed anywhere
        with pytest.raises(TypeError, match="context manager"):
            s.bag
        with s:
            assert s.bag == Bag([1])
            s.bag.items.append(2)
        with s:
            assert s.bag == Bag([1, 2])  # an unchanged block appends nothing
        history = s.__history__()["bag"]
        assert [v.data for v in history] == [Bag([1]), Bag([1, 2])]
        store.flush()
        assert stored_values(backend, "bag") == [b"\x8c[1]", b"\x8c[1,2]"]

        store = backend.reopen(store, codec=full_codec())
        s = store.storage("inv", "p1")
        with pytest.raises(TypeError, match="context manager"):
            s.bag
        with s:
            assert type(s.bag) is Bag
            assert s.bag == Bag([1, 2])
            s.bag.items.append(3)
        store = backend.reopen(store, codec=full_codec())
        with store.storage("inv", "p1") as s:
            assert s.bag == Bag([1, 2, 3])
        store.close()

    def test_predicate_list_round_trips_and_other_lists_keep_128(self, backend: Backend) -> None:
        store = backend.store(codec=full_codec())
        s = store.storage("shapes", "b")
        s.points = [Point(1, 2), Point(3, 4)]
        s.numbers = [1, 2]
        with pytest.raises(TypeError, match="context manager"):
            s.points  # registered mutable=True
        with s:
            s.points.append(Point(5, 6))
        store.flush()
        assert stored_values(backend, "points") == [
            b"\x84[[1,2],[3,4]]",
            b"\x84[[1,2],[3,4],[5,6]]",
        ]
        assert stored_values(backend, "numbers") == [b"\x80[1,2]"]

        store = backend.reopen(store, codec=full_codec())
        with store.storage("shapes", "b") as s:
            assert s.points == [Point(1, 2), Point(3, 4), Point(5, 6)]
            assert all(type(p) is Point for p in s.points)
            assert s.numbers == [1, 2]
        store.close()


# ---------------------------------------------------------------- decode errors


BAD_DOCUMENTS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("unknown_id_254", b"\xfe1"),
    ("unknown_id_14", b"\x0e0"),
    ("unregistered_132", b"\x84[]"),
    ("id_without_document", b"\x00"),
    ("malformed_object", b"\x00{"),
    ("unterminated_string", b'\x02"abc'),
    ("unterminated_array", b"\x80[1,"),
    ("malformed_dict", b'\x81{"a":}'),
    ("trailing_garbage", b"\x0042 43"),
    ("str_for_int", b'\x00"abc"'),
    ("float_for_int", b"\x001.5"),
    ("bool_for_int", b"\x00true"),
    ("str_for_float", b'\x01"1.5"'),
    ("number_for_str", b"\x0242"),
    ("object_for_tuple", b"\x03{}"),
    ("number_for_bytes", b"\x0442"),
    ("bad_base64", b'\x04"not base64!"'),
    ("int_for_bool", b"\x051"),
    ("short_complex", b"\x06[1.0]"),
    ("str_complex", b'\x06["a","b"]'),
    ("zero_for_none", b"\x070"),
    ("bad_decimal", b'\x08"abc"'),
    ("str_for_frozenset", b'\x09"x"'),
    ("bad_date", b'\x0a"not a date"'),
    ("bad_time", b'\x0b"25:00:00"'),
    ("bad_datetime", b'\x0c"2024-13-01T00:00:00"'),
    ("short_uuid", b'\x0d"AAAA"'),
    ("object_for_list", b"\x80{}"),
    ("array_for_dict", b"\x81[]"),
    ("number_for_bytearray", b"\x821"),
    ("object_for_set", b"\x83{}"),
    ("str_for_random", b'\x85"x"'),
]


class TestDecodeErrors:
    """Bytes that are not a valid encoding raise ValueError: empty, unknown type id,
    malformed JSON, or a JSON document of the wrong kind for its type id."""

    @pytest.mark.parametrize(
        "data", [d for _, d in BAD_DOCUMENTS], ids=[label for label, _ in BAD_DOCUMENTS]
    )
    def test_decode_raises_value_error(self, data: bytes) -> None:
        with pytest.raises(ValueError):
            Codec().decode(data)

    def test_unknown_id_is_named(self) -> None:
        with pytest.raises(ValueError, match="254"):
            Codec().decode(b"\xfe1")

    def test_registered_id_decodes_after_registration(self) -> None:
        """The same bytes that fail on a plain codec decode once the id is known."""
        with pytest.raises(ValueError):
            Codec().decode(b"\x14[1,2]")
        assert full_codec().decode(b"\x14[1,2]") == Point(1, 2)
