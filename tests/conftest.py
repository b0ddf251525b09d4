"""Shared fixtures: every contract test runs once per backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from backends import ALL_FACTORIES, Backend
from pgserver import ENV_REQUIRE, HOW_TO_ENABLE, TempCluster, find_bindir

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: memory, sqlite, postgresql, and the shared-mode sqlite-shared, postgresql-shared
BACKEND_NAMES = list(ALL_FACTORIES)


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh storage location on each backend in turn."""
    made = ALL_FACTORIES[request.param](tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(params=BACKEND_NAMES)
def other_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A second, independent location (for dump-from-one / restore-into-another)."""
    (tmp_path / "other").mkdir()
    made = ALL_FACTORIES[request.param](tmp_path / "other")
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def private_cluster() -> Iterator[TempCluster]:
    """A server of this test's own, so it can be stopped and started."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{ENV_REQUIRE}=1 but PostgreSQL binaries are missing", pytrace=False)
        pytest.skip(HOW_TO_ENABLE)
    cluster = TempCluster(bindir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the throwaway PostgreSQL server, if this session started one."""
    from pgserver import SERVER

    SERVER.stop()
