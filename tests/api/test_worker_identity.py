"""GET /coordination names worker processes by role and counter, pid@host only on request."""

from __future__ import annotations

import json
import re

import httpx

from tests.support.api_client import Api, poll

ROLES = "inventory|payments|shipping|notifications|orders"


def reported_by_all(response: httpx.Response) -> bool:
    return response.status_code == 200 and len(response.json()["workers"]) >= 5


async def test_workers_show_as_role_and_counter(api: Api) -> None:
    response = await poll(lambda: api.http.get("/coordination"), reported_by_all)
    names = [worker["worker"] for worker in response.json()["workers"]]
    assert all(re.fullmatch(rf"({ROLES})-\d+", name) for name in names), names
    assert "@" not in response.text


async def test_an_operator_may_ask_for_details(api: Api) -> None:
    response = await poll(
        lambda: api.http.get("/coordination", params={"details": "true"}), reported_by_all
    )
    names = [worker["worker"] for worker in response.json()["workers"]]
    assert all(re.fullmatch(rf"({ROLES}) \d+@.+", name) for name in names), names


async def test_the_stream_names_no_host(api: Api) -> None:
    async with api.http.stream("GET", "/coordination/stream") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                state = json.loads(line.removeprefix("data:"))
                if "workers" in state:
                    assert "@" not in line
                    assert state["workers"], state
                    return
