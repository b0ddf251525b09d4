"""Shared fixtures: every contract test runs once per backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import FACTORIES, Backend
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("default")

BACKEND_NAMES = list(FACTORIES)


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh storage location on each backend in turn."""
    made = FACTORIES[request.param](tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(params=BACKEND_NAMES)
def other_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A second, independent location (for dump-from-one / restore-into-another)."""
    (tmp_path / "other").mkdir()
    made = FACTORIES[request.param](tmp_path / "other")
    try:
        yield made
    finally:
        made.cleanup()
