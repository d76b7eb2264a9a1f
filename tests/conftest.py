"""Fixtures every test directory can share. Keep this generic: no Temporal, no services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresCluster, postgres_cluster


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Callable[[str], str]:
    """A fresh SQLite file URL per name, in this test's own temporary directory."""

    def make(name: str) -> str:
        return f"sqlite:///{tmp_path / f'{name}.db'}"

    return make


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session, started only if a test asks for it."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, sqlite_url: Callable[[str], str]
) -> Callable[[str], str]:
    """A fresh database URL per name, on each backend a service can be configured with."""
    if request.param == "sqlite":
        return sqlite_url
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database
