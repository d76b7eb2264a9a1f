"""Liveness, readiness, and an API that starts before Temporal does."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from common.binaries import find_binary
from tests.support.api_client import Api, order_body, poll
from tests.support.auth import bearer, issue_key
from tests.support.codec import TEST_CODEC_ENV
from tests.support.stack import REPO_ROOT, Stack, free_port


async def test_healthz_and_readyz(api: Api) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}


async def test_api_starts_while_temporal_is_down_then_becomes_ready(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SAGAWORKS_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "SAGAWORKS_DATA_DIR": str(tmp_path),
        "SAGAWORKS_API_TEMPORAL_TIMEOUT_S": "2",
        **TEST_CODEC_ENV,
    }
    stack = Stack(env, tmp_path, f"http://127.0.0.1:{free_port()}")
    stack.start("api")
    headers = bearer(issue_key(env, "operator", name="health"))
    try:
        async with httpx.AsyncClient(
            base_url=str(stack.api_url), timeout=10, headers=headers
        ) as http:

            async def get(path: str) -> httpx.Response | None:
                try:
                    return await http.get(path)
                except httpx.TransportError:  # uvicorn still starting
                    return None

            await poll(lambda: get("/healthz"), lambda r: r is not None and r.status_code == 200)
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.headers["Retry-After"].isdigit()
            assert isinstance(not_ready.json()["detail"], str)
            unknown = f"/orders/order-{uuid.uuid4().hex}"
            assert (await http.get(unknown)).status_code == 503
            assert (await http.post("/orders", json=order_body())).status_code == 503

            server = await WorkflowEnvironment.start_local(
                port=port,
                dev_server_existing_path=find_binary("temporal"),
                dev_server_log_level="error",
            )
            async with server:
                await poll(lambda: get("/readyz"), lambda r: r is not None and r.status_code == 200)
                assert (await http.get(unknown)).status_code == 404
    finally:
        stack.stop_all()
