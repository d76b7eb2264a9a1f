"""The dev server stopped and started again on the same database file, mid-saga.

Sagas are caught in every state when Temporal goes away: finished (completed, rolled back),
running (inside a step, and past a step's commit whose answer has not reached Temporal),
waiting for an operator, and rolling back. The held workers keep them there until the
server is back. The workers and the API are not restarted: they must find the server again
on their own. Afterwards no saga is missing and each ends as its fixture says it must.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.faults.support import FaultSystem, fault_system
from tests.support.api_client import order_body, poll
from tests.support.auth import order_id_for_key
from tests.support.stack import SERVICES

# Held steps must still be held when the server comes back (a hold ends one second before
# the attempt's start-to-close timeout), and a stop, a pause and a start take ~10 s here.
STEP_TIMEOUT_S = 30
DOWN_S = 5


@pytest_asyncio.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultSystem]:
    extra_env = {
        "SAGAWORKS_STEP_TIMEOUT_S": str(STEP_TIMEOUT_S),
        "SAGAWORKS_APPROVAL_TIMEOUT_S": "900",
        "SAGAWORKS_API_TEMPORAL_TIMEOUT_S": "3",
    }
    root = tmp_path_factory.mktemp("server-restart")
    async with fault_system(root, held=("inventory", "shipping"), extra_env=extra_env) as system:
        yield system


async def test_server_restart_mid_saga_loses_no_saga_and_changes_no_outcome(
    system: FaultSystem,
) -> None:
    finished = {
        "completed": order_body(sku="SKU-1", quantity=1),
        "compensated": order_body(sku="SKU-1", quantity=1, card="tok_decline"),
    }
    ids = {name: await system.place(body) for name, body in finished.items()}
    before = {name: await system.finish(order_id) for name, order_id in ids.items()}

    # From here every rollback stops before it releases its stock. Two orders stop inside
    # a step: one before creating its shipment, one right after its reservation committed.
    holds = system.holds
    holds.engage("release_stock", "before")
    keys = {name: f"restart-{uuid.uuid4()}" for name in ("reserved, unacknowledged", "shipping")}
    ids |= {name: order_id_for_key(system.stack.env, key) for name, key in keys.items()}
    holds.engage("reserve_stock", "after", ids["reserved, unacknowledged"])
    holds.engage("create_shipment", "before", ids["shipping"])
    await system.place(order_body(sku="SKU-2", quantity=1), key=keys["reserved, unacknowledged"])
    await system.place(order_body(sku="SKU-1", quantity=2, card="tok_flaky"), key=keys["shipping"])
    in_flight = {
        "approve": order_body(sku="SKU-3", quantity=1),
        "reject": order_body(sku="SKU-3", quantity=1),
        "cancel": order_body(sku="SKU-3", quantity=1),
        "rejected, rolling back": order_body(sku="SKU-3", quantity=1),
        "declined, rolling back": order_body(sku="SKU-1", quantity=1, card="tok_decline"),
        "undeliverable, rolling back": order_body(sku="SKU-1", quantity=1, country="XX"),
    }
    ids |= {name: await system.place(body) for name, body in in_flight.items()}

    for name in ("approve", "reject", "cancel", "rejected, rolling back"):
        await system.wait_for(ids[name], "AWAITING_APPROVAL")
    rejected = await system.decide(ids["rejected, rolling back"], "reject")
    assert rejected.status_code == 200, rejected.text
    for name in ("rejected, rolling back", "declined, rolling back", "undeliverable, rolling back"):
        await system.wait_held(ids[name], "release_stock", "before")
    await system.wait_held(ids["shipping"], "create_shipment", "before")
    await system.wait_held(ids["reserved, unacknowledged"], "reserve_stock", "after")
    states = {name: await system.wait_until(o, lambda _: True) for name, o in ids.items()}
    assert {name: s["status"] for name, s in states.items()} == {
        "completed": "COMPLETED",
        "compensated": "COMPENSATED",
        "reserved, unacknowledged": "PENDING",
        "approve": "AWAITING_APPROVAL",
        "reject": "AWAITING_APPROVAL",
        "cancel": "AWAITING_APPROVAL",
        "rejected, rolling back": "COMPENSATING",
        "declined, rolling back": "COMPENSATING",
        "undeliverable, rolling back": "COMPENSATING",
        "shipping": "PENDING",
    }
    processes = {name: system.stack.processes[name] for name in (*SERVICES, "api")}

    await asyncio.to_thread(system.server.stop)
    # Temporal is down: the API says so at once, with Retry-After, for reads and writes.
    read = await system.http.get(f"/orders/{ids['approve']}")
    write = await system.http.post("/orders", json=order_body())
    for answer in (read, write):
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) > 0
    await asyncio.sleep(DOWN_S)  # holding the server down, long enough for every poll to fail
    dead = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
    assert dead == {}, f"processes died while Temporal was down: {dead}\n{system.logs()}"
    await asyncio.to_thread(system.server.start)
    holds.release_all()

    # Until the orders worker polls the new server, no one can answer the live status: the
    # API must say 503 (retry later), as it does for a worker that is down, never 500.
    answers: Counter[int] = Counter()

    async def probe() -> httpx.Response:
        answer = await system.http.get(f"/orders/{ids['approve']}")
        answers[answer.status_code] += 1
        return answer

    back = await poll(probe, lambda r: r.status_code not in (500, 503), within=60)
    assert answers.keys() <= {200, 503}, f"answers while the workers came back: {answers}"
    assert (back.status_code, back.json()["status"]) == (200, "AWAITING_APPROVAL"), back.text
    for name, code in (("approve", 200), ("reject", 200), ("cancel", 202)):
        answer = await system.decide(ids[name], name)
        assert answer.status_code == code, (name, answer.text)

    finals = {name: await system.finish(order_id) for name, order_id in ids.items()}
    assert {name: (f["status"], f["failure_reason"]) for name, f in finals.items()} == {
        "completed": ("COMPLETED", None),
        "compensated": ("COMPENSATED", "PAYMENT_DECLINED"),
        "reserved, unacknowledged": ("COMPLETED", None),
        "approve": ("COMPLETED", None),
        "reject": ("COMPENSATED", "REJECTED_BY_OPERATOR"),
        "cancel": ("COMPENSATED", "CANCELLED_BY_CUSTOMER"),
        "rejected, rolling back": ("COMPENSATED", "REJECTED_BY_OPERATOR"),
        "declined, rolling back": ("COMPENSATED", "PAYMENT_DECLINED"),
        "undeliverable, rolling back": ("COMPENSATED", "UNDELIVERABLE"),
        "shipping": ("COMPLETED", None),
    }
    for name in finished:
        assert finals[name] == before[name], "a finished saga reads the same after the restart"

    # The same processes throughout: every worker and the API reconnected on their own.
    for name, process in processes.items():
        assert system.stack.processes[name] is process and process.poll() is None, name
    # None lost: Temporal holds exactly the sagas placed (plus the warm-up), each run once.
    client = await system.temporal()
    listed = [w.id async for w in client.list_workflows("WorkflowType = 'OrderWorkflow'")]
    assert sorted(listed) == sorted(system.orders)
    assert system.invariant_violations() == []
