"""One real stack for the API suite: dev server, the four worker processes and uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.api_client import Api, system_on_dev_server

API_TIMEOUT_S = 2.0


@pytest_asyncio.fixture(scope="package")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    extra_env = {
        "SAGAWORKS_API_TEMPORAL_TIMEOUT_S": str(API_TIMEOUT_S),
        # Long enough that an order held for approval stays held for the whole suite.
        "SAGAWORKS_APPROVAL_TIMEOUT_S": "900",
        # Short, so the security suite sees a stream end at its lifetime and reconnect.
        "SAGAWORKS_STREAM_MAX_LIFETIME_S": "3",
    }
    async with system_on_dev_server(tmp_path_factory.mktemp("api-stack"), extra_env) as api:
        yield api
