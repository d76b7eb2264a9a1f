"""Temporal environments (one of each per session) and fresh service databases per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from tests.support.temporal import dev_server_env, time_skipping_env
from tests.workflows.helpers import Services, build_services


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: timers skip while a test awaits a workflow result."""
    async with time_skipping_env() as env:
        yield env


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real dev server, for workflow updates (the test server handles them poorly)."""
    async with dev_server_env() as env:
        yield env


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
def services(sqlite_url: Callable[[str], str]) -> Iterator[Services]:
    built = build_services(sqlite_url)
    yield built
    for engine in built.engines:
        engine.dispose()
