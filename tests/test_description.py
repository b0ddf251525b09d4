"""Every code example of the public description runs verbatim and prints what it says.

Each example section is kept below as a string, copied exactly from
``seed/appendmuch-0.0.8-description.txt`` (comments included), and ``exec``-ed in a
fresh globals dict ``{"__name__": "__main__"}``, as if it were a script.  A section
that uses names defined by an earlier section first runs a *prelude*: the verbatim
code of the sections it depends on, in the same globals.

"Mutable values", "Temporal queries with within" and the ``within.strict`` block each
run after the Quick start only, never after one another.  Run back to back, the
``within.strict`` block's ``within.strict.along(player, "round")`` would meet the
earlier ``round=2`` stretch, in which no ``choice`` was written, and ``ctx.choice``
would raise AttributeError: that is the specified strict semantics (SPEC §7), not a
bug, but it is not what the example shows.

Besides the examples: the Quick start on ``Sqlite3("db.sqlite3")`` (the alternative
its comment offers), and the "Custom types" paragraph (every listed type round-trips,
the values named as unavailable raise and store nothing).
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import io
import math
import random
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from appendmuch import Sqlite3, Storage, Store, Value
from backends import Backend
from snapshots import unchanged

# ---------------------------------------------------------------- the examples, verbatim

QUICK_START = """\
from appendmuch import Memory, Sqlite3, Store

store = Store(Memory())  # or Store(Sqlite3("db.sqlite3"))

# Storage instances provide attribute-based access to namespaced data
player = store.storage("game", "player1")
player.score = 100
player.name = "Alice"

print(player.score)  # 100
print(player.name)   # Alice
"""

MUTABLE_VALUES = """\
with player:
    player.items = ["sword"]
    player.items.append("shield")
# Changes are flushed here

with player:
    print(player.items)  # ['sword', 'shield']
"""

CHANGE_TRACKING = """\
def update(ns, key, value):
    print(f"{key!r} on {ns!r} is now {value.data!r}")

store2 = Store(Memory(), on_change=update)
customer = store2.storage("firm", "customer")

customer.age = 37
customer.name_ = "John Doe"
"""

WITHIN = """\
from appendmuch import within

player.round = 1
player.score = 10
player.round = 2
player.score = 25

print(within(player, round=1).score)  # 10
print(within(player, round=2).score)  # 25

for round_val, ctx in within.along(player, "round"):
    print(f"Round {round_val}: score={ctx.score}")
"""

WITHIN_STRICT = """\
player.treatment = "high"
player.round = 1
player.choice = "A"

print(within(player, round=1).treatment)         # high
print(within.strict(player, round=1).choice)     # A
print(within.strict(player, round=1).get("treatment"))  # None

for round_val, ctx in within.strict.along(player, "round"):
    print(f"Round {round_val}: choice={ctx.choice}")
"""

#: the first line of the within section: all the strict block needs from it
WITHIN_IMPORT = "from appendmuch import within\n"

HISTORY = """\
player.__history__()["score"]
# Returns:
# (Value(time=1771028451.3298147, unavailable=False, data=10, context='__main__.<module>:14'), ...)
"""

VIRTUAL_1 = """\
# Define helper
def get_group(player):
    return store.storage("game", player._group)

# Initialize Storage instances
player2 = store.storage("game", "player2", virtual={"group": get_group})
player3 = store.storage("game", "player3", virtual={"group": get_group})

# Note the underscore before "group"; this is accessed by get_group:
player2._group = player3._group = "group1"

# This is essentially get_group(player2).budget = 42.7:
player2.group.budget = 42.7

# Access from different player with same _group:
print(player3.group.budget)  # Also 42.7
"""

VIRTUAL_2 = """\
player = store.storage("game", "player1")
player.score = 100

# As a decorator:
@player.virtual
def score_doubled(p):
    return p.score * 2

print(player.score_doubled)  # 200

# With an explicit name:
@player.virtual("bonus")
def compute_bonus(p):
    return p.score * 0.1

# Or directly:
player.virtual["penalty"] = lambda p: p.score * -0.05

# Remove when no longer needed:
del player.virtual["penalty"]
"""

VIRTUAL_3 = """\
def get_members(group):
    return [store.storage("game", p, virtual={"group": get_group}) for p in group._members]

def get_group(player):
    return store.storage("game", player._group, virtual={"members": get_members})

...

with player2.group:
    player2.group._members = ["player2", "player3"]

with player3.group as g:
    print(g.members)
    print(g.members[0].group.budget)  # Ha!
"""

#: block 1's lines that create player2/player3, set ``_group`` and the budget
VIRTUAL_1_SETUP = """\
# Initialize Storage instances
player2 = store.storage("game", "player2", virtual={"group": get_group})
player3 = store.storage("game", "player3", virtual={"group": get_group})

# Note the underscore before "group"; this is accessed by get_group:
player2._group = player3._group = "group1"

# This is essentially get_group(player2).budget = 42.7:
player2.group.budget = 42.7
"""

QUICK_START_OUTPUT = "100\nAlice\n"

# ---------------------------------------------------------------- helpers


def run(source: str, namespace: dict[str, Any], filename: str = "<example>") -> str:
    """Execute ``source`` as a script in ``namespace`` and return what it printed."""
    code = compile(source, filename, "exec")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, namespace)
    return out.getvalue()


def fresh() -> dict[str, Any]:
    """The globals of a new script."""
    return {"__name__": "__main__"}


def after_quick_start() -> dict[str, Any]:
    """Globals in which the Quick start has just run (and printed what it says)."""
    namespace = fresh()
    assert run(QUICK_START, namespace, "<quick start>") == QUICK_START_OUTPUT
    return namespace


def line_of(source: str, text: str) -> int:
    """The 1-based number of the only line of ``source`` that is exactly ``text``."""
    lines = source.splitlines()
    assert lines.count(text) == 1, text
    return lines.index(text) + 1


# ---------------------------------------------------------------- the sections


class TestExamples:
    """Each example section runs verbatim and prints exactly the commented output."""

    def test_quick_start(self) -> None:
        """Attribute writes on a Storage are read back: prints 100 then Alice."""
        namespace = fresh()
        assert run(QUICK_START, namespace) == "100\nAlice\n"
        player = namespace["player"]
        assert repr(player) == "Storage('game', 'player1')"
        assert player.__fields__() == ["score", "name"]

    def test_mutable_values(self) -> None:
        """A list assigned and appended to inside ``with`` is persisted on exit."""
        namespace = after_quick_start()
        assert run(MUTABLE_VALUES, namespace) == "['sword', 'shield']\n"
        player = namespace["player"]
        # the stored value (not only a working copy) holds both items
        fresh_view = namespace["store"].storage("game", "player1")
        with fresh_view:
            assert fresh_view.items == ["sword", "shield"]
        assert player.__history__()["items"][-1].data == ["sword", "shield"]

    def test_change_tracking(self) -> None:
        """``on_change`` is called once per write with the namespace, field and Value."""
        namespace = after_quick_start()
        assert run(CHANGE_TRACKING, namespace) == (
            "'age' on ('firm', 'customer') is now 37\n"
            "'name_' on ('firm', 'customer') is now 'John Doe'\n"
        )

    def test_temporal_queries_with_within(self) -> None:
        """``within`` and ``within.along`` give the score of each round."""
        namespace = after_quick_start()
        assert run(WITHIN, namespace) == ("10\n25\nRound 1: score=10\nRound 2: score=25\n")

    def test_within_strict(self) -> None:
        """``within.strict`` only sees writes made under the context.

        Runs after the Quick start and the within section's import line only; after
        the whole within section, ``within.strict.along`` would reach ``round=2``,
        where no ``choice`` was written, and raise AttributeError (SPEC §7).
        """
        namespace = after_quick_start()
        assert run(WITHIN_IMPORT, namespace) == ""
        assert run(WITHIN_STRICT, namespace) == ("high\nA\nNone\nRound 1: choice=A\n")

    def test_within_strict_after_within_section_meets_round_without_choice(self) -> None:
        """Back to back with the within section, strict ``along`` raises at round 2.

        Documents why the strict block is not run after the within section: the
        stretch ``round=2`` holds no write of ``choice``.
        """
        namespace = after_quick_start()
        run(WITHIN, namespace)
        with pytest.raises(AttributeError):
            run(WITHIN_STRICT, namespace)

    def test_virtual_fields_block_1(self) -> None:
        """A virtual field returning another Storage: both players share a group."""
        namespace = after_quick_start()
        assert run(VIRTUAL_1, namespace) == "42.7\n"
        store = namespace["store"]
        assert store.storage("game", "group1").budget == 42.7

    def test_virtual_fields_block_2(self) -> None:
        """``storage.virtual`` as decorator, with a name, as a dict, and ``del``."""
        namespace = after_quick_start()
        assert run(VIRTUAL_2, namespace) == "200\n"
        player = namespace["player"]
        assert player.bonus == pytest.approx(10.0)
        assert "penalty" not in player.virtual
        with pytest.raises(AttributeError):
            player.penalty
        assert set(player.virtual) == {"score_doubled", "bonus"}

    def test_virtual_fields_block_3(self) -> None:
        """Indirection between Storage objects through stored names.

        The example's ``...`` elides re-creating player2/player3 with the new
        ``get_group``; it is replaced by block 1's lines that create them, set
        ``_group`` and the budget.
        """
        assert VIRTUAL_3.count("\n...\n") == 1
        source = VIRTUAL_3.replace("\n...\n", "\n" + VIRTUAL_1_SETUP)
        namespace = after_quick_start()
        assert run(source, namespace) == (
            "[Storage('game', 'player2'), Storage('game', 'player3')]\n42.7\n"
        )


class TestInspectingHistory:
    """``__history__()["score"]``: a tuple of Values sorted by seq, with contexts."""

    CONTEXT = re.compile(r"__main__\.<module>:(\d+)")

    def history_of_score(self, namespace: dict[str, Any]) -> tuple[Value, ...]:
        """Run the example's expression and return its value (it prints nothing)."""
        assert run(HISTORY, namespace) == ""
        player = namespace["player"]
        result = eval(HISTORY.splitlines()[0], namespace)  # the example's expression
        assert result == player.__history__()["score"]
        return result

    def test_after_quick_start(self) -> None:
        """After the Quick start alone: one Value, 100, written at its real line."""
        namespace = after_quick_start()
        history = self.history_of_score(namespace)
        assert isinstance(history, tuple)
        assert len(history) == 1
        (value,) = history
        assert isinstance(value, Value)
        assert value.data == 100
        assert value.unavailable is False
        assert isinstance(value.time, float)
        assert value.context == (f"__main__.<module>:{line_of(QUICK_START, 'player.score = 100')}")

    def test_after_quick_start_and_within(self) -> None:
        """After the Quick start and the within section: 100, 10, 25 in seq order,
        each with the line of its assignment in the script that made it."""
        namespace = after_quick_start()
        run(WITHIN, namespace)
        history = self.history_of_score(namespace)
        assert isinstance(history, tuple)
        assert all(isinstance(v, Value) for v in history)
        assert [v.data for v in history] == [100, 10, 25]
        assert all(v.unavailable is False for v in history)
        seqs = [v.seq for v in history]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert [v.context for v in history] == [
            f"__main__.<module>:{line_of(QUICK_START, 'player.score = 100')}",
            f"__main__.<module>:{line_of(WITHIN, 'player.score = 10')}",
            f"__main__.<module>:{line_of(WITHIN, 'player.score = 25')}",
        ]
        ten = history[1]
        assert repr(ten) == (
            f"Value(time={ten.time!r}, unavailable=False, data=10, "
            f"context={ten.context!r}, seq={ten.seq!r})"
        )
        assert self.CONTEXT.fullmatch(ten.context)

    def test_snapshot_is_read_only(self) -> None:
        """The mapping returned by ``__history__()`` cannot be changed."""
        namespace = after_quick_start()
        history = namespace["player"].__history__()
        with pytest.raises(TypeError):
            history["score"] = ()  # type: ignore[index]
        assert [v.data for v in history["score"]] == [100]


class TestQuickStartOnSqlite:
    """The Quick start with the ``Store(Sqlite3("db.sqlite3"))`` its comment offers."""

    def test_prints_the_same_and_persists(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Same output; after closing, db.sqlite3 holds the rows and a new Store
        opened on it reads them back."""
        monkeypatch.chdir(tmp_path)
        assert QUICK_START.count("store = Store(Memory())") == 1
        source = QUICK_START.replace(
            "store = Store(Memory())", 'store = Store(Sqlite3("db.sqlite3"))'
        )
        namespace = fresh()
        assert run(source, namespace) == QUICK_START_OUTPUT
        store = namespace["store"]
        assert isinstance(store.driver, Sqlite3)
        store.close()

        database = tmp_path / "db.sqlite3"
        assert database.is_file()
        driver = Sqlite3(database)
        try:
            rows = [tuple(row) for row in driver.load_rows()]
        finally:
            driver.close()
        assert [(r[1], r[2]) for r in rows] == [
            ("game/player1", "score"),
            ("game/player1", "name"),
        ]
        assert [store.codec.decode(r[3]) for r in rows] == [100, "Alice"]

        reopened = Store(Sqlite3(database))
        try:
            player = reopened.storage("game", "player1")
            assert player.score == 100
            assert player.name == "Alice"
            assert [v.data for v in player.__history__()["score"]] == [100]
        finally:
            reopened.close()


# ---------------------------------------------------------------- custom types

#: one value of every type the description lists as storable out of the box
LISTED_TYPES: dict[str, Any] = {
    "a_bool": True,
    "an_int": -(2**40),
    "a_float": 2.5,
    "a_str": "héllo",
    "a_tuple": (1, "two", 3.0, None),
    "some_bytes": b"\x00\xffbytes",
    "a_complex": complex(1.5, -2.0),
    "a_none": None,
    "a_decimal": decimal.Decimal("3.140"),
    "a_frozenset": frozenset({1, 2, 3}),
    "a_datetime": datetime.datetime(2026, 2, 14, 1, 2, 3, 456789),
    "a_date": datetime.date(2026, 2, 14),
    "a_time": datetime.time(13, 14, 15, 16),
    "a_uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "a_list": [1, "a", [2, 3]],
    "a_dict": {"k": 1, "nested": {"x": [1, 2]}},
    "a_bytearray": bytearray(b"mutable bytes"),
    "a_set": {"x", "y", "z"},
    "a_random": random.Random(20260214),
}


def _same(expected: Any, got: Any) -> bool:
    """Equal and of the same type; Random objects compare by their state."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, random.Random):
        return got.getstate() == expected.getstate()
    return bool(got == expected)


def _read_all(storage: Storage) -> dict[str, Any]:
    with storage:
        return {name: getattr(storage, name) for name in LISTED_TYPES}


class TestCustomTypesNote:
    """The types listed under "Custom types" can be stored; the values it names as
    unavailable raise and store nothing."""

    def test_every_listed_type_round_trips(self, backend: Backend) -> None:
        """Each listed type is read back equal, with its type, before and after a
        reopen (Random: same getstate())."""
        store = backend.store()
        values = store.storage("types", "one")
        for name, value in LISTED_TYPES.items():
            setattr(values, name, value)

        def mismatches() -> dict[str, Any]:
            read = _read_all(store.storage("types", "one"))
            return {
                name: read[name]
                for name, expected in LISTED_TYPES.items()
                if not _same(expected, read[name])
            }

        assert mismatches() == {}
        store = backend.reopen(store)
        assert mismatches() == {}
        store.close()

    @pytest.mark.parametrize(
        "bad",
        [math.inf, {1: "non-str key"}, [random.Random(7)]],
        ids=["math.inf", "dict-with-non-str-keys", "list-of-Random"],
    )
    def test_unavailable_values_raise_and_store_nothing(self, backend: Backend, bad: Any) -> None:
        """Assigning an unavailable value raises ValueError or TypeError and leaves
        the store (cache, rows, sequence counter) exactly as it was."""
        store = backend.store()
        s = store.storage("types", "bad")
        s.kept = 1
        with unchanged(store):
            with pytest.raises((ValueError, TypeError)):
                s.x = bad
        assert s.get("x") is None
        assert "x" not in s.__history__()
        store = backend.reopen(store)
        s = store.storage("types", "bad")
        assert s.get("x") is None
        assert s.kept == 1
        assert [(r[1], r[2]) for r in backend.raw_rows()] == [("types/bad", "kept")]
        store.close()
