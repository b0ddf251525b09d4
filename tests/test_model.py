"""Model-based tests: a real Store against a brute-force model of the log.

A hypothesis state machine makes random writes, deletes, ``with`` blocks and reopens
on a Store, and mirrors each operation in a plain Python list of entries (the log as
SPEC describes it).  After every step, and in query rules, everything the Store
answers (current values, ``__fields__``, ``bool``, ``__history__``, ``within``,
``within.strict``, ``.along``) is compared with what the model derives by walking its
entries (SPEC §3, §4, §6, §7).  The machine runs once per backend in
``backends.ALL_FACTORIES`` (shared mode included); hypothesis prints the failing operation sequence.

Besides small ints and a list of ints, a field ``extra`` takes tuples, dicts of lists
and frozensets: values that the Store keeps as objects only while they are a field's
latest entry and decodes from their stored bytes on demand once superseded (also after
a reopen, where every older entry comes from the database).  Answers are compared with
exact types, and values handed out are mutated to show they are not the log's.

A field ``entry`` takes values the codec's round-trip check is told to skip
(``vigilant_skip``): ``[UUID, {...}]`` lists, tuples and a registered list type whose
nested UUIDs and datetimes come back as strings from JSON.  Within a session every
version of such a field reads back exactly as assigned (SPEC section 12); after a
reopen every version reads back as stored.

A second, non-stateful property checks that arbitrary JSON-like values survive a
write / read / reopen round trip unchanged and encode deterministically (SPEC §9).
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import enum
import math
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from appendmuch import Codec, Storage, Store, Value, within
from appendmuch.errors import RoundTripError, UnsupportedTypeError
from backends import ALL_FACTORIES, Backend
from helpers import kept_to_the_end

BACKEND_NAMES = list(ALL_FACTORIES)

#: examples per backend: the in-memory driver is cheap, the others touch real storage
MAX_EXAMPLES = {"memory": 60, "sqlite": 30}
OTHER_BACKEND_EXAMPLES = 20

# ---------------------------------------------------------------------- the universe

NAMESPACES: tuple[tuple[str, ...], ...] = (("g", "p1"), ("g", "p2"))
SCALAR_FIELDS = ("round", "stage", "score")
FIELDS = (*SCALAR_FIELDS, "items", "extra")

ns_index = st.sampled_from(range(len(NAMESPACES)))
small_ints = st.integers(0, 2)
#: context values also include one that is never written
context_ints = st.integers(0, 3)
item_lists = st.lists(st.integers(0, 1), max_size=2)
#: values held as stored bytes once superseded: hashable (tuple, frozenset) or not (dict)
extra_values = st.one_of(
    st.tuples(st.integers(0, 1), st.integers(0, 1)),
    st.frozensets(st.integers(0, 1), max_size=2),
    st.dictionaries(st.sampled_from("ab"), item_lists, max_size=2),
)
fields = st.sampled_from(FIELDS)
scalar_fields = st.sampled_from(SCALAR_FIELDS)


class Bag(list[Any]):
    """A registered list type: its UUID members come back from JSON as strings."""


def _is_entry(value: Any) -> bool:
    """The application's ``vigilant_skip``: an id first, re-parsed on read."""
    return isinstance(value, list | tuple) and bool(value) and isinstance(value[0], uuid.UUID)


def entry_codec() -> Codec:
    """The codec of the machine's Stores: entries skip the round-trip check."""
    codec = Codec()
    codec.register(
        Bag,
        140,
        lambda bag: orjson.dumps(bag, default=str),
        lambda raw: Bag(orjson.loads(raw)),
        mutable=True,
    )
    codec.vigilant_skip = _is_entry
    return codec


_lossy_members = st.uuids() | st.datetimes() | st.dates()
#: values that skip the round-trip check and whose nested members lose their type
entry_values = st.one_of(
    st.tuples(st.uuids(), st.dictionaries(st.sampled_from("ab"), _lossy_members, max_size=2)).map(
        list
    ),
    st.tuples(st.uuids(), st.lists(_lossy_members, max_size=2)),
    st.lists(st.uuids(), min_size=1, max_size=2).map(Bag),
)


def _context_value(field: str) -> st.SearchStrategy[Any]:
    if field == "extra":
        return extra_values
    return item_lists if field == "items" else context_ints


@st.composite
def contexts(draw: st.DrawFn, min_size: int = 1) -> dict[str, Any]:
    """A context of 1-2 distinct fields (``items`` included: unhashable values)."""
    names = draw(st.lists(fields, min_size=min_size, max_size=2, unique=True))
    return {name: draw(_context_value(name)) for name in names}


# ---------------------------------------------------------------------- the model


class _Tombstone:
    def __repr__(self) -> str:
        return "TOMBSTONE"


TOMBSTONE: Any = _Tombstone()
MISSING: Any = object()
#: end position of a stretch that still holds now
OPEN = math.inf


@dataclass(frozen=True)
class Entry:
    """One entry of the model log; its position in the list plays the part of seq."""

    ns: int
    field: str
    data: Any  # a private copy of the written value, or TOMBSTONE
    #: what a reopen reads back, where that differs from what was written
    stored: Any = MISSING


class Model:
    """The log as a list of entries in append order, and brute-force answers."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def append(self, ns: int, field: str, data: Any, stored: Any = MISSING) -> None:
        if data is not TOMBSTONE:
            data = copy.deepcopy(data)
        self.entries.append(Entry(ns, field, data, stored))

    def reopened(self) -> None:
        """After a reopen every entry reads back in its stored form."""
        self.entries = [
            e if e.stored is MISSING else Entry(e.ns, e.field, e.stored) for e in self.entries
        ]

    def of(self, ns: int) -> list[tuple[int, Entry]]:
        """(position, entry) for every entry of one namespace."""
        return [(i, e) for i, e in enumerate(self.entries) if e.ns == ns]

    def current(self, ns: int, field: str) -> Any:
        """Latest data of a field; TOMBSTONE if missing or deleted."""
        for entry in reversed(self.entries):
            if entry.ns == ns and entry.field == field:
                return entry.data
        return TOMBSTONE

    def available(self, ns: int, field: str) -> bool:
        return self.current(ns, field) is not TOMBSTONE

    def fields(self, ns: int) -> list[str]:
        """Available fields in order of first write."""
        order: list[str] = []
        for _, entry in self.of(ns):
            if entry.field not in order:
                order.append(entry.field)
        return [f for f in order if self.available(ns, f)]

    def history(self, ns: int) -> dict[str, list[tuple[bool, Any]]]:
        """field -> [(unavailable, data), ...] in append order."""
        out: dict[str, list[tuple[bool, Any]]] = {}
        for _, entry in self.of(ns):
            gone = entry.data is TOMBSTONE
            out.setdefault(entry.field, []).append((gone, None if gone else entry.data))
        return out

    # -- temporal queries (SPEC §7), by walking the log -------------------------------

    @staticmethod
    def _holds(state: dict[str, Any], context: dict[str, Any]) -> bool:
        return all(
            f in state and state[f] is not TOMBSTONE and state[f] == v for f, v in context.items()
        )

    def stretches(self, ns: int, context: dict[str, Any]) -> list[tuple[float, float]]:
        """Maximal [start, end) position intervals during which the context held.

        A stretch starts with the write that makes the context hold (that write is
        inside it) and ends with the write that breaks it (outside it).
        """
        state: dict[str, Any] = {}
        out: list[tuple[float, float]] = []
        holding = self._holds(state, context)  # an empty context holds from the start
        start: float = -1
        for position, entry in self.of(ns):
            state[entry.field] = entry.data
            now = self._holds(state, context)
            if now and not holding:
                start = position
            elif holding and not now:
                out.append((start, position))
            holding = now
        if holding:
            out.append((start, OPEN))
        return out

    def within(self, ns: int, context: dict[str, Any], field: str, strict: bool) -> Any:
        """``within(s, **context).field`` (or strict); MISSING when not found."""
        stretches = self.stretches(ns, context)
        if not stretches:
            return MISSING
        start, end = stretches[-1]
        last: tuple[int, Entry] | None = None
        for position, entry in self.of(ns):
            if entry.field == field and position < end:
                last = (position, entry)
        if last is None or (strict and last[0] < start):
            return MISSING
        return MISSING if last[1].data is TOMBSTONE else last[1].data

    def along(self, ns: int, context: dict[str, Any], field: str) -> list[Any]:
        """Values of the non-deleted writes of ``field`` made while ``context`` held."""
        stretches = self.stretches(ns, context)
        return [
            entry.data
            for position, entry in self.of(ns)
            if entry.field == field
            and entry.data is not TOMBSTONE
            and any(a <= position < b for a, b in stretches)
        ]


class BoomError(Exception):
    """Raised inside a ``with`` block on purpose."""


# ---------------------------------------------------------------------- the machine


class StoreMachine(RuleBasedStateMachine):
    """Random operations on a Store, each mirrored in :class:`Model`.

    Subclasses set ``backend_name``; every example gets its own temporary location.
    """

    backend_name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.tmpdir = tempfile.mkdtemp(prefix="appendmuch-model-")
        self.backend: Backend = ALL_FACTORIES[self.backend_name](Path(self.tmpdir))
        self.store: Store = self.backend.store(codec=entry_codec())
        self.storages: list[Storage] = []
        self.model = Model()
        #: live within objects kept across steps: (ns, context, strict, object)
        self.views: list[tuple[int, dict[str, Any], bool, Any]] = []
        self._attach()

    def _attach(self) -> None:
        self.storages = [self.store.storage(*ns) for ns in NAMESPACES]
        self.views = []

    def teardown(self) -> None:
        try:
            self.store.close()
            self.backend.cleanup()
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def s(self, ns: int) -> Storage:
        return self.storages[ns]

    # -- writes ------------------------------------------------------------------------

    @initialize(
        writes=st.lists(st.tuples(ns_index, scalar_fields, small_ints), min_size=1, max_size=12)
    )
    def start(self, writes: list[tuple[int, str, int]]) -> None:
        """Every run begins with some writes so the first queries have something to see."""
        for ns, field, value in writes:
            setattr(self.s(ns), field, value)
            self.model.append(ns, field, value)

    @rule(ns=ns_index, field=scalar_fields, value=small_ints)
    def set_scalar(self, ns: int, field: str, value: int) -> None:
        """A plain assignment appends one entry."""
        s = self.s(ns)
        before = s.__history__()
        before_len = len(before[field]) if field in before else 0
        setattr(s, field, value)
        self.model.append(ns, field, value)
        # a history snapshot taken earlier does not see the write (SPEC §6)
        assert (len(before[field]) if field in before else 0) == before_len

    @rule(
        ns=ns_index,
        writes=st.lists(st.tuples(scalar_fields, small_ints), min_size=2, max_size=6),
    )
    def write_burst(self, ns: int, writes: list[tuple[str, int]]) -> None:
        """Several plain assignments in a row, so that stretches form and end."""
        s = self.s(ns)
        for field, value in writes:
            setattr(s, field, value)
            self.model.append(ns, field, value)

    @rule(ns=ns_index, value=item_lists)
    def set_items(self, ns: int, value: list[int]) -> None:
        """Writing a mutable value is allowed outside ``with``; it is stored as a copy."""
        mine = list(value)
        self.s(ns).items = mine
        mine.append(99)  # the caller's object is not the stored one (SPEC §4)
        self.model.append(ns, "items", value)

    @rule(ns=ns_index, value=extra_values)
    def set_extra(self, ns: int, value: Any) -> None:
        """A value kept decoded while latest, as stored bytes once superseded."""
        mine = copy.deepcopy(value)
        self.s(ns).extra = mine
        if isinstance(mine, dict):
            mine["b"] = [99]  # the caller's object is not the stored one
        self.model.append(ns, "extra", value)

    @rule(ns=ns_index, value=entry_values)
    def set_entry(self, ns: int, value: Any) -> None:
        """A value exempt from the round-trip check: kept as assigned in this session
        (every version of the field alike), read back as stored after a reopen."""
        mine = copy.deepcopy(value)
        self.s(ns).entry = mine
        if isinstance(mine, list):
            mine.append(99)  # the caller's object is not the stored one
        codec = self.store.codec
        self.model.append(ns, "entry", value, codec.decode(codec.encode(value)))

    @rule(ns=ns_index, context=contexts(min_size=0))
    def mutate_handed_out(self, ns: int, context: dict[str, Any]) -> None:
        """Mutating values from history, within and along changes nothing stored."""
        s = self.s(ns)
        handed: list[Any] = [v.data for values in s.__history__().values() for v in values]
        view = within(s, **context)
        handed += [view.get(field) for field in FIELDS]
        handed += [value for value, _ in within.along(s, "extra")]
        handed += [ctx.get("items") for _, ctx in within.along(s, "round")]
        for value in handed:
            _scribble(value)

    @rule(ns=ns_index, field=fields)
    def delete(self, ns: int, field: str) -> None:
        """``del`` appends a tombstone, or raises AttributeError and appends nothing."""
        s = self.s(ns)
        if self.model.available(ns, field):
            delattr(s, field)
            self.model.append(ns, field, TOMBSTONE)
        else:
            with pytest.raises(AttributeError):
                delattr(s, field)

    @rule(ns=ns_index, k=small_ints)
    def mutate(self, ns: int, k: int) -> None:
        """An in-place append inside ``with`` is written once at exit."""
        s = self.s(ns)
        current = self.model.current(ns, "items")
        if current is TOMBSTONE:
            with pytest.raises(AttributeError), s:
                s.items.append(k)
            return
        with s:
            s.items.append(k)
        self.model.append(ns, "items", [*current, k])

    @rule(ns=ns_index, k=small_ints)
    def mutate_then_raise(self, ns: int, k: int) -> None:
        """A block left by an exception writes none of its mutations."""
        s = self.s(ns)
        expected: type[Exception] = AttributeError
        if self.model.available(ns, "items"):
            expected = BoomError
        with pytest.raises(expected), s:
            s.items.append(k)
            raise BoomError

    @rule(ns=ns_index)
    def read_in_block(self, ns: int) -> None:
        """Reading a mutable value without changing it writes nothing."""
        s = self.s(ns)
        current = self.model.current(ns, "items")
        with s:
            if current is TOMBSTONE:
                assert s.get("items", MISSING) is MISSING
            else:
                assert s.items == current
                assert s.items is s.items  # one working copy per block (SPEC §4)

    @rule(ns=ns_index, value=item_lists, k=small_ints)
    def assign_in_block(self, ns: int, value: list[int], k: int) -> None:
        """Assignment inside ``with`` writes at once; mutating it writes again at exit."""
        s = self.s(ns)
        mine = list(value)
        with s:
            s.items = mine
            s.items.append(k)
        self.model.append(ns, "items", value)
        self.model.append(ns, "items", [*value, k])
        mine.append(99)  # mutating the object after the block changes nothing stored

    @rule(ns=ns_index, field=scalar_fields, value=small_ints, k=small_ints)
    def mixed_block(self, ns: int, field: str, value: int, k: int) -> None:
        """A scalar assigned in a block is written at once, the mutation at exit."""
        s = self.s(ns)
        current = self.model.current(ns, "items")
        if current is TOMBSTONE:
            with pytest.raises(AttributeError), s:
                setattr(s, field, value)
                s.items.append(k)
            if not kept_to_the_end(self.store):
                self.model.append(ns, field, value)  # written before the failing read
            # (shared mode: a block that fails writes nothing, its assignment neither)
            return
        with s:
            setattr(s, field, value)
            s.items.append(k)
        self.model.append(ns, field, value)
        self.model.append(ns, "items", [*current, k])

    @rule(ns=ns_index, k1=small_ints, k2=small_ints)
    def nested_blocks(self, ns: int, k1: int, k2: int) -> None:
        """Nested blocks on two Storage objects of one namespace lose no mutation.

        Per design.md the working copy is per namespace and every normal block exit
        writes the changed copy: the inner exit writes ``+[k1]``, the outer
        ``+[k1, k2]``.
        """
        s = self.s(ns)
        other = self.store.storage(*NAMESPACES[ns])
        current = self.model.current(ns, "items")
        if current is TOMBSTONE:
            return
        with s:
            with other:
                other.items.append(k1)
            s.items.append(k2)
        self.model.append(ns, "items", [*current, k1])
        self.model.append(ns, "items", [*current, k1, k2])

    @rule()
    def reopen(self) -> None:
        """Close the Store and open a new one on the same log: nothing is lost."""
        self.store = self.backend.reopen(self.store, codec=entry_codec())
        self.model.reopened()
        self._attach()

    # -- queries -----------------------------------------------------------------------

    def _check_within(self, ns: int, context: dict[str, Any], strict: bool, view: Any) -> None:
        for field in FIELDS:
            expected = self.model.within(ns, context, field, strict)
            got = view.get(field, MISSING)
            where = (
                f"{'within.strict' if strict else 'within'}({NAMESPACES[ns]}, {context}).{field}"
            )
            assert _same(got, expected), f"{where}: store {got!r}, model {expected!r}"
            if expected is MISSING:
                with pytest.raises(AttributeError):
                    getattr(view, field)
            else:
                assert _typed_equal(getattr(view, field), expected), where

    @rule(ns=ns_index, context=contexts(), strict=st.booleans())
    def query_within(self, ns: int, context: dict[str, Any], strict: bool) -> None:
        """``within`` / ``within.strict`` agree with the brute-force stretch walk."""
        factory = within.strict if strict else within
        self._check_within(ns, context, strict, factory(self.s(ns), **context))

    @rule(ns=ns_index, strict=st.booleans())
    def query_within_empty(self, ns: int, strict: bool) -> None:
        """``within(s)`` with no context gives the current values."""
        factory = within.strict if strict else within
        self._check_within(ns, {}, strict, factory(self.s(ns)))

    @rule(ns=ns_index, context=contexts(), strict=st.booleans())
    def keep_view(self, ns: int, context: dict[str, Any], strict: bool) -> None:
        """Keep a within object: it must stay live as the log grows (SPEC §7)."""
        factory = within.strict if strict else within
        self.views = [*self.views[-2:], (ns, context, strict, factory(self.s(ns), **context))]

    @invariant()
    def within_round(self) -> None:
        """``within(s, round=r)`` and its strict form, for every written round value."""
        for ns in range(len(NAMESPACES)):
            for value in range(3):
                self._check_within(ns, {"round": value}, False, within(self.s(ns), round=value))
                self._check_within(
                    ns, {"round": value}, True, within.strict(self.s(ns), round=value)
                )

    @precondition(lambda self: bool(self.views))
    @invariant()
    def live_views(self) -> None:
        for ns, context, strict, view in self.views:
            self._check_within(ns, context, strict, view)

    @rule(ns=ns_index, field=fields, other=fields, strict=st.booleans())
    def query_along(self, ns: int, field: str, other: str, strict: bool) -> None:
        """``within.along(s, f)``: one pair per non-deleted write of f, in order."""
        factory = within.strict if strict else within
        pairs = list(factory.along(self.s(ns), field))
        assert _all_typed_equal([v for v, _ in pairs], self.model.along(ns, {}, field))
        for value, ctx in pairs:
            expected = self.model.within(ns, {field: value}, other, strict)
            assert _same(ctx.get(other, MISSING), expected), (value, other)

    @rule(ns=ns_index, context=contexts(), field=fields, other=fields, strict=st.booleans())
    def query_context_along(
        self, ns: int, context: dict[str, Any], field: str, other: str, strict: bool
    ) -> None:
        """``within(s, **ctx).along(f)``: writes of f made while ctx held."""
        factory = within.strict if strict else within
        pairs = list(factory(self.s(ns), **context).along(field))
        assert _all_typed_equal([v for v, _ in pairs], self.model.along(ns, context, field))
        for value, ctx in pairs:
            expected = self.model.within(ns, {**context, field: value}, other, strict)
            assert _same(ctx.get(other, MISSING), expected), (value, other)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def current_values(self) -> None:
        """Every field reads as its latest entry, through old and new Storage objects."""
        for ns, namespace in enumerate(NAMESPACES):
            for s in (self.s(ns), self.store.storage(*namespace)):
                for field in SCALAR_FIELDS:
                    expected = self.model.current(ns, field)
                    if expected is TOMBSTONE:
                        with pytest.raises(AttributeError):
                            getattr(s, field)
                        assert s.get(field, MISSING) is MISSING
                    else:
                        assert getattr(s, field) == expected
                        assert s.get(field, MISSING) == expected
                items = self.model.current(ns, "items")
                if items is not TOMBSTONE:
                    with pytest.raises(TypeError, match="context manager"):
                        s.items
                with s:
                    assert s.get("items", MISSING) == (MISSING if items is TOMBSTONE else items)
                    for field in ("extra", "entry"):
                        expected = self.model.current(ns, field)
                        got = s.get(field, MISSING)
                        assert _same(got, MISSING if expected is TOMBSTONE else expected), (
                            field,
                            got,
                            expected,
                        )

    @invariant()
    def fields_and_bool(self) -> None:
        for ns in range(len(NAMESPACES)):
            expected = self.model.fields(ns)
            assert self.s(ns).__fields__() == expected
            assert bool(self.s(ns)) is bool(expected)

    def histories(self) -> Iterator[tuple[int, str, list[Value], dict[str, Any]]]:
        """(namespace index, field, its Values, the model's history of the namespace)
        for every field, once the namespace's fields are the model's."""
        for ns in range(len(NAMESPACES)):
            history = self.s(ns).__history__()
            model = self.model.history(ns)
            assert sorted(history) == sorted(model)
            for field, values in history.items():
                yield ns, field, values, model

    @invariant()
    def history_matches(self) -> None:
        """Histories equal the model's entries; seqs are unique and order the whole log."""
        merged: list[tuple[int, int, str, bool, Any]] = []
        for ns, field, values, model in self.histories():
            seqs = [v.seq for v in values]
            assert seqs == sorted(set(seqs)), f"{field}: seqs not strictly increasing"
            got = [(v.unavailable, v.data) for v in values]
            assert len(got) == len(model[field]), field
            assert all(map(_typed_equal, got, model[field])), (field, got, model[field])
            for v in values:
                assert isinstance(v.time, float)
                assert v.context.startswith(f"{__name__}."), v.context
                merged.append((v.seq, ns, field, v.unavailable, v.data))
        seqs = [m[0] for m in merged]
        assert len(seqs) == len(set(seqs)), "a seq is used twice"
        merged.sort(key=lambda m: m[0])
        expected = [
            (e.ns, e.field, e.data is TOMBSTONE, None if e.data is TOMBSTONE else e.data)
            for e in self.model.entries
        ]
        assert [m[1:] for m in merged] == expected


def _same(got: Any, expected: Any) -> bool:
    if expected is MISSING or got is MISSING:
        return got is expected
    return _typed_equal(got, expected)


def _typed_equal(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (a tuple is not a list; dict key
    order does not matter, as for ``==``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_typed_equal, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_typed_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _all_typed_equal(got: list[Any], expected: list[Any]) -> bool:
    return len(got) == len(expected) and all(map(_typed_equal, got, expected))


def _scribble(value: Any) -> None:
    """Mutate a handed-out value in place, wherever it can be mutated."""
    if isinstance(value, list):
        for member in value:
            _scribble(member)
        value.append(99)
    elif isinstance(value, dict):
        for member in value.values():
            _scribble(member)
        value["z"] = [99]


def _settings(name: str) -> settings:
    return settings(
        max_examples=MAX_EXAMPLES.get(name, OTHER_BACKEND_EXAMPLES),
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_store_matches_model(backend_name: str) -> None:
    """Random operation sequences: the Store always answers like the model log."""
    machine = type(f"StoreMachine_{backend_name}", (StoreMachine,), {"backend_name": backend_name})
    run_state_machine_as_test(machine, settings=_settings(backend_name))


# ---------------------------------------------------------------------- JSON round trip

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=5), children, max_size=4
    )


def _json_like(depth: int) -> st.SearchStrategy[Any]:
    """Scalars, and lists / str-keyed dicts nested up to ``depth`` levels."""
    if depth == 0:
        return _scalars
    return _scalars | _containers(_json_like(depth - 1))


json_values = _json_like(3)


def _identical(a: Any, b: Any) -> bool:
    """Equal with exact types (True is not 1, 1 is not 1.0) and the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_identical, a, b))
    if isinstance(a, dict):
        return set(a) == set(b) and all(_identical(a[k], b[k]) for k in a)
    return bool(a == b)


def _reordered(value: Any) -> Any:
    """An equal deep copy whose dicts have their keys inserted in reverse order."""
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    return value


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(values=st.lists(json_values, min_size=1, max_size=4))
def test_json_values_round_trip(backend_name: str, values: list[Any]) -> None:
    """JSON-like values read back equal (types kept) before and after a reopen, and
    their encoding does not depend on dict insertion order (SPEC §9)."""
    tmpdir = tempfile.mkdtemp(prefix="appendmuch-json-")
    backend = ALL_FACTORIES[backend_name](Path(tmpdir))
    store = backend.store()
    try:
        codec = store.codec
        for value in values:
            # equal values encode identically, whatever the dict insertion order
            assert codec.encode(value) == codec.encode(_reordered(value))
        s = store.storage("json", "values")
        for i, value in enumerate(values):
            setattr(s, f"v{i}", value)
        for attempt in ("written", "reopened"):
            with s:
                for i, value in enumerate(values):
                    got = getattr(s, f"v{i}")
                    assert _identical(got, value), (attempt, i, got, value)
            history = s.__history__()
            for i, value in enumerate(values):
                (entry,) = history[f"v{i}"]
                assert _identical(entry.data, value), (attempt, i)
            if attempt == "written":
                store = backend.reopen(store)
                s = store.storage("json", "values")
        store.close()
        # the stored bytes are exactly the deterministic encoding
        assert [row[3] for row in backend.raw_rows()] == [codec.encode(v) for v in values]
    finally:
        store.close()
        backend.cleanup()
        shutil.rmtree(tmpdir, ignore_errors=True)


# ---------------------------------------------------------------------- subclasses and numpy

try:
    import numpy
except ImportError:  # numpy scalars are generated only where numpy imports
    numpy = None


class _Colour(str, enum.Enum):  # noqa: UP042 (the mixin form applications use)
    RED = "red"
    BLUE = "blue"


class _Level(enum.IntEnum):
    LOW = 1
    HIGH = 3


class _Name(str):
    pass


class _Count(int):
    pass


class _Ratio(float):
    pass


_Pair = collections.namedtuple("_Pair", "a b")
_int64 = st.integers(-(2**63), 2**63 - 1)
_finite = st.floats(allow_nan=False, allow_infinity=False)

#: leaves whose type changes on a round trip: subclasses of built-in scalars and numpy
#: scalars
_odd_leaves: list[st.SearchStrategy[Any]] = [
    st.text(max_size=6).map(_Name),
    _int64.map(_Count),
    _finite.map(_Ratio),
    st.sampled_from([*_Colour, *_Level]),
]
if numpy is not None:
    _odd_leaves += [
        _int64.map(numpy.int64),
        st.integers(0, 255).map(numpy.uint8),
        _finite.map(numpy.float64),
        st.floats(width=32, allow_nan=False, allow_infinity=False).map(numpy.float32),
        st.booleans().map(numpy.bool_),
        st.text(max_size=6).map(numpy.str_),
    ]
_odd_leaf = st.one_of(_odd_leaves)
#: datetimes in a named zone, folds and gaps included (stored with a fixed offset);
#: only at the top level: JSON containers cannot hold datetimes
_zoned = st.datetimes(
    timezones=st.sampled_from(["Europe/Berlin", "America/New_York"]).map(ZoneInfo)
)
#: containers whose subclass-ness would be lost: always refused
_refused = st.one_of(
    st.dictionaries(st.text(max_size=3), _scalars, max_size=2).map(collections.OrderedDict),
    st.tuples(_scalars, _scalars).map(lambda t: _Pair(*t)),
)


def _odd(depth: int) -> st.SearchStrategy[Any]:
    """Odd leaves in lists and dicts (tuples only at the top: JSON nests no tuples)."""
    leaves = _scalars | _odd_leaf
    if depth == 0:
        return leaves
    children = _odd(depth - 1)
    return (
        leaves
        | st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=3) | st.text(max_size=3).map(_Name), children, max_size=3
        )
    )


_odd_values = _odd(2) | st.lists(_scalars | _odd_leaf, max_size=3).map(tuple)


_PLAIN_TYPES = (int, float, str, bool, type(None), dt.datetime, list, dict, tuple)


def _all_plain(value: Any) -> bool:
    """True when every part of ``value`` has exactly a built-in type (no subclass)."""
    if type(value) not in _PLAIN_TYPES:
        return False
    if type(value) is dict:
        return all(type(k) is str and _all_plain(v) for k, v in value.items())
    if type(value) in (list, tuple):
        return all(map(_all_plain, value))
    if type(value) is dt.datetime:
        return value.tzinfo is None or type(value.tzinfo) is dt.timezone
    return True


def _has(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, kinds):
        return True
    if isinstance(value, dict):
        return any(_has(v, kinds) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has(v, kinds) for v in value)
    return False


def _exact(a: Any, b: Any) -> bool:
    """Equal with exactly the same types at every depth, tz included."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_exact, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_exact(a[k], b[k]) for k in a)
    if isinstance(a, dt.datetime):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold
    return _identical(a, b)


def _same_value(got: Any, value: Any) -> bool:
    """``got == value``; for a zoned datetime: the same wall time and UTC offset (a time
    in a fold or gap never compares equal across zones, PEP 495)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return (got.replace(tzinfo=None), got.utcoffset()) == (
            value.replace(tzinfo=None, fold=0),
            value.utcoffset(),
        )
    return bool(got == value)


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    values=st.lists(
        _odd_values | _zoned | _refused | st.lists(_refused, max_size=2), min_size=1, max_size=4
    )
)
def test_subclass_values_read_the_same_before_and_after_reopen(
    backend_name: str, values: list[Any]
) -> None:
    """Values with subclasses of built-in types and numpy scalars at any depth: the
    value held in memory is exactly (types included) what a reopen decodes, it is made
    only of plain built-in types, and it equals what was assigned.  Container
    subclasses are refused and leave nothing behind (README "Values and custom types")."""
    tmpdir = tempfile.mkdtemp(prefix="appendmuch-odd-")
    backend = ALL_FACTORIES[backend_name](Path(tmpdir))
    store = backend.store()
    try:
        s = store.storage("odd", "values")
        stored: dict[str, Any] = {}
        for i, value in enumerate(values):
            field = f"v{i}"
            try:
                setattr(s, field, value)
            except (UnsupportedTypeError, RoundTripError):
                # refused only for container subclasses
                assert _has(value, (collections.OrderedDict, _Pair)), value
                assert field not in s.__history__()
                continue
            assert not _has(value, (collections.OrderedDict, _Pair)), value
            stored[field] = value
        with s:
            in_memory = {field: getattr(s, field) for field in stored}
        for field, value in stored.items():
            got = in_memory[field]
            assert _all_plain(got), (field, got)
            assert _same_value(got, value), (field, got, value)
            assert _exact(s.__history__()[field][0].data, got)
        store = backend.reopen(store)
        s = store.storage("odd", "values")
        with s:
            for field, got in in_memory.items():
                again = getattr(s, field)
                assert _exact(again, got), (field, again, got)
    finally:
        store.close()
        backend.cleanup()
        shutil.rmtree(tmpdir, ignore_errors=True)
