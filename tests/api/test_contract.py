"""The contract test (issue 8): schemathesis against the real gateway, with every check.

The real uvicorn process of a real stack (dev server, every worker, chaos routes on),
fuzzed once with a customer's key (a second customer replaying the first one's reads, for
object-level authorization) and once with an operator's, through every phase, stateful
included: every status code a route answers is documented, every answer matches its
schema, no schema-valid request is refused, and none gets a 5xx (load shedding while the
fuzzing has paused intake aside: tests/api/contract_support.py). The operator's run
injects faults, trips circuits and pauses intake at random, so afterwards the test clears
all of that the way an operator would and checks that an order still completes.

The seed is printed, and taken from SAGAWORKS_CONTRACT_SEED to replay a failure;
SAGAWORKS_CONTRACT_MAX_EXAMPLES bounds the cases per operation (30 by default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from common.settings import SERVICES
from tests.api.contract_support import (
    SEED_ENV,
    Identity,
    contract_seed,
    max_examples,
    run_schemathesis,
)
from tests.support.api_client import Api, order_body, system_on_dev_server
from tests.support.auth import issue_key

CONTRACT_CUSTOMER = "c-contract"
OTHER_CUSTOMER = "c-contract-other"
STACK_ENV = {
    # A stream ends after a second (with `event: reconnect`), so fuzzing it never waits
    # out the default five-minute lifetime.
    "SAGAWORKS_STREAM_MAX_LIFETIME_S": "1",
    # This test checks answers, not latency: on a busy machine a Temporal call may take
    # more than the default 5 s, and the gateway would rightly say 503.
    "SAGAWORKS_API_TEMPORAL_TIMEOUT_S": "10",
}


@pytest_asyncio.fixture(scope="module")
async def contract_api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    # A stack of its own: the fuzzing injects faults and pauses intake, which the other
    # API tests must never see.
    async with system_on_dev_server(tmp_path_factory.mktemp("contract"), STACK_ENV) as api:
        yield api


@pytest.fixture(scope="module")
def seed() -> int:
    chosen = contract_seed()
    print(f"contract seed: {chosen} (replay with {SEED_ENV}={chosen})")
    return chosen


async def test_the_fuzzed_document_has_the_chaos_routes_and_live_links(contract_api: Api) -> None:
    spec = (await contract_api.http.get("/openapi.json")).json()
    assert "/admin/faults/{service}" in spec["paths"], "the chaos routes must be fuzzed too"
    operation_ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    links = [
        link
        for ops in spec["paths"].values()
        for op in ops.values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert links, "the stateful phase needs OpenAPI links"
    assert {link["operationId"] for link in links} <= operation_ids


@pytest.mark.parametrize("role", ["customer", "operator"])
async def test_schemathesis_finds_no_contract_failure(
    contract_api: Api, seed: int, role: str, tmp_path: Path
) -> None:
    env = contract_api.stack.env
    if role == "customer":
        # Two customers: the second replays the first one's reads (object-level authorization).
        identities = [
            Identity(name, issue_key(env, "customer", customer_id=customer))
            for name, customer in [("customer", CONTRACT_CUSTOMER), ("other", OTHER_CUSTOMER)]
        ]
    else:
        identities = [Identity("operator", issue_key(env, "operator", name="contract"))]
    openapi = (await contract_api.http.get("/openapi.json")).text
    print(f"contract run as {role}, seed {seed}")
    run = run_schemathesis(
        contract_api.stack.api_url or "",
        openapi,
        identities,
        role=role,
        seed=seed,
        examples=max_examples(),
        report_dir=tmp_path / f"schemathesis-{role}",
        stack_env=env,
    )
    print(f"{run.shed_answers} answers were 503 because the fuzzing had paused intake")
    try:
        # Whatever the fuzzing did, the system must come back once an operator cleans up.
        order = await _restore_then_complete_an_order(contract_api)
    finally:
        # The fuzzing's own findings first: they would explain a failed recovery.
        assert run.returncode == 0, run.failure_message()
    assert order["status"] == "COMPLETED", order


async def _restore_then_complete_an_order(api: Api) -> dict[str, Any]:
    http = api.http  # the stack's own operator key
    for service in SERVICES:
        cleared = await http.delete(f"/admin/faults/{service}")
        assert cleared.status_code == 204, cleared.text
        reset = await http.post(
            "/coordination/operate", json={"action": "reset", "service": service}
        )
        assert reset.status_code == 200, reset.text
    resumed = await http.post("/coordination/operate", json={"action": "resume_intake"})
    assert resumed.status_code == 200, resumed.text
    order_id = await _place(http)
    return await api.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED", within=120)


async def _place(http: httpx.AsyncClient) -> str:
    # A customer of its own, so no order the fuzzing left waiting for approval counts
    # against the approval-hold cap.
    response = await http.post("/orders", json=order_body())
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    return order_id
