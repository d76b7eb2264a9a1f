"""Every test in this folder is a fault test: `make faults` selects them with `-m faults`.

A module whose system asks for `backend_env` runs on each backend in turn: its services'
and gateway's databases in SQLite files, then in PostgreSQL (README, "Tests").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.databases import BACKENDS, database_env

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, not only this folder's.
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="module", params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The stack's environment for one backend: nothing for SQLite, fresh PostgreSQL URLs."""
    cluster = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    return database_env(request.param, cluster)
