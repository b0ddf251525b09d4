"""Hand-written wire-format fixtures: (value, expected stored bytes), SPEC section 9.

An encoded value is one type-id byte followed by an orjson document.  Every expected
byte string below is written out by hand from those rules (never produced by the
codec under test), so the tests that use them pin down the exact format other
implementations read and write.

Shared by ``test_codec.py`` (encode/decode) and ``test_wire_compat.py`` (raw SQLite
rows and msgpack dumps).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

UTC = dt.UTC
PLUS_TWO = dt.timezone(dt.timedelta(hours=2))
MINUS_FIVE_THIRTY = dt.timezone(-dt.timedelta(hours=5, minutes=30))

#: a UUID whose 16 bytes are 0x00 .. 0x0f
UUID_COUNTING = uuid.UUID("00010203-0405-0607-0809-0a0b0c0d0e0f")


@dataclass(frozen=True)
class Fixture:
    """One value and the exact bytes it is stored as."""

    label: str
    value: Any
    expected: bytes

    @property
    def type_id(self) -> int:
        return self.expected[0]

    def fresh(self) -> Any:
        """An independent copy of the value (tests may mutate what they get)."""
        return copy.deepcopy(self.value)


def _random_fixture() -> Fixture:
    """random.Random (id 133 = 0x85): getstate() as JSON, i.e.
    ``[version, [625 internal ints], gauss_next]``; built by hand from the state."""
    rng = random.Random(20240131)
    version, internal, gauss_next = rng.getstate()
    assert version == 3 and gauss_next is None and len(internal) == 625
    doc = b"[3,[" + b",".join(b"%d" % n for n in internal) + b"],null]"
    return Fixture("random", rng, b"\x85" + doc)


FIXTURES: list[Fixture] = [
    # int: id 0
    Fixture("int_zero", 0, b"\x000"),
    Fixture("int_42", 42, b"\x0042"),
    Fixture("int_negative", -17, b"\x00-17"),
    Fixture("int_max64", 2**63 - 1, b"\x009223372036854775807"),
    Fixture("int_min64", -(2**63), b"\x00-9223372036854775808"),
    # float: id 1 (orjson's shortest round-trip form)
    Fixture("float_tenth", 0.1, b"\x010.1"),
    Fixture("float_one", 1.0, b"\x011.0"),
    Fixture("float_negative", -2.5, b"\x01-2.5"),
    Fixture("float_huge", 1e300, b"\x011e+300"),
    Fixture("float_tiny", 1e-7, b"\x011e-7"),
    Fixture("float_negative_zero", -0.0, b"\x01-0.0"),
    # str: id 2 (UTF-8, non-ASCII not escaped, control characters escaped)
    Fixture("str_empty", "", b'\x02""'),
    Fixture("str_ascii", "hello", b'\x02"hello"'),
    Fixture("str_latin", "h\u00e9", b'\x02"h\xc3\xa9"'),
    Fixture("str_emoji", "\U0001f600", b'\x02"\xf0\x9f\x98\x80"'),
    Fixture("str_escapes", 'say "hi"\n', b'\x02"say \\"hi\\"\\n"'),
    Fixture("str_control", "\x01", b'\x02"\\u0001"'),
    # tuple: id 3 (JSON array)
    Fixture("tuple_empty", (), b"\x03[]"),
    Fixture("tuple_mixed", (1, "a", None, 2.5), b'\x03[1,"a",null,2.5]'),
    Fixture("tuple_of_containers", ([1, 2], {"b": 1, "a": 2}), b'\x03[[1,2],{"a":2,"b":1}]'),
    # bytes: id 4 (base64 string)
    Fixture("bytes_empty", b"", b'\x04""'),
    Fixture("bytes_hi", b"hi", b'\x04"aGk="'),
    Fixture("bytes_binary", b"\x00\xff\xfe", b'\x04"AP/+"'),
    # bool: id 5 (never int's id 0)
    Fixture("bool_true", True, b"\x05true"),
    Fixture("bool_false", False, b"\x05false"),
    # complex: id 6 ([real, imag])
    Fixture("complex", 1 + 2j, b"\x06[1.0,2.0]"),
    Fixture("complex_real", complex(-0.5, 0.0), b"\x06[-0.5,0.0]"),
    # None: id 7
    Fixture("none", None, b"\x07null"),
    # Decimal: id 8 (string, exactly as str() spells it)
    Fixture("decimal", Decimal("3.14"), b'\x08"3.14"'),
    Fixture("decimal_trailing_zero", Decimal("0.10"), b'\x08"0.10"'),
    Fixture("decimal_exponent", Decimal("-1E+3"), b'\x08"-1E+3"'),
    # frozenset: id 9 (array, members ordered by their JSON encoding)
    Fixture("frozenset_empty", frozenset(), b"\x09[]"),
    Fixture("frozenset_mixed", frozenset({"b", 1, "a"}), b'\x09["a","b",1]'),
    Fixture("frozenset_ints", frozenset({10, 9, -1}), b"\x09[-1,10,9]"),
    # date 10 / time 11 / datetime 12: ISO strings
    Fixture("date", dt.date(2024, 2, 29), b'\x0a"2024-02-29"'),
    Fixture("time_micro", dt.time(12, 30, 45, 123456), b'\x0b"12:30:45.123456"'),
    Fixture("time_midnight", dt.time(0, 0), b'\x0b"00:00:00"'),
    Fixture("time_aware", dt.time(23, 59, tzinfo=UTC), b'\x0b"23:59:00+00:00"'),
    Fixture("datetime_naive", dt.datetime(2024, 1, 31, 12, 0, 5), b'\x0c"2024-01-31T12:00:05"'),
    Fixture(
        "datetime_utc_micro",
        dt.datetime(2024, 1, 31, 12, 0, 5, 7, tzinfo=UTC),
        b'\x0c"2024-01-31T12:00:05.000007+00:00"',
    ),
    Fixture(
        "datetime_plus_two",
        dt.datetime(2023, 12, 24, 18, 30, tzinfo=PLUS_TWO),
        b'\x0c"2023-12-24T18:30:00+02:00"',
    ),
    Fixture(
        "datetime_minus_five_thirty",
        dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=MINUS_FIVE_THIRTY),
        b'\x0c"1999-12-31T23:59:59-05:30"',
    ),
    # UUID: id 13 (base64 of the 16 bytes)
    Fixture("uuid_nil", uuid.UUID(int=0), b'\x0d"AAAAAAAAAAAAAAAAAAAAAA=="'),
    Fixture("uuid_counting", UUID_COUNTING, b'\x0d"AAECAwQFBgcICQoLDA0ODw=="'),
    # list: id 128 = 0x80
    Fixture("list_empty", [], b"\x80[]"),
    Fixture("list_mixed", [1, "a", None, True, 2.5], b'\x80[1,"a",null,true,2.5]'),
    Fixture(
        "list_nested",
        [[1, [2, []]], {"z": [], "a": {}}],
        b'\x80[[1,[2,[]]],{"a":{},"z":[]}]',
    ),
    # dict: id 129 = 0x81 (keys sorted at every level)
    Fixture("dict_empty", {}, b"\x81{}"),
    Fixture("dict_flat", {"b": 1, "a": 2}, b'\x81{"a":2,"b":1}'),
    Fixture(
        "dict_nested",
        {"outer": {"z": 1, "m": [{"y": 2, "x": 3}]}, "a": None},
        b'\x81{"a":null,"outer":{"m":[{"x":3,"y":2}],"z":1}}',
    ),
    Fixture("dict_unicode_keys", {"\u00e9": 1, "e": 2}, b'\x81{"e":2,"\xc3\xa9":1}'),
    # bytearray: id 130 = 0x82 (base64)
    Fixture("bytearray_empty", bytearray(), b'\x82""'),
    Fixture("bytearray", bytearray(b"\x00\xff"), b'\x82"AP8="'),
    # set: id 131 = 0x83 (array, members ordered by their JSON encoding)
    Fixture("set_empty", set(), b"\x83[]"),
    Fixture("set_mixed", {"b", 1, "a"}, b'\x83["a","b",1]'),
    Fixture("set_ints", {10, 9, 100}, b"\x83[10,100,9]"),
    Fixture("set_numbers", {2.5, -1}, b"\x83[-1,2.5]"),
    # random.Random: id 133 = 0x85
    _random_fixture(),
]

FIXTURE_IDS = [f.label for f in FIXTURES]

#: every built-in type and its id (SPEC section 9)
BUILTIN_IDS: dict[type, int] = {
    int: 0,
    float: 1,
    str: 2,
    tuple: 3,
    bytes: 4,
    bool: 5,
    complex: 6,
    type(None): 7,
    Decimal: 8,
    frozenset: 9,
    dt.date: 10,
    dt.time: 11,
    dt.datetime: 12,
    uuid.UUID: 13,
    list: 128,
    dict: 129,
    bytearray: 130,
    set: 131,
    random.Random: 133,
}


def same_value(got: Any, want: Any) -> bool:
    """Equal *and* of the same exact types all the way down (``-0.0`` keeps its
    sign; ``random.Random`` compares by state)."""
    if type(got) is not type(want):
        return False
    if isinstance(want, random.Random):
        return bool(got.getstate() == want.getstate())
    if isinstance(want, float):
        return got == want and math.copysign(1.0, got) == math.copysign(1.0, want)
    if isinstance(want, complex):
        return same_value(got.real, want.real) and same_value(got.imag, want.imag)
    if isinstance(want, list | tuple):
        return len(got) == len(want) and all(map(same_value, got, want))
    if isinstance(want, dict):
        return list(sorted(got)) == list(sorted(want)) and all(
            same_value(got[k], want[k]) for k in want
        )
    if isinstance(want, dt.datetime | dt.time):
        return bool(got == want) and got.utcoffset() == want.utcoffset()
    if isinstance(want, Decimal):
        return str(got) == str(want)
    return bool(got == want)
