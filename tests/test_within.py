"""Temporal queries (SPEC §7, §12): ``within``, ``within.strict`` and ``.along``.

A context ``{f1: v1, ...}`` holds at a point of the log iff every ``fi`` is available
with a value equal to ``vi``.  ``within(s, **ctx).x`` is the value ``x`` had at the
end of the most recent stretch where the context held; ``within.strict`` only counts
writes of ``x`` made during that stretch.  Every test runs on every backend.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appendmuch import Storage, Store, within
from backends import Backend

MISSING: Any = object()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    """A Store on the backend's location, closed at the end of the test."""
    opened = backend.store()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def player(store: Store) -> Storage:
    return store.storage("game", "player1")


def reopened(backend: Backend, store: Store) -> Storage:
    """Close ``store``, open the log again, and return the same player."""
    return backend.reopen(store).storage("game", "player1")


def seqs_of(storage: Storage, field: str) -> list[int]:
    return [value.seq for value in storage.__history__()[field]]


# --------------------------------------------------------------------- worked example


class TestWorkedExample:
    """SPEC §7's worked example must hold exactly."""

    def test_rounds_and_scores(self, backend: Backend, store: Store, player: Storage) -> None:
        """round=1, score=10, round=2, score=25; then round=1, score=30."""
        player.round = 1
        player.score = 10
        player.round = 2
        player.score = 25
        assert within(player, round=1).score == 10
        assert within(player, round=2).score == 25
        player.round = 1
        player.score = 30
        assert within(player, round=1).score == 30
        assert within(player, round=2).score == 25
        again = reopened(backend, store)
        assert within(again, round=1).score == 30
        assert within(again, round=2).score == 25
        again.__store__.close()

    def test_along_yields_each_round_write(self, player: Storage) -> None:
        """``within.along`` yields one pair per write of ``round``, live contexts."""
        player.round = 1
        player.score = 10
        player.round = 2
        player.score = 25
        assert [(r, ctx.score) for r, ctx in within.along(player, "round")] == [(1, 10), (2, 25)]
        player.round = 1
        player.score = 30
        # round 1 is yielded twice; both contexts see the most recent round-1 stretch.
        assert [(r, ctx.score) for r, ctx in within.along(player, "round")] == [
            (1, 30),
            (2, 25),
            (1, 30),
        ]

    def test_treatment_after_the_rounds(self, player: Storage) -> None:
        """The description's order: treatment is set while round is 2."""
        player.round = 1
        player.score = 10
        player.round = 2
        player.score = 25
        player.treatment = "high"
        player.round = 1
        player.choice = "A"
        assert within(player, round=1).treatment == "high"
        assert within.strict(player, round=1).choice == "A"
        assert within.strict(player, round=1).get("treatment") is None
        assert [(r, c.get("choice")) for r, c in within.strict.along(player, "round")] == [
            (1, "A"),
            (2, None),
            (1, "A"),
        ]

    def test_treatment_on_a_fresh_storage(self, backend: Backend, store: Store) -> None:
        """treatment="high", round=1, choice="A" exactly as SPEC §7 lists it."""
        player = store.storage("game", "player2")
        player.treatment = "high"
        player.round = 1
        player.choice = "A"
        assert within(player, round=1).treatment == "high"
        assert within.strict(player, round=1).choice == "A"
        assert within.strict(player, round=1).get("treatment") is None
        with pytest.raises(AttributeError):
            within.strict(player, round=1).treatment
        again = backend.reopen(store).storage("game", "player2")
        assert within(again, round=1).treatment == "high"
        assert within.strict(again, round=1).choice == "A"
        assert within.strict(again, round=1).get("treatment") is None
        again.__store__.close()


# --------------------------------------------------------------------- single-field basics


class TestNonStrict:
    """``within(s, **ctx).x``: the value at the end of the most recent stretch."""

    def test_value_set_before_the_context_began_counts(self, player: Storage) -> None:
        player.score = 5
        player.round = 1
        player.round = 2
        assert within(player, round=1).score == 5
        assert within(player, round=2).score == 5

    def test_value_at_end_of_stretch_not_later(self, player: Storage) -> None:
        """Writes after the stretch ended do not leak into it."""
        player.round = 1
        player.score = 1
        player.score = 2
        player.round = 2
        player.score = 3
        assert within(player, round=1).score == 2

    def test_context_value_never_held(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        with pytest.raises(AttributeError):
            within(player, round=2).score
        assert within(player, round=2).get("score") is None

    def test_context_field_never_written(self, player: Storage) -> None:
        player.score = 1
        with pytest.raises(AttributeError):
            within(player, round=1).score

    def test_empty_storage(self, store: Store) -> None:
        empty = store.storage("game", "nobody")
        with pytest.raises(AttributeError):
            within(empty, round=1).score
        assert within(empty).get("score", 7) == 7
        assert list(within.along(empty, "round")) == []

    def test_value_held_by_another_field_does_not_count(self, player: Storage) -> None:
        """round=1 must hold; stage=1 is not the same context."""
        player.stage = 1
        player.score = 1
        with pytest.raises(AttributeError):
            within(player, round=1).score

    def test_field_missing_at_end_of_stretch(self, player: Storage) -> None:
        """A field first written after the stretch ended is not found."""
        player.round = 1
        player.round = 2
        player.score = 3
        with pytest.raises(AttributeError):
            within(player, round=1).score
        assert within(player, round=2).score == 3

    def test_field_deleted_at_end_of_stretch(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        del player.score
        player.round = 2
        player.score = 9
        with pytest.raises(AttributeError):
            within(player, round=1).score
        assert within(player, round=1).get("score", "none") == "none"
        assert within(player, round=2).score == 9

    def test_field_deleted_and_rewritten_within_stretch(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        del player.score
        player.score = 2
        player.round = 2
        assert within(player, round=1).score == 2
        assert within.strict(player, round=1).score == 2

    def test_get_with_and_without_default(self, player: Storage) -> None:
        player.round = 1
        player.score = 0
        view = within(player, round=1)
        assert view.get("score") == 0
        assert view.get("score", 5) == 0
        assert view.get("missing") is None
        assert view.get("missing", 5) == 5
        assert within(player, round=3).get("score", MISSING) is MISSING

    def test_stored_none_is_found(self, player: Storage) -> None:
        """A stored None is a value, not 'not found'."""
        player.round = 1
        player.score = None
        assert within(player, round=1).get("score", 5) is None
        assert within(player, round=1).score is None

    def test_context_field_itself(self, player: Storage) -> None:
        player.round = 1
        player.round = 2
        assert within(player, round=1).round == 1
        assert within.strict(player, round=1).round == 1

    def test_within_is_live(self, player: Storage) -> None:
        """A within object made before a stretch sees it, and later ones too."""
        view = within(player, round=1)
        strict = within.strict(player, round=1)
        with pytest.raises(AttributeError):
            view.score
        player.round = 1
        player.score = 2
        assert view.score == 2
        assert strict.score == 2
        player.score = 3  # the stretch still holds: its end is "now"
        assert view.score == 3
        player.round = 2
        player.score = 4
        assert view.score == 3
        player.round = 1
        assert view.score == 4
        assert strict.get("score") is None
        player.score = 5
        assert strict.score == 5

    def test_rewriting_same_value_continues_stretch(self, player: Storage) -> None:
        """round=1 written again while round is 1 does not start a new stretch."""
        player.round = 1
        player.score = 5
        player.round = 1
        assert within.strict(player, round=1).score == 5
        player.round = 2
        assert within.strict(player, round=1).score == 5
        assert within(player, round=1).score == 5

    def test_equal_values_of_other_types_match(self, player: Storage) -> None:
        """Context values are compared with ==."""
        player.round = 1
        player.score = 1
        assert within(player, round=1.0).score == 1
        assert within(player, round=True).score == 1


class TestStrict:
    """``within.strict``: only writes of x made during the most recent stretch."""

    def test_write_before_stretch_does_not_count(self, player: Storage) -> None:
        player.score = 1
        player.round = 1
        assert within.strict(player, round=1).get("score") is None
        with pytest.raises(AttributeError):
            within.strict(player, round=1).score
        assert within(player, round=1).score == 1

    def test_write_in_earlier_stretch_does_not_count(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        player.round = 2
        player.round = 1
        assert within.strict(player, round=1).get("score") is None
        assert within(player, round=1).score == 1

    def test_write_in_stretch_survives_later_writes(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        player.round = 2
        player.score = 2
        assert within.strict(player, round=1).score == 1
        assert within.strict(player, round=2).score == 2

    def test_last_write_in_stretch_wins(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        player.score = 2
        player.round = 2
        assert within.strict(player, round=1).score == 2

    def test_deletion_within_stretch_makes_it_not_found(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        del player.score
        player.round = 2
        with pytest.raises(AttributeError):
            within.strict(player, round=1).score

    def test_deleting_older_value_within_stretch(self, player: Storage) -> None:
        """A value from before the stretch, deleted during it: not found either way."""
        player.score = 1
        player.round = 1
        del player.score
        assert within.strict(player, round=1).get("score", MISSING) is MISSING
        assert within(player, round=1).get("score", MISSING) is MISSING


# --------------------------------------------------------------------- several fields


class TestMultiFieldContexts:
    """A multi-field context holds where all its fields hold at once."""

    def test_stretch_is_where_all_hold(self, player: Storage) -> None:
        player.round = 1
        player.stage = "a"
        player.score = 1
        player.stage = "b"
        player.score = 2
        player.stage = "a"
        player.score = 3
        player.round = 2
        player.score = 4
        assert within(player, round=1, stage="a").score == 3
        assert within(player, round=1, stage="b").score == 2
        assert within(player, round=2, stage="a").score == 4
        with pytest.raises(AttributeError):
            within(player, round=2, stage="b").score

    def test_fields_changing_in_interleaved_order(self, player: Storage) -> None:
        player.stage = "a"
        player.round = 1  # context starts holding here
        player.score = 1
        player.stage = "b"  # ends
        player.score = 2
        player.round = 2
        player.stage = "a"
        player.score = 3
        player.round = 1  # holds again
        assert within(player, round=1, stage="a").score == 3
        assert within.strict(player, round=1, stage="a").get("score") is None
        player.score = 4
        player.stage = "c"  # ends
        player.score = 5
        assert within(player, round=1, stage="a").score == 4
        assert within.strict(player, round=1, stage="a").score == 4
        # the order of the keywords does not matter
        assert within(player, stage="a", round=1).score == 4

    def test_value_set_before_multi_field_context(self, player: Storage) -> None:
        player.round = 1
        player.stage = "a"
        player.score = 1
        player.stage = "b"
        player.score = 2
        player.stage = "a"
        assert within(player, round=1, stage="a").score == 2
        assert within.strict(player, round=1, stage="a").get("score") is None

    def test_fields_that_never_held_together(self, player: Storage) -> None:
        player.round = 1
        player.stage = "b"
        player.score = 1
        player.round = 2
        player.stage = "a"
        player.score = 2
        with pytest.raises(AttributeError):
            within(player, round=1, stage="a").score
        assert within(player, round=1, stage="a").get("score") is None
        assert list(within(player, round=1, stage="a").along("score")) == []
        assert within(player, round=1).score == 1
        assert within(player, stage="a").score == 2

    def test_deleting_a_context_field_ends_the_stretch(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        del player.round
        player.score = 2
        assert within(player, round=1).score == 1
        player.round = 1  # a new stretch, score was set before it
        assert within(player, round=1).score == 2
        assert within.strict(player, round=1).get("score") is None

    def test_deleting_one_field_of_a_multi_field_context(self, player: Storage) -> None:
        player.round = 1
        player.stage = "a"
        player.score = 1
        del player.stage
        player.score = 2
        player.stage = "a"
        assert within(player, round=1, stage="a").score == 2
        assert within.strict(player, round=1, stage="a").get("score") is None
        player.score = 3
        assert within.strict(player, round=1, stage="a").score == 3

    def test_rewrite_in_multi_field_context_continues(self, player: Storage) -> None:
        player.round = 1
        player.stage = "a"
        player.score = 1
        player.round = 1
        player.stage = "a"
        player.round = 2
        assert within.strict(player, round=1, stage="a").score == 1


# --------------------------------------------------------------------- along


class TestAlong:
    """``within.along`` and ``Within.along`` iterate the writes of a field."""

    def test_every_non_deleted_write_in_seq_order(self, player: Storage) -> None:
        player.round = 1
        player.round = 2
        del player.round
        player.round = 1
        player.round = 1
        player.round = 3
        assert [r for r, _ in within.along(player, "round")] == [1, 2, 1, 1, 3]

    def test_contexts_equal_within_of_value(self, player: Storage) -> None:
        """Each yielded context answers like ``within(s, f=value)``."""
        player.treatment = "low"
        player.round = 1
        player.score = 1
        player.round = 2
        player.choice = "B"
        player.round = 1
        player.score = 3
        for round_, ctx in within.along(player, "round"):
            reference = within(player, round=round_)
            for name in ("treatment", "score", "choice", "round", "nope"):
                assert ctx.get(name, MISSING) == reference.get(name, MISSING)
        # choice was set before the latest round-1 stretch began: it counts (non-strict)
        assert [ctx.get("choice") for _, ctx in within.along(player, "round")] == ["B"] * 3
        assert [ctx.score for _, ctx in within.along(player, "round")] == [3, 1, 3]

    def test_strict_along_yields_strict_contexts(self, player: Storage) -> None:
        player.treatment = "low"
        player.round = 1
        player.choice = "A"
        player.round = 2
        pairs = list(within.strict.along(player, "round"))
        assert [r for r, _ in pairs] == [1, 2]
        for round_, ctx in pairs:
            reference = within.strict(player, round=round_)
            for name in ("treatment", "choice", "round"):
                assert ctx.get(name, MISSING) == reference.get(name, MISSING)
        assert pairs[0][1].choice == "A"
        assert pairs[0][1].get("treatment") is None
        assert pairs[1][1].get("choice") is None
        # non-strict along sees the older values
        loose = dict(within.along(player, "round"))
        assert loose[2].choice == "A"
        assert loose[1].treatment == "low"

    def test_along_of_context_yields_writes_made_while_it_held(self, player: Storage) -> None:
        player.stage = "x"  # before the context held: not yielded
        player.treatment = "high"
        player.stage = "a"
        player.stage = "b"
        player.treatment = "low"
        player.stage = "c"
        player.treatment = "high"
        player.stage = "d"
        pairs = list(within(player, treatment="high").along("stage"))
        assert [s for s, _ in pairs] == ["a", "b", "d"]
        for stage, ctx in pairs:
            reference = within(player, treatment="high", stage=stage)
            assert ctx.get("stage") == stage
            assert ctx.get("treatment") == "high"
            assert ctx.get("stage") == reference.get("stage")

    def test_along_of_context_contexts_combine_both(self, player: Storage) -> None:
        player.treatment = "high"
        player.stage = "a"
        player.score = 1
        player.treatment = "low"
        player.score = 2
        player.treatment = "high"
        player.score = 3
        pairs = list(within(player, treatment="high").along("stage"))
        assert [s for s, _ in pairs] == ["a"]
        assert pairs[0][1].score == 3
        assert within(player, treatment="high", stage="a").score == 3

    def test_along_of_context_inherits_strictness(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        player.stage = "a"
        player.stage = "b"
        player.choice = "B"
        player.round = 2
        strict_pairs = list(within.strict(player, round=1).along("stage"))
        assert [s for s, _ in strict_pairs] == ["a", "b"]
        assert strict_pairs[0][1].get("score") is None  # written before stage a
        assert strict_pairs[1][1].choice == "B"
        loose_pairs = list(within(player, round=1).along("stage"))
        assert loose_pairs[0][1].score == 1

    def test_chained_along_two_levels(self, backend: Backend, store: Store) -> None:
        player = store.storage("game", "player1")
        player.round = 1
        player.stage = "a"
        player.score = 1
        player.stage = "b"
        player.score = 2
        player.round = 2
        player.stage = "a"
        player.score = 3

        def walk(s: Storage) -> list[tuple[int, str, int]]:
            return [
                (r, stage, sctx.score)
                for r, rctx in within.along(s, "round")
                for stage, sctx in rctx.along("stage")
            ]

        expected = [(1, "a", 1), (1, "b", 2), (2, "a", 3)]
        assert walk(player) == expected
        again = reopened(backend, store)
        assert walk(again) == expected
        again.__store__.close()

    def test_along_field_never_written(self, player: Storage) -> None:
        player.round = 1
        assert list(within.along(player, "stage")) == []
        assert list(within(player, round=1).along("stage")) == []
        assert list(within(player, round=7).along("round")) == []

    def test_along_values_are_copies(self, player: Storage) -> None:
        player.items = [1, 2]
        player.items = [3]
        values = [v for v, _ in within.along(player, "items")]
        assert values == [[1, 2], [3]]
        values[0].append(99)
        assert [v for v, _ in within.along(player, "items")] == [[1, 2], [3]]


# --------------------------------------------------------------------- keywords, copies


class TestKeywordsAndCopies:
    """within reserves no keyword; the values it returns are independent copies."""

    def test_strict_keyword_is_a_field(self, player: Storage) -> None:
        player.strict = 1
        player.score = 10
        player.strict = 2
        player.score = 20
        assert within(player, strict=1).score == 10
        assert within(player, strict=2).score == 20
        assert within.strict(player, strict=1).score == 10

    def test_other_names_are_fields_too(self, player: Storage) -> None:
        player.storage = "s"
        player.context = "c"
        player.field = "f"
        player.score = 1
        assert within(player, storage="s", context="c", field="f").score == 1
        with pytest.raises(AttributeError):
            within(player, storage="t").score

    def test_no_context_returns_current_values(self, player: Storage) -> None:
        player.round = 1
        player.score = 1
        player.round = 2
        player.score = 2
        assert within(player).score == 2
        assert within(player).round == 2
        assert within(player).get("missing", 0) == 0
        del player.score
        with pytest.raises(AttributeError):
            within(player).score

    def test_mutable_values_readable_without_with(self, player: Storage) -> None:
        player.round = 1
        player.items = ["sword"]
        player.stats = {"hp": 3}
        player.round = 2
        assert within(player, round=1).items == ["sword"]
        assert within(player).stats == {"hp": 3}
        assert within.strict(player, round=1).stats == {"hp": 3}

    def test_mutating_returned_values_changes_nothing(self, player: Storage) -> None:
        player.round = 1
        player.items = ["sword"]
        history_before = [v.data for v in player.__history__()["items"]]
        got = within(player, round=1).items
        got.append("shield")
        strict_got = within.strict(player, round=1).items
        assert strict_got == ["sword"]
        strict_got.clear()
        assert within(player, round=1).items == ["sword"]
        assert within(player, round=1).items is not within(player, round=1).items
        with player:
            assert player.items == ["sword"]
        assert [v.data for v in player.__history__()["items"]] == history_before
        assert len(history_before) == 1

    def test_nested_mutable_copy(self, player: Storage) -> None:
        player.round = 1
        player.data = ([1], {"k": [2]})
        got = within(player).data
        got[0].append(9)
        got[1]["k"].append(9)
        assert within(player, round=1).data == ([1], {"k": [2]})

    def test_unhashable_context_values(self, player: Storage) -> None:
        player.tags = [1]
        player.score = 1
        player.tags = [2]
        player.score = 2
        player.tags = [1]
        player.score = 3
        player.tags = {"a": 1}
        player.score = 4
        assert within(player, tags=[1]).score == 3
        assert within(player, tags=[2]).score == 2
        assert within(player, tags={"a": 1}).score == 4
        assert within.strict(player, tags=[2]).score == 2
        assert within(player, tags=[3]).get("score") is None
        assert [(t, c.score) for t, c in within.along(player, "tags")] == [
            ([1], 3),
            ([2], 2),
            ([1], 3),
            ({"a": 1}, 4),
        ]

    def test_unhashable_value_with_hashable_field(self, player: Storage) -> None:
        player.round = 1
        player.tags = [1]
        player.round = 2
        assert within(player, round=1, tags=[1]).round == 1
        assert within(player, round=2, tags=[1]).round == 2


# --------------------------------------------------------------------- persistence


def _answers(s: Storage) -> list[Any]:
    """Many query results over a fixed set of contexts and fields."""
    contexts: list[dict[str, Any]] = [
        {},
        {"round": 1},
        {"round": 2},
        {"round": 1, "stage": "a"},
        {"round": 2, "stage": "a"},
        {"stage": "b"},
        {"tags": [1]},
    ]
    out: list[Any] = []
    for ctx in contexts:
        for factory in (within, within.strict):
            view = factory(s, **ctx)
            out.append([view.get(f, "<none>") for f in ("round", "stage", "score", "tags")])
            out.append([(v, c.get("score", "<none>")) for v, c in view.along("stage")])
    out.append([(v, c.get("score", "<none>")) for v, c in within.along(s, "round")])
    return out


def test_same_answers_after_reopen(backend: Backend, store: Store) -> None:
    """Temporal queries give the same answers on a reopened log."""
    player = store.storage("game", "player1")
    player.tags = [1]
    player.round = 1
    player.stage = "a"
    player.score = 1
    player.stage = "b"
    del player.score
    player.round = 2
    player.tags = [2]
    player.stage = "a"
    player.score = 2
    player.round = 1
    player.round = 1
    player.stage = "a"
    player.score = 3
    del player.stage
    before = _answers(player)
    assert before[2][2] == 3  # within(round=1).score
    again = reopened(backend, store)
    assert _answers(again) == before
    again.__store__.close()


# --------------------------------------------------------------------- oracle


FIELDS = ("round", "stage", "score")
Entry = tuple[str, Any]  # (field, value or MISSING for a deletion)

operations = st.lists(
    st.tuples(st.sampled_from(("set", "set", "del")), st.sampled_from(FIELDS), st.integers(0, 2)),
    max_size=25,
)
_namespaces = itertools.count()


def _apply(s: Storage, ops: list[tuple[str, str, int]]) -> list[Entry]:
    """Perform ``ops`` on ``s``; return the log entries actually appended."""
    entries: list[Entry] = []
    current: dict[str, int] = {}
    for op, field, value in ops:
        if op == "set":
            setattr(s, field, value)
            current[field] = value
            entries.append((field, value))
        elif field in current:
            delattr(s, field)
            del current[field]
            entries.append((field, MISSING))
    return entries


def _states(entries: list[Entry]) -> list[dict[str, Any]]:
    """The available fields after each entry."""
    states: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    for field, value in entries:
        state = dict(state)
        if value is MISSING:
            state.pop(field)
        else:
            state[field] = value
        states.append(state)
    return states


def _holds(state: dict[str, Any], ctx: dict[str, Any]) -> bool:
    return all(f in state and state[f] == v for f, v in ctx.items())


def _stretches(entries: list[Entry], ctx: dict[str, Any]) -> list[tuple[int, int]]:
    """Maximal runs [first, last] of entry indices after which ``ctx`` holds."""
    runs: list[tuple[int, int]] = []
    for i, state in enumerate(_states(entries)):
        if _holds(state, ctx):
            if runs and runs[-1][1] == i - 1:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
    return runs


def _oracle_get(entries: list[Entry], ctx: dict[str, Any], field: str, strict: bool) -> Any:
    runs = _stretches(entries, ctx)
    if not runs:
        return MISSING
    first, last = runs[-1]
    state = _states(entries)[last]
    if field not in state:
        return MISSING
    if strict:
        last_touch = max(i for i, (f, _) in enumerate(entries[: last + 1]) if f == field)
        if last_touch < first:
            return MISSING
    return state[field]


def _oracle_along(entries: list[Entry], ctx: dict[str, Any], field: str) -> list[Any]:
    inside = {i for a, b in _stretches(entries, ctx) for i in range(a, b + 1)}
    return [
        v for i, (f, v) in enumerate(entries) if f == field and v is not MISSING and i in inside
    ]


ORACLE_CONTEXTS: list[dict[str, Any]] = (
    [{}]
    + [{f: v} for f in ("round", "stage") for v in range(3)]
    + [{"round": r, "stage": s} for r in range(3) for s in range(3)]
)


def _check_against_oracle(s: Storage, entries: list[Entry]) -> None:
    for ctx in ORACLE_CONTEXTS:
        for strict in (False, True):
            factory = within.strict if strict else within
            view = factory(s, **ctx)
            for field in FIELDS:
                expected = _oracle_get(entries, ctx, field, strict)
                assert view.get(field, MISSING) == expected, (ctx, field, strict)
                if expected is MISSING:
                    with pytest.raises(AttributeError):
                        getattr(view, field)
                along = list(view.along(field))
                assert [v for v, _ in along] == _oracle_along(entries, ctx, field)
                for v, sub in along[:3]:
                    sub_ctx = {**ctx, field: v}
                    assert sub.get("score", MISSING) == _oracle_get(
                        entries, sub_ctx, "score", strict
                    )


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_matches_brute_force_oracle(backend: Backend, ops: list[tuple[str, str, int]]) -> None:
    """Random set/delete logs: within, strict and along agree with a direct walk of the
    log, before and after a reopen."""
    namespace = ("oracle", f"n{next(_namespaces)}")
    store = backend.store()
    entries = _apply(store.storage(*namespace), ops)
    _check_against_oracle(store.storage(*namespace), entries)
    store = backend.reopen(store)
    _check_against_oracle(store.storage(*namespace), entries)
    store.close()
