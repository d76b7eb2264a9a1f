"""Talking to the real API in tests: place orders, poll their status with a deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from temporalio.client import Client

from tests.support.stack import Stack, run_stack
from tests.support.temporal import dev_server_env

T = TypeVar("T")


@dataclass
class Api:
    stack: Stack
    http: httpx.AsyncClient
    temporal: Client

    async def place(self, body: dict[str, Any], **headers: str) -> str:
        response = await self.http.post("/orders", json=body, headers=headers)
        assert response.status_code == 202, response.text
        order_id: str = response.json()["order_id"]
        return order_id

    async def wait_for(self, order_id: str, *states: str, within: float = 60) -> dict[str, Any]:
        """Poll GET until the order is in one of `states`; a 503 (busy machine) means not yet."""

        def reached(response: httpx.Response) -> bool:
            assert response.status_code in (200, 503), response.text
            return response.status_code == 200 and response.json()["status"] in states

        try:
            answer = await poll(
                lambda: self.http.get(f"/orders/{order_id}"), reached, within=within
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.stack.logs()}") from None
        body: dict[str, Any] = answer.json()
        return body


async def poll(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float = 60,
    interval: float = 0.2,
) -> T:
    """Fetch until `done`, or fail with the last value seen once the deadline passes."""
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value!r}")
        await asyncio.sleep(interval)


def order_body(
    customer_id: str | None = None,
    *,
    # SKU-3 costs 189,000 cents: one is above the default 100,000 approval threshold.
    sku: str = "SKU-1",
    quantity: int = 2,
    card: str = "tok_visa",
    country: str = "DE",
) -> dict[str, Any]:
    return {
        "customer_id": customer_id or f"c-{uuid.uuid4().hex[:12]}",
        "items": [{"sku": sku, "quantity": quantity}],
        "payment": {"card_token": card},
        "shipping_address": {
            "name": "Ada",
            "line1": "Unter den Linden 1",
            "city": "Berlin",
            "postal_code": "10117",
            "country": country,
        },
    }


@asynccontextmanager
async def system_on_dev_server(
    data_dir: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[Api]:
    """A real dev server, the worker processes and uvicorn: the system `make up` runs."""
    async with dev_server_env() as env, system_on(env.client, data_dir, extra_env) as api:
        yield api


@asynccontextmanager
async def system_on(
    client: Client, data_dir: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[Api]:
    """The worker processes and uvicorn against an already running server."""
    target = client.service_client.config.target_host
    with run_stack(target, data_dir, extra_env=extra_env) as stack:
        assert stack.api_url is not None
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=30, headers=stack.auth_headers()
        ) as http:
            yield Api(stack, http, client)
