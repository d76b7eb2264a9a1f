"""Two API processes, one limit: the rate limiter's counters live in Redis when a URL is set.

Debian's `redis-server` on a free loopback port, two uvicorn processes on ports of their
own (as behind a load balancer) against one dev server, and a limit of 6 a minute per
principal. Three requests to each process pass; the seventh, to either, is refused with
429 and Retry-After. Each process counting alone would have let twelve through.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis

from tests.support.auth import bearer, issue_key
from tests.support.stack import Stack, free_port, run_stack
from tests.support.temporal import dev_server_env

LIMIT = 6


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if found is None:
        pytest.fail(
            "redis-server not found: install Debian's `redis-server` package "
            "(`apt-get install -y redis-server`; .ci/run does this)"
        )
    return found


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    command = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    with (workdir / "redis.log").open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            assert server.poll() is None, (workdir / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not answer within 30 s"
            time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest_asyncio.fixture(scope="module")
async def two_apis(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    env = {
        "SAGAWORKS_RATE_LIMIT": f"{LIMIT}/minute",
        "SAGAWORKS_RATE_LIMIT_STORAGE_URL": redis_url,
    }
    data_dir: Path = tmp_path_factory.mktemp("shared-limit")
    async with dev_server_env() as server:
        target = server.client.service_client.config.target_host
        with run_stack(target, data_dir, services=(), extra_env=env, api_processes=2) as stack:
            yield stack


async def test_two_api_processes_enforce_one_limit_per_principal_together(
    two_apis: Stack,
) -> None:
    first, second = two_apis.api_urls
    assert first != second
    customer = bearer(issue_key(two_apis.env, "customer", customer_id="c-limited"))
    async with httpx.AsyncClient(timeout=30) as http:

        async def ask(url: str, headers: dict[str, str]) -> httpx.Response:
            return await http.get(f"{url}/openapi.json", headers=headers)

        passed = [(await ask(url, customer)).status_code for url in (first, second) * 3]
        assert passed == [200] * LIMIT

        seventh = await ask(second, customer)
        eighth = await ask(first, customer)
        for refused in (seventh, eighth):
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            assert "rate limit" in refused.json()["detail"]

        # The limit is the principal's, not the gateway's: another one still gets through.
        operator = two_apis.auth_headers()
        assert [(await ask(url, operator)).status_code for url in (first, second)] == [200, 200]
