"""Starting Temporal servers for tests: no downloads, custom search attributes registered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from common.binaries import find_binary
from workflows.order import CUSTOMER_ID, FAILURE_REASON, ORDER_STATUS

SEARCH_ATTRIBUTES: list[SearchAttributeKey[str]] = [ORDER_STATUS, CUSTOMER_ID, FAILURE_REASON]


@asynccontextmanager
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
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
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    async with env:
        yield env
