"""One real stack for the API suite: dev server, the four worker processes and uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.support.api_client import Api
from tests.support.stack import run_stack
from tests.support.temporal import dev_server_env

API_TIMEOUT_S = 2.0


@pytest_asyncio.fixture(scope="package")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async with dev_server_env() as env:
        extra_env = {
            "SAGAWORKS_API_TEMPORAL_TIMEOUT_S": str(API_TIMEOUT_S),
            # Long enough that an order held for approval stays held for the whole suite.
            "SAGAWORKS_APPROVAL_TIMEOUT_S": "900",
        }
        target = env.client.service_client.config.target_host
        with run_stack(target, tmp_path_factory.mktemp("api-stack"), extra_env=extra_env) as stack:
            assert stack.api_url is not None
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
                yield Api(stack, http, env.client)
