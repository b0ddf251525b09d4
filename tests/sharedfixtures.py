"""Fixtures of the tests that run peer processes on a shared table (shared mode).

A test module imports ``shared_place`` (``from sharedfixtures import shared_place``):
pytest then finds the fixture ``place`` there, defined once instead of in every module
(the import's name differs from the fixture's so that test parameters named ``place``
do not shadow it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sharedlib import PeerProcess, Place

__all__ = ["Peers", "shared_place"]


@pytest.fixture(name="place", params=["sqlite", "postgresql"])
def shared_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """One table on each SQL backend in turn."""
    made = Place(request.param, tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


class Peers:
    """Peer processes on one place, each with its own stderr file; ``kill()`` stops
    them all.  ``defaults`` are the driver keywords every peer starts with."""

    def __init__(self, place: Place, directory: Path, app: str, **defaults: Any) -> None:
        self.place = place
        self.directory = directory
        self.app = app
        self.defaults = defaults
        self.started: list[PeerProcess] = []

    def start(self, **driver: Any) -> PeerProcess:
        """Start one more peer (``driver`` over the defaults)."""
        number = len(self.started)
        app = f"{self.app}-{number}"
        peer = PeerProcess(
            self.place.location(app),
            self.directory / f"peer-{number}.stderr",
            app,
            **{**self.defaults, **driver},
        )
        self.started.append(peer)
        return peer

    def kill(self) -> None:
        for peer in self.started:
            peer.kill()
