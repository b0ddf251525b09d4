"""Writers running different code on one shared table (a rolling deploy).

A writer whose replace configuration differs from the running writers' is refused at
open, naming both (their caches would otherwise hold different rows).  A writer whose
codec lacks a type another writer registered keeps following and writing: only
reading a field that holds such a value raises, naming the type id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appendmuch import Store
from appendmuch.errors import ConfigMismatchError, UnknownTypeIdError
from backends import SqlBackend
from sharedlib import POINT_TYPE_ID, Peers, Point, is_replace


@pytest.fixture
def peers(place: SqlBackend, tmp_path: Path) -> Iterator[Peers]:
    with Peers(place, tmp_path, "appendmuch-mixed", shared=True) as made:
        yield made


def only_status(dbns: str, field: str) -> bool:
    return field == "status"


def test_a_writer_with_another_replace_configuration_is_refused(
    place: SqlBackend, peers: Peers
) -> None:
    peer = peers.start()  # replace_predicate: sharedlib.is_replace
    peer("set", ns=["g"], field="x", value=1)
    peer("flush")  # (committed: the sync() below is sure to bring it)
    for predicate in (None, only_status):
        driver = place.driver(shared=True)
        with pytest.raises(ConfigMismatchError) as refused:
            Store(driver, replace_predicate=predicate)
        message = str(refused.value)
        # theirs named: by its description (SQLite keeps it beside the lock file), or
        # by its fingerprint and the sessions using it (PostgreSQL)
        theirs = "is_replace" if place.kind == "sqlite" else "'appendmuch-mixed-0'"
        assert theirs in message
        assert (predicate.__name__ if predicate else "replace_predicate=None") in message
    # the same configuration joins (so the refused ones hold no claim)
    joined = place.open(shared=True)
    try:
        joined.sync()
        assert joined.storage("g").x == 1
    finally:
        joined.close()
    peer.close()
    # nobody uses the old configuration any more: a new one may start
    changed = Store(place.driver(shared=True), replace_predicate=only_status)
    try:
        changed.storage("g").status = "new"
        changed.flush()
    finally:
        changed.close()
    assert is_replace("g", "r_x") and not is_replace("g", "status")


def test_a_value_of_a_type_this_codec_lacks_stops_nothing(place: SqlBackend, peers: Peers) -> None:
    newer = peers.start(points=True)
    older = place.open(shared=True)  # its codec does not know Point
    try:
        newer("point", ns=["g"], field="where", x=1, y=2)
        newer("set", ns=["g"], field="before", value="b")
        newer("flush")
        older.sync()
        g = older.storage("g")
        assert g.before == "b"
        with pytest.raises(UnknownTypeIdError, match=str(POINT_TYPE_ID)):
            g.where
        assert sorted(g.__fields__()) == ["before", "where"]
        # it goes on following, and writing
        g.mine = 3
        older.flush()
        newer("set", ns=["g"], field="after", value="a")
        newer("flush")
        older.sync()
        assert g.after == "a"
        newer("sync")
        engine = older.driver.sharing
        assert engine is not None and engine.last_error is None
        # the newer writer reads the older one's write, and its own Point
        lines = newer("history")
        assert any("mine" in line for line in lines)
    finally:
        older.close()
    # a Store that knows the type reads it back
    again = place.open(points=True, shared=True)
    try:
        assert again.storage("g").where == Point(1, 2)
    finally:
        again.close()
