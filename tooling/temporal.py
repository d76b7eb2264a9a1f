"""Starting Temporal servers for tests: no downloads, custom search attributes registered."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from common.binaries import find_binary
from tooling.codec import TEST_DATA_CONVERTER
from tooling.server_profile import profile_args
from workflows import search_attributes

# Every custom search attribute the sagas set (workflows/search_attributes.py).
SEARCH_ATTRIBUTES: list[SearchAttributeKey[str]] = list(search_attributes.ALL)
# The SDK gives a server it starts 5 s to answer (not configurable from Python) and kills
# it when it does not; on a loaded 2-core machine a start can miss that, so try again.
START_ATTEMPTS = 3
log = logging.getLogger(__name__)


async def started(start: Callable[[], Awaitable[WorkflowEnvironment]]) -> WorkflowEnvironment:
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return await start()
        except RuntimeError as err:
            if "did not start within" not in str(err) or attempt == START_ATTEMPTS:
                raise
            log.warning("Temporal server start timed out (attempt %d): retrying", attempt)
    raise AssertionError("unreachable")


@asynccontextmanager
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await started(
        lambda: WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=find_binary("temporal-test-server"),
            # The stacks' key ring: what the tests read and write is encrypted as in production.
            data_converter=TEST_DATA_CONVERTER,
        )
    )
    async with env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                    for key in SEARCH_ATTRIBUTES
                },
            )
        )
        yield env


@asynccontextmanager
async def dev_server_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real `temporal server start-dev` on a free port, in memory, stopped on exit."""
    env = await started(
        lambda: WorkflowEnvironment.start_local(
            dev_server_existing_path=find_binary("temporal"),
            search_attributes=SEARCH_ATTRIBUTES,
            dev_server_log_level="error",
            data_converter=TEST_DATA_CONVERTER,
            # The same tuned profile as `make up` (temporal-dev/profile.args).
            dev_server_extra_args=profile_args(),
        )
    )
    async with env:
        yield env
