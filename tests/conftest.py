"""Shared fixtures: every contract test runs once per backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from backends import ALL_FACTORIES, SQL_BACKENDS, Backend, PostgresBackend, SqliteBackend, sql_place
from pgserver import TempCluster, private_server

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


@pytest.fixture(params=SQL_BACKENDS)
def place(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqliteBackend | PostgresBackend]:
    """A fresh table on each SQL backend in turn (single-writer drivers; ``shared=True``
    or a child process opens it in shared mode)."""
    made = sql_place(request.param, tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def private_cluster() -> Iterator[TempCluster]:
    """A server of this test's own, so it can be stopped and started."""
    with private_server() as cluster:
        yield cluster


#: the contract fixtures' backends that the everyday tier leaves out (see below)
PG_CONTRACT_BACKENDS = frozenset({"postgresql", "postgresql-shared"})
#: the parameters that pick a contract backend: the fixtures, and the model tests' name
BACKEND_PARAMS = ("backend", "other_backend", "backend_name")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the PostgreSQL variants of the backend-contract tests ``slow``, because a
    PostgreSQL Store open costs ~30-40 ms per test over ~1,400 contract items: the
    everyday tier ``-m "not slow"`` runs the contract on memory, sqlite and sqlite-shared,
    PostgreSQL-specific files (test_postgresql.py, the ``place`` tests) stay in it, and
    ``python -m pytest`` without ``-m`` still runs everything."""
    slow = pytest.mark.slow
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(params.get(name) in PG_CONTRACT_BACKENDS for name in BACKEND_PARAMS):
            item.add_marker(slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the throwaway PostgreSQL server, if this session started one."""
    from pgserver import SERVER

    SERVER.stop()
