"""Bad input is refused with the documented error and changes nothing.

Every kind of bad input SPEC names (invalid namespaces and field names, tree
collisions, reserved names, unencodable values, a ``with`` block whose mutation cannot
be stored, bad virtual fields, bad ``Value`` arguments, malformed dumps, an existing
table with another schema, SQL metacharacters in user-chosen names, stored rows that do
not decode) must raise the documented exception with a message saying what is wrong and
where, and leave the log, the cache, the database and the sequence counter exactly as
they were.  After the failure the store keeps working: the next valid write gets the
next sequence number (the failed operation used none), and a reopened store sees the
old log plus that write.

Each case starts from the same store (:func:`make_setup`): a few fields, a tombstone, a
list written and mutated in a ``with`` block, a dict, and a sub-namespace, built with an
``on_change`` recorder and a ``namespace_validator``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

from appendmuch import Sqlite3, Storage, Store, Value
from appendmuch.errors import UnknownTypeIdError
from backends import Backend, SqliteBackend, is_shared
from helpers import history
from snapshots import cache_snapshot, state

NS = ("game", "p1")
SUB = ("game", "p1", "inventory")
DBNS = "game/p1"

# ---------------------------------------------------------------- shared setup


@dataclass
class Setup:
    """A populated store on one backend, with what it looked like before the bad input."""

    backend: Backend
    store: Store
    player: Storage
    calls: list[tuple[tuple[str, ...], str, Value]] = field(default_factory=list)
    before: tuple[Any, ...] = ()
    calls_before: int = 0

    def store_kwargs(self) -> dict[str, Any]:
        return {"on_change": self._record, "namespace_validator": _validator}

    def _record(self, namespace: tuple[str, ...], name: str, value: Value) -> None:
        self.calls.append((namespace, name, value))

    @property
    def last_seq(self) -> int:
        return int(self.before[2])

    @property
    def rows_before(self) -> list[tuple[Any, ...]]:
        return list(self.before[1])


def _validator(namespace: tuple[str, ...]) -> Any:
    """Rejects namespaces under "forbidden" (False) and under "nil" (a falsy None)."""
    if namespace[0] == "forbidden":
        return False
    if namespace[0] == "nil":
        return None
    return True


def make_setup(backend: Backend) -> Setup:
    """Store with fields, a tombstone, a list written in a block, a dict, a sub-namespace."""
    setup = Setup(backend=backend, store=None, player=None)  # type: ignore[arg-type]
    store = backend.store(**setup.store_kwargs())
    player = store.storage(*NS)
    player.score = 100
    player.label = "alpha"
    player.gone = 1
    del player.gone
    with player:
        player.items = ["a"]
        player.items.append("b")
    player.tags = {"k": 1}
    store.storage(*SUB).sword = 1
    setup.store = store
    setup.player = player
    setup.before = state(store)
    setup.calls_before = len(setup.calls)
    assert setup.last_seq == 8
    return setup


def assert_old_values(store: Store, *later: str) -> None:
    """The values written by :func:`make_setup` are still the current ones (``later``:
    fields written after the bad input, listed after the old ones)."""
    player = store.storage(*NS)
    assert player.score == 100
    assert player.label == "alpha"
    assert player.get("gone", "missing") == "missing"
    with player:
        assert player.items == ["a", "b"]
        assert player.tags == {"k": 1}
    assert store.storage(*SUB).sword == 1
    assert player.__fields__() == ["score", "label", "items", "tags", *later]


def assert_unchanged_and_working(setup: Setup) -> None:
    """Nothing changed, no callback fired; the next write gets the next seq; reopen ok."""
    store = setup.store
    assert state(store) == setup.before
    assert len(setup.calls) == setup.calls_before
    assert_old_values(store)

    player = store.storage(*NS)
    player.after = "ok"
    seq = player.__history__()["after"][-1].seq
    assert seq == setup.last_seq + 1, "the failed operation used a sequence number"
    assert setup.calls[-1][2].seq == seq
    assert len(setup.calls) == setup.calls_before + 1

    reopened = setup.backend.reopen(store, **setup.store_kwargs())
    try:
        rows = [tuple(row) for row in reopened.driver.load_rows()]
        assert rows[:-1] == setup.rows_before
        assert rows[-1][:3] == (setup.last_seq + 1, DBNS, "after")
        assert_old_values(reopened, "after")
        assert reopened.storage(*NS).after == "ok"
        assert reopened.driver.last_seq == setup.last_seq + 1
    finally:
        reopened.close()


@pytest.fixture
def setup(backend: Backend) -> Iterator[Setup]:
    made = make_setup(backend)
    yield made
    made.store.close()


# ---------------------------------------------------------------- namespaces


@pytest.mark.parametrize(
    ("namespace", "pattern"),
    [
        pytest.param((), r"at least one token", id="empty-tuple"),
        pytest.param(("",), r"''", id="empty-token"),
        pytest.param(("a/b",), r"'a/b'", id="slash"),
        pytest.param(("a b",), r"'a b'", id="space"),
        pytest.param(("ä",), r"'ä'", id="non-ascii"),
        pytest.param((1,), r"\b1\b.*int", id="int-token"),
        pytest.param((None,), r"None", id="none-token"),
        pytest.param(("a", ""), r"''", id="empty-second-token"),
        pytest.param(("a\n",), r"'a\\n'", id="newline"),
        pytest.param(("a'b",), r"\"a'b\"", id="sql-single-quote"),
        pytest.param(('a"b',), r"'a\"b'", id="sql-double-quote"),
        pytest.param(("x;DROP",), r"'x;DROP'", id="sql-semicolon"),
        pytest.param(("forbidden",), r"forbidden.*namespace_validator", id="validator-false"),
        pytest.param(("nil", "x"), r"nil.*namespace_validator", id="validator-falsy"),
    ],
)
def test_invalid_namespace(setup: Setup, namespace: tuple[Any, ...], pattern: str) -> None:
    """store.storage(...) with an invalid namespace raises ValueError naming the token."""
    with pytest.raises(ValueError, match=pattern):
        setup.store.storage(*namespace)
    assert store_namespace_absent(setup.store, namespace)
    assert_unchanged_and_working(setup)


def store_namespace_absent(store: Store, namespace: tuple[Any, ...]) -> bool:
    """True if the cache tree holds no node for the namespace's first token."""
    return not namespace or not isinstance(namespace[0], str) or namespace[0] not in store.cache


# ---------------------------------------------------------------- namespace/field tree


def _field_named_like_subnamespace(setup: Setup) -> None:
    setup.player.inventory = 5  # ("game", "p1", "inventory") is a namespace


def _field_named_like_namespace_token(setup: Setup) -> None:
    setup.store.storage("game").p1 = 5  # ("game", "p1") is a namespace


def _namespace_through_field(setup: Setup) -> None:
    setup.store.storage(*NS, "score")


def _namespace_deeper_through_field(setup: Setup) -> None:
    setup.store.storage(*NS, "score", "deeper")


def _namespace_through_deleted_field(setup: Setup) -> None:
    setup.store.storage(*NS, "gone")  # a tombstoned field is still a field of the tree


def _namespace_through_field_of_subnamespace(setup: Setup) -> None:
    setup.store.storage(*SUB, "sword", "x")


@pytest.mark.parametrize(
    ("action", "pattern"),
    [
        pytest.param(_field_named_like_subnamespace, r"'inventory'", id="field-is-subns"),
        pytest.param(_field_named_like_namespace_token, r"'p1'", id="field-is-ns-token"),
        pytest.param(_namespace_through_field, r"'score'", id="ns-through-field"),
        pytest.param(_namespace_deeper_through_field, r"'score'", id="ns-deeper-through-field"),
        pytest.param(_namespace_through_deleted_field, r"'gone'", id="ns-through-deleted"),
        pytest.param(_namespace_through_field_of_subnamespace, r"'sword'", id="ns-sub-field"),
    ],
)
def test_tree_collision(setup: Setup, action: Callable[[Setup], None], pattern: str) -> None:
    """A name cannot be both a field and a namespace token: ValueError, nothing changes."""
    with pytest.raises(ValueError, match=pattern):
        action(setup)
    assert_unchanged_and_working(setup)


# ---------------------------------------------------------------- field names


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("1abc", id="leading-digit"),
        pytest.param("a-b", id="dash"),
        pytest.param("", id="empty"),
        pytest.param("with space", id="space"),
        pytest.param("a'b", id="sql-single-quote"),
        pytest.param('a"b', id="sql-double-quote"),
        pytest.param("x;y", id="sql-semicolon"),
    ],
)
def test_invalid_field_name(setup: Setup, name: str) -> None:
    """setattr with a non-identifier field name raises ValueError naming it."""
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        setattr(setup.player, name, 1)
    assert_unchanged_and_working(setup)


@pytest.mark.parametrize("name", ["virtual", "get", "flush", "refresh"])
def test_reserved_field_name(setup: Setup, name: str) -> None:
    """The reserved attributes/methods cannot be assigned as fields; they keep working."""
    with pytest.raises((AttributeError, ValueError), match=name):
        setattr(setup.player, name, 1)
    player = setup.player
    assert callable(player.get) and callable(player.flush) and callable(player.refresh)
    assert isinstance(player.virtual, dict)
    assert player.get("score") == 100
    assert_unchanged_and_working(setup)


@pytest.mark.parametrize("name", ["__x__", "__score__"])
def test_internal_dunder_name_is_never_stored(setup: Setup, name: str) -> None:
    """Assigning a __dunder__ name may succeed or raise, but it is never a stored field."""
    with contextlib.suppress(AttributeError):
        setattr(setup.player, name, 1)
    assert name not in setup.player.__fields__()
    assert name not in setup.player.__history__()
    assert_unchanged_and_working(setup)


# ---------------------------------------------------------------- unencodable values


def _storage_value(store: Store) -> Any:
    return store.storage("game", "other")


UNENCODABLE: list[Any] = [
    pytest.param(lambda store: object(), r"\bobject\b", id="object"),
    pytest.param(lambda store: lambda: 1, r"\bfunction\b", id="lambda"),
    pytest.param(_storage_value, r"\bStorage\b", id="storage"),
    pytest.param(lambda store: math.inf, r"\bfloat\b", id="inf"),
    pytest.param(lambda store: float("nan"), r"\bfloat\b", id="nan"),
    pytest.param(lambda store: complex(math.inf, 0), r"\bcomplex\b", id="complex-inf"),
    pytest.param(lambda store: 2**64, r"\bint\b", id="int-2**64"),
    pytest.param(lambda store: {1: "a"}, r"\bdict\b", id="dict-int-keys"),
    pytest.param(lambda store: [(1, 2)], r"\blist\b", id="tuple-in-list"),
    pytest.param(lambda store: {"u": uuid.uuid4()}, r"\bdict\b", id="uuid-in-dict"),
    pytest.param(lambda store: {(1, 2)}, r"\bset\b", id="tuple-in-set"),
    pytest.param(lambda store: "\ud800", r"\bstr\b", id="lone-surrogate"),
]


@pytest.mark.parametrize(("make", "pattern"), UNENCODABLE)
def test_unencodable_value(setup: Setup, make: Callable[[Store], Any], pattern: str) -> None:
    """A value the codec cannot store raises with its type named; no entry, no seq used,
    no callback, and the field keeps its old value."""
    with pytest.raises((ValueError, TypeError), match=pattern):
        setup.player.score = make(setup.store)
    assert setup.player.score == 100
    assert_unchanged_and_working(setup)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        pytest.param(object(), r"\bobject\b", id="object"),
        pytest.param([(1, 2)], r"\blist\b", id="tuple-in-list"),
    ],
)
@pytest.mark.parametrize("target", ["items", "fresh"])
def test_unencodable_value_on_list_or_new_field(
    setup: Setup, value: Any, pattern: str, target: str
) -> None:
    """Also refused for a field holding a list, inside a block, and for a new field
    (which must then not exist at all, not even as an empty history)."""
    with pytest.raises((ValueError, TypeError), match=pattern):
        with setup.player:
            setattr(setup.player, target, value)
    assert "fresh" not in setup.player.__history__()
    assert_unchanged_and_working(setup)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        pytest.param(object(), r"\bobject\b", id="object"),
        pytest.param((1, 2), r"\blist\b", id="tuple-in-list"),
        pytest.param(math.inf, r"\blist\b", id="inf-in-list"),
    ],
)
@pytest.mark.parametrize("order", ["valid-first", "bad-first"])
def test_with_block_unencodable_mutation_writes_nothing(
    setup: Setup, bad: Any, pattern: str, order: str
) -> None:
    """The exit of a block whose mutation cannot be stored raises and writes no field of
    the block, also not a second field validly mutated in the same block; afterwards a
    valid block mutation is written with the next seq."""
    player = setup.player
    with pytest.raises((ValueError, TypeError), match=pattern):
        with player:
            if order == "valid-first":
                player.tags["k"] = 2
                player.items.append(bad)
            else:
                player.items.append(bad)
                player.tags["k"] = 2
    history = player.__history__()
    assert len(history["tags"]) == 1 and len(history["items"]) == 2
    with player:
        player.items.append("c")
    assert player.__history__()["items"][-1].seq == setup.last_seq + 1
    with player:
        assert player.items == ["a", "b", "c"]
        assert player.tags == {"k": 1}
    reopened = setup.backend.reopen(setup.store, **setup.store_kwargs())
    try:
        rows = [tuple(row) for row in reopened.driver.load_rows()]
        assert rows[:-1] == setup.rows_before
        assert rows[-1][:3] == (setup.last_seq + 1, DBNS, "items")
        with reopened.storage(*NS) as again:
            assert again.items == ["a", "b", "c"]
            assert again.tags == {"k": 1}
    finally:
        reopened.close()


# ---------------------------------------------------------------- virtual fields


def _double(storage: Any) -> Any:
    return storage.score * 2


def _ctor(virtual: dict[str, Any]) -> Callable[[Setup], Any]:
    def action(setup: Setup) -> Any:
        return setup.store.storage(*NS, virtual=virtual)

    return action


def _item(name: str, func: Any) -> Callable[[Setup], Any]:
    def action(setup: Setup) -> Any:
        setup.player.virtual[name] = func

    return action


def _decorator(name: str) -> Callable[[Setup], Any]:
    def action(setup: Setup) -> Any:
        return setup.player.virtual(name)(_double)

    return action


def _assign_virtual(setup: Setup) -> None:
    setup.player.virtual["double"] = _double
    setup.player.double = 5


def _assign_virtual_shadowing_field(setup: Setup) -> None:
    setup.player.virtual["score"] = _double
    setup.player.score = 5


@pytest.mark.parametrize(
    ("action", "error", "pattern"),
    [
        pytest.param(_ctor({"bad name": _double}), ValueError, "'bad name'", id="ctor-space"),
        pytest.param(_ctor({"1x": _double}), ValueError, "'1x'", id="ctor-digit"),
        pytest.param(_ctor({"flush": _double}), ValueError, "'flush'", id="ctor-reserved"),
        pytest.param(_ctor({"p": 3}), TypeError, "'p'.*int", id="ctor-not-callable"),
        pytest.param(_item("a-b", _double), ValueError, "'a-b'", id="item-dash"),
        pytest.param(_item("get", _double), ValueError, "'get'", id="item-get"),
        pytest.param(_item("virtual", _double), ValueError, "'virtual'", id="item-virtual"),
        pytest.param(_item("p", "text"), TypeError, "'p'.*str", id="item-not-callable"),
        pytest.param(_decorator("with space"), ValueError, "'with space'", id="decorator-space"),
        pytest.param(_decorator("refresh"), ValueError, "'refresh'", id="decorator-reserved"),
        pytest.param(_assign_virtual, AttributeError, "'double'", id="assign"),
        pytest.param(_assign_virtual_shadowing_field, AttributeError, "'score'", id="shadow"),
    ],
)
def test_bad_virtual_field(
    setup: Setup, action: Callable[[Setup], Any], error: type[Exception], pattern: str
) -> None:
    """Bad virtual field names (ValueError), non-callables (TypeError) and assignments to
    a virtual field (AttributeError) store nothing; a refused name is not registered."""
    with pytest.raises(error, match=pattern):
        action(setup)
    virtual = setup.player.virtual
    for name in ("bad name", "1x", "flush", "p", "a-b", "get", "virtual", "with space"):
        assert name not in virtual
    virtual.clear()
    assert_unchanged_and_working(setup)


# ---------------------------------------------------------------- Value


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        pytest.param({"seq": "x"}, r"seq.*'x'", id="seq-str"),
        pytest.param({"seq": None}, r"seq.*None", id="seq-none"),
        pytest.param({"unavailable": 1}, r"unavailable.*\b1\b", id="unavailable-int"),
        pytest.param({"context": 3}, r"context.*\b3\b", id="context-int"),
        pytest.param({"time": "now"}, r"time.*'now'", id="time-str"),
    ],
)
def test_value_with_wrong_types(kwargs: dict[str, Any], pattern: str) -> None:
    """Value validates its field types on construction (backend-independent)."""
    with pytest.raises(TypeError, match=pattern):
        Value(**kwargs)


# ---------------------------------------------------------------- restore of bad dumps


def _row(seq: Any, **changes: Any) -> dict[str, Any]:
    row = {
        "seq": seq,
        "namespace": "restored/ns",
        "field": "f",
        "value": b"\x00" + str(seq).encode() if isinstance(seq, int) else b"\x001",
        "created_at": 1.5,
        "context": "test.restore:1",
    }
    row.update(changes)
    return row


def _pack(*objs: Any) -> bytes:
    return b"".join(msgpack.packb(obj, use_bin_type=True) for obj in objs)


def _without(key: str, row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


# Each case: (first free seq, an existing seq) -> (dump bytes, pattern).  Two valid rows
# (row 0 and row 1, seqs base and base+1) come before the bad one (row 2).
DumpCase = Callable[[int, int], tuple[bytes, str]]
R2 = r"dump row 2\b"


def _bad_third(b: int, pattern: str, **changes: Any) -> tuple[bytes, str]:
    """Two good rows and a third with ``changes``; the error names its seq, then
    ``pattern``."""
    return _pack(_row(b), _row(b + 1), _row(b + 2, **changes)), R2 + rf".*seq {b + 2}.*" + pattern


DUMP_CASES: list[Any] = [
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1)) + b"\xc1garbage", r"msgpack.*\b2\b"),
        id="not-msgpack",
    ),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), _row(b + 2))[:-4], r"truncated.*\b2\b"),
        id="truncated",
    ),
    pytest.param(
        lambda b, e: (
            _pack(_row(b), _row(b + 1), _without("context", _row(b + 2))),
            R2 + r".*missing.*context",
        ),
        id="missing-key",
    ),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), {**_row(b + 2), "extra": 1}), R2 + r".*extra"),
        id="extra-key",
    ),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), _row(str(b + 2))), R2 + r".*seq"),
        id="seq-str",
    ),
    pytest.param(lambda b, e: _bad_third(b, r"value", value="x"), id="value-str"),
    pytest.param(lambda b, e: _bad_third(b, r"created_at", created_at="now"), id="created_at-str"),
    pytest.param(lambda b, e: _bad_third(b, r"namespace", namespace=7), id="namespace-int"),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), _row(0)), R2 + r".*seq.*\b0\b"),
        id="seq-zero",
    ),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), _row(-3)), R2 + r".*seq.*-3"),
        id="seq-negative",
    ),
    pytest.param(lambda b, e: _bad_third(b, r"'a b'", namespace="a b"), id="namespace-space"),
    pytest.param(lambda b, e: _bad_third(b, r"'1x'", field="1x"), id="field-digit"),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), _row(b)), rf"{R2}.*seq {b}.*twice"),
        id="duplicate-seq",
    ),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), _row(e)), rf"seq {e} already exists"),
        id="seq-exists-in-target",
    ),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), [1, 2, 3]), R2 + r".*list.*map"),
        id="top-level-list",
    ),
    pytest.param(
        lambda b, e: (_pack(_row(b), _row(b + 1), 7), R2 + r".*int.*map"),
        id="top-level-int",
    ),
]

CODEC_DUMP_CASES: list[Any] = [
    pytest.param(b"\x7f1", r"127", id="unknown-type-id"),
    pytest.param(b'\x00"x"', r"int", id="type-confused"),
    pytest.param(b"", r"empty|non-empty", id="empty-value"),
]


def assert_nothing_restored(setup: Setup, rows_before: list[tuple[Any, ...]]) -> None:
    assert [tuple(r) for r in setup.backend.raw_rows()] == rows_before
    assert setup.store.driver.last_seq == setup.last_seq
    setup.store.load()  # a store reloading from the driver sees no restored row
    assert "restored" not in setup.store.cache
    assert_unchanged_and_working(setup)


@pytest.mark.parametrize("case", DUMP_CASES)
def test_restore_malformed_dump(setup: Setup, case: DumpCase) -> None:
    """A malformed dump raises ValueError naming what is wrong and where (row index or
    seq), and restores no row, not even the valid rows before the bad one."""
    dump, pattern = case(setup.last_seq + 10, 3)
    rows_before = [tuple(r) for r in setup.backend.raw_rows()]
    assert rows_before == setup.rows_before
    with pytest.raises(ValueError, match=pattern):
        setup.store.driver.restore(dump)
    assert_nothing_restored(setup, rows_before)


@pytest.mark.parametrize(("value", "pattern"), CODEC_DUMP_CASES)
def test_restore_with_codec_rejects_undecodable_value(
    setup: Setup, value: bytes, pattern: str
) -> None:
    """restore(..., codec=store.codec) refuses a row whose value does not decode,
    naming the row and seq, and restores nothing."""
    base = setup.last_seq + 10
    dump = _pack(_row(base), _row(base + 1), _row(base + 2, value=value))
    rows_before = [tuple(r) for r in setup.backend.raw_rows()]
    with pytest.raises(ValueError, match=rf"{R2}.*seq {base + 2}.*{pattern}"):
        setup.store.driver.restore(dump, codec=setup.store.codec)
    assert_nothing_restored(setup, rows_before)


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(["not bytes"], id="str-chunks"),
        pytest.param(12, id="int"),
    ],
)
def test_restore_rejects_non_binary_stream(setup: Setup, stream: Any) -> None:
    """restore takes bytes, a binary file or an iterable of bytes chunks: anything else
    is a ValueError and restores nothing."""
    rows_before = [tuple(r) for r in setup.backend.raw_rows()]
    with pytest.raises(ValueError, match=r"str|int"):
        setup.store.driver.restore(stream)
    assert_nothing_restored(setup, rows_before)


# ---------------------------------------------------------------- stored rows that do not decode


def test_store_open_refuses_undecodable_stored_row(backend: Backend) -> None:
    """Opening a Store on a log holding a row that does not decode raises ValueError
    naming its seq, namespace and field, and leaves the stored rows untouched."""
    setup = make_setup(backend)
    setup.store.close()
    bad_seq = setup.last_seq + 1
    driver = backend.driver()
    driver.restore(_pack(_row(bad_seq, namespace=DBNS, field="score", value=b"\x7f1")))
    driver.close()
    rows_before = [tuple(r) for r in backend.raw_rows()]
    assert rows_before[-1][0] == bad_seq
    with pytest.raises(ValueError, match=rf"seq {bad_seq}\b.*{DBNS}.*score"):
        backend.store()
    gc.collect()
    assert [tuple(r) for r in backend.raw_rows()] == rows_before


def test_load_of_undecodable_row_keeps_cache(setup: Setup) -> None:
    """store.load() meeting an undecodable row raises ValueError naming it and leaves the
    in-memory cache as it was; reads and writes keep working.  In shared mode the row
    arrives by the follower first: kept as stored, reading that field raises the codec's
    error naming the type id, and everything else goes on."""
    store = setup.store
    bad_seq = setup.last_seq + 1
    store.driver.restore(_pack(_row(bad_seq, namespace=DBNS, field="label", value=b"\x7f1")))
    if is_shared(setup.backend):
        # Shared mode takes others' rows in as they come: one this codec cannot decode
        # is kept as it is stored; reading it raises, everything else goes on.
        store.sync()
        with pytest.raises(UnknownTypeIdError, match="127"):
            setup.player.label
        with pytest.raises(UnknownTypeIdError, match="127"):
            history(setup.player, "label")
        setup.player.after = 1
        store.flush()
        assert (setup.player.after, setup.player.score) == (1, 100)
        assert setup.player.__fields__() == ["score", "label", "items", "tags", "after"]
        with pytest.raises(ValueError, match=rf"seq {bad_seq}\b.*{DBNS}.*label"):
            store.load()  # (an open refuses it, naming the row)
        return
    cache_before = cache_snapshot(store)
    with pytest.raises(ValueError, match=rf"seq {bad_seq}\b.*{DBNS}.*label"):
        store.load()
    assert cache_snapshot(store) == cache_before
    assert_old_values(store)
    setup.player.after = 1
    assert setup.player.__history__()["after"][-1].seq == bad_seq + 1


# ---------------------------------------------------------------- SQL-only: names, schemas


@pytest.fixture
def sql_setup(place: Backend) -> Iterator[Setup]:
    """make_setup on each SQL backend (table names only exist there)."""
    made = make_setup(place)
    try:
        yield made
    finally:
        made.store.close()


def _sqlite_tables(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT type, name FROM sqlite_master").fetchall())
    finally:
        conn.close()


METACHARACTERS = ["x; DROP TABLE y", "a'b", 'a"b', "a-b"]


@pytest.mark.parametrize(
    "kwargs",
    [
        *(pytest.param({"table_prefix": bad}, id=f"prefix-{bad}") for bad in METACHARACTERS),
        *(pytest.param({"tblextra": bad}, id=f"tblextra-{bad}") for bad in METACHARACTERS),
        pytest.param({"replace_index_specs": [("a'b", "game/%")]}, id="spec-field-quote"),
        pytest.param({"replace_index_specs": [("x; DROP", "game/%")]}, id="spec-field-semi"),
        pytest.param({"replace_index_specs": [("score", "%' OR 1=1 --")]}, id="spec-pattern-or"),
        pytest.param({"replace_index_specs": [("score", "a'b")]}, id="spec-pattern-quote"),
    ],
)
def test_sql_metacharacters_in_names(sql_setup: Setup, kwargs: dict[str, Any]) -> None:
    """Every SQL name the user chooses is validated: metacharacters raise ValueError
    naming the offending text, and no table, index or row changes."""
    backend = sql_setup.backend
    tables_before = _sqlite_tables(backend.path) if isinstance(backend, SqliteBackend) else None
    (bad,) = kwargs.values()
    offending = bad if isinstance(bad, str) else next(x for x in bad[0] if "'" in x or ";" in x)
    with pytest.raises(ValueError, match=re.escape(repr(offending))):
        backend.driver(**kwargs)
    if isinstance(backend, SqliteBackend):
        assert _sqlite_tables(backend.path) == tables_before
    assert_unchanged_and_working(sql_setup)


def _sqlite_file(tmp_path: Path, journal_mode: str, *statements: str) -> Path:
    path = tmp_path / "foreign.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


FOREIGN_SCHEMAS = [
    pytest.param(
        [
            "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY, seq TEXT, foo INT NOT NULL)",
            "INSERT INTO appendmuch_values VALUES (1, 'x', 3)",
        ],
        id="other-columns",
    ),
    pytest.param(
        [
            "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, "
            "namespace TEXT, field TEXT, value BLOB, created_at REAL, context TEXT)",
            "INSERT INTO appendmuch_values VALUES (1, 1, 'a', 'x', X'0031', 1.0, 'c')",
        ],
        id="seq-not-unique",
    ),
    pytest.param(
        [
            "CREATE TABLE appendmuch_values (id INTEGER PRIMARY KEY, seq INTEGER UNIQUE, "
            "namespace TEXT, field TEXT, value BLOB, created_at TEXT, context TEXT)"
        ],
        id="created_at-text",
    ),
]


@pytest.mark.parametrize("journal_mode", ["WAL", "DELETE"])
@pytest.mark.parametrize("statements", FOREIGN_SCHEMAS)
def test_sqlite_foreign_schema_is_refused_and_untouched(
    tmp_path: Path, statements: list[str], journal_mode: str
) -> None:
    """A table of the expected name but another layout raises RuntimeError at Store(...)
    open, naming the table; the database file stays byte-identical (SQLite only)."""
    path = _sqlite_file(tmp_path, journal_mode, *statements)
    before = path.read_bytes()
    driver = Sqlite3(path)
    with pytest.raises(RuntimeError, match="appendmuch_values"):
        Store(driver)
    driver.close()
    gc.collect()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.sqlite3"]


@pytest.mark.parametrize(
    ("column", "bad", "pattern"),
    [
        pytest.param("value", b"\x7f1", r"127", id="unknown-type-id"),
        pytest.param("value", b'\x00"x"', r"int", id="type-confused"),
        pytest.param("namespace", "a b", r"'a b'", id="namespace-space"),
        pytest.param("field", "1x", r"'1x'", id="field-digit"),
    ],
)
def test_sqlite_hand_inserted_bad_row(tmp_path: Path, column: str, bad: Any, pattern: str) -> None:
    """A row inserted by hand (raw sqlite3) that cannot be loaded makes Store open raise
    ValueError naming its seq (and namespace/field where valid); the file is untouched."""
    backend = SqliteBackend(tmp_path)
    setup = make_setup(backend)
    setup.store.close()
    row = {
        "seq": 99,
        "namespace": DBNS,
        "field": "score",
        "value": b"\x00" + b"5",
        "created_at": 1.0,
        "context": "hand:1",
    }
    row[column] = bad
    conn = sqlite3.connect(backend.path)
    conn.execute(
        "INSERT INTO appendmuch_values (seq, namespace, field, value, created_at, context) "
        "VALUES (:seq, :namespace, :field, :value, :created_at, :context)",
        row,
    )
    conn.commit()
    conn.close()
    before = backend.path.read_bytes()
    driver = Sqlite3(backend.path)
    where = r"seq 99\b.*" + (re.escape(DBNS) + r".*score.*" if column == "value" else "")
    with pytest.raises(ValueError, match=where + pattern):
        Store(driver)
    driver.close()
    gc.collect()
    assert backend.path.read_bytes() == before
