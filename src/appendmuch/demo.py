"""``appendmuch demo``: the main job, end to end, on the embedded SQLite default."""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from typing import TextIO

from .drivers.sqlite import Sqlite3
from .store import Store
from .value import Value
from .within import within

__all__ = ["run_demo"]


def _play(store: Store) -> None:
    """A tiny two-round experiment: the quick start's log with rounds and a deletion."""
    player = store.storage("game", "player1")
    player.name = "Alice"
    player.treatment = "high"
    with player:
        player.items = ["sword"]
        player.items.append("shield")  # saved when the block ends
    for rnd, (choice, score) in enumerate([("A", 10), ("B", 25)], start=1):
        player.round = rnd
        player.choice = choice
        player.score = score
    player.bonus = 5
    del player.bonus  # a tombstone: the field is gone, its history stays


def _show(value: Value) -> str:
    return "<deleted>" if value.unavailable else repr(value.data)


def _when(value: Value) -> str:
    if value.time is None:
        return "-"
    moment = _dt.datetime.fromtimestamp(value.time, tz=_dt.UTC)
    return moment.isoformat(timespec="milliseconds")


def run_demo(path: str | None = None, out: TextIO | None = None) -> str:
    """Write the demo log to a new SQLite file, reopen it, and print what it holds.

    Returns the database path.  ``path`` must not exist yet (default: a new file in a
    temporary directory).
    """
    import sys

    out = out or sys.stdout
    if path is None:
        path = os.path.join(tempfile.mkdtemp(prefix="appendmuch-demo-"), "demo.sqlite3")
    elif os.path.exists(path):
        raise FileExistsError(f"{path} already exists; the demo writes a new database")

    with Store(Sqlite3(path)) as store:
        _play(store)

    # A fresh Store loads the whole log back from the file.
    with Store(Sqlite3(path)) as store:
        player = store.storage("game", "player1")
        print(f"database: {path}", file=out)
        print(f"rows: {store.driver.last_seq}  namespace: {player!r}", file=out)
        print(f"current fields: {', '.join(player.__fields__())}", file=out)
        print("", file=out)
        print("history (every write, oldest first):", file=out)
        entries = sorted(
            ((field, value) for field, values in player.__history__().items() for value in values),
            key=lambda item: item[1].seq,
        )
        width = max(len(field) for field, _ in entries)
        print(
            f"  {'seq':>3}  {'time (UTC)':<29}  {'field':<{width}}  {'value':<20}  context",
            file=out,
        )
        for field, value in entries:
            print(
                f"  {value.seq:>3}  {_when(value):<29}  {field:<{width}}  "
                f"{_show(value):<20}  {value.context}",
                file=out,
            )
        print("", file=out)
        print("temporal queries:", file=out)
        for rnd, ctx in within.along(player, "round"):
            print(f"  within(player, round={rnd}).score  = {ctx.score!r}", file=out)
            print(f"  within(player, round={rnd}).choice = {ctx.choice!r}", file=out)
        treatment = within(player, round=1).treatment
        strict = within.strict(player, round=1).get("treatment")
        print(
            f"  within(player, round=1).treatment = {treatment!r}  (set before round 1)", file=out
        )
        print(f"  within.strict(player, round=1).get('treatment') = {strict!r}", file=out)
        with player:
            print(f"  player.items = {player.items!r}", file=out)
        print(f"  player.get('bonus') = {player.get('bonus')!r}  (deleted)", file=out)
    return path
