"""Worker processes killed or gone, on the real stack: nothing lost, nothing done twice.

One dev server (on a database file), every worker process and the API for the module.
The service workers start held (`holds.py`), so a test can stop a step inside the worker,
before its effect or after its commit, and SIGKILL the process right there. Restarts use
the plain worker, `python -m workers.<name>`, as production would.

Steps keep their default 30 s start-to-close timeout: each worker heartbeats its running
steps (workers/guard.py), so a killed attempt is retried once its 5 s heartbeat timeout
has passed. One test measures that recovery against a saga without heartbeats.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from bench.invariants import read_databases
from tests.faults.direct import start_directly, step_key
from tests.faults.holds import PHASES
from tests.faults.support import FaultSystem, Status, fault_system
from tests.support.api_client import order_body
from workflows.models import OrderInput

# What a killed worker's step may cost with heartbeats: the 5 s heartbeat timeout, the
# first retry interval (1 s), a new worker process starting. Far below the 30 s
# start-to-close timeout that was all there was before.
RECOVERY_BOUND_S = 15
# The step each service worker runs on the way to COMPLETED, with its effect row.
STEP_OF = {
    "inventory": "reserve_stock",
    "payments": "authorize_payment",
    "shipping": "create_shipment",
}
# Every key a service records for one completed order, after the `<order_id>:` prefix.
KEYS_OF_COMPLETED = {
    "inventory": ["reserve_stock"],
    "payments": ["authorize_payment", "capture_payment"],
    "shipping": ["create_shipment"],
}
QUANTITY = 2


@pytest_asyncio.fixture(scope="module")
async def system(
    tmp_path_factory: pytest.TempPathFactory, backend_env: dict[str, str]
) -> AsyncIterator[FaultSystem]:
    # On SQLite, then PostgreSQL (tests/faults/conftest.py): a kill between a step's commit
    # and its answer must leave one effect per key on each.
    extra_env = {"SAGAWORKS_APPROVAL_TIMEOUT_S": "900", **backend_env}
    root = tmp_path_factory.mktemp("worker-faults")
    async with fault_system(root, held=tuple(STEP_OF), extra_env=extra_env) as system:
        yield system


@pytest.mark.parametrize("service", sorted(STEP_OF))
async def test_service_worker_killed_mid_step_completes_with_one_effect_per_key(
    system: FaultSystem, service: str
) -> None:
    step = STEP_OF[service]
    system.ensure_held(service)
    shelf_before = _shelf(system)
    # Started through Temporal, so the test knows each saga's ID before its first step and
    # the hold waits for it there.
    orders: dict[str, OrderInput] = {}
    for phase in PHASES:
        orders[phase] = await _start_held(system, step, phase)
    ids = {phase: order.order_id for phase, order in orders.items()}
    # Both attempts are inside the worker: one short of its effect, one past its commit
    # whose answer has not gone back to Temporal yet.
    for phase, order_id in ids.items():
        assert await system.wait_held(order_id, step, phase) == [1]
    committed = system.effect_ids(service, step_key(orders["after"], step))
    assert len(committed) == 1
    assert system.effect_ids(service, step_key(orders["before"], step)) == []

    system.kill_worker(service)
    system.holds.release_all()
    for order_id in ids.values():
        # The saga never heard of the committed effect: the acknowledgement died with the
        # process. Only the step's (heartbeat) timeout, then a retry, can tell it.
        status = await system.wait_until(order_id, lambda s: s["current_step"] == step)
        assert _step(status, step)["status"] == "running", status

    system.start_worker(service)
    finals = {phase: await system.finish(order_id) for phase, order_id in ids.items()}
    for phase, final in finals.items():
        assert (final["status"], final["failure_reason"]) == ("COMPLETED", None), final
        assert _step(final, step)["attempts"] == 2, (phase, final["steps"])
    # The retry after the lost acknowledgement was a no-op: the first row, and no other.
    assert system.effect_ids(service, step_key(orders["after"], step)) == committed
    assert len(system.effect_ids(service, step_key(orders["before"], step))) == 1
    for order in orders.values():
        expected = [step_key(order, suffix) for suffix in KEYS_OF_COMPLETED[service]]
        assert system.recorded_keys(service, f"{order.order_id}:") == expected
    # Stock left the shelf once per order, however many attempts reserved it.
    assert _shelf(system) == shelf_before - QUANTITY * len(ids)
    assert system.invariant_violations() == []


async def test_a_killed_workers_step_is_retried_within_seconds_thanks_to_heartbeats(
    system: FaultSystem,
) -> None:
    # Two sagas side by side in the same killed worker: one whose steps heartbeat (the
    # default, 5 s), one without heartbeats, as every saga was before (its step is only
    # retried once the 30 s start-to-close timeout has passed).
    system.ensure_held("inventory")
    beating = await _start_held(system, "reserve_stock", "before", step_heartbeat_timeout_s=5)
    silent = await _start_held(system, "reserve_stock", "before", step_heartbeat_timeout_s=0)
    for order in (beating, silent):
        assert await system.wait_held(order.order_id, "reserve_stock", "before") == [1]

    system.kill_worker("inventory")
    killed_at = time.monotonic()
    system.holds.release_all()
    system.start_worker("inventory")  # a replacement at once: only the timeouts delay

    async def recovered_after(order: OrderInput) -> float:
        await system.wait_until(
            order.order_id,
            lambda s: _step(s, "reserve_stock")["status"] == "succeeded",
            within=90,
        )
        return time.monotonic() - killed_at

    with_heartbeat, without = await asyncio.gather(
        recovered_after(beating), recovered_after(silent)
    )
    print(
        f"\nstep recovery after a worker kill: {with_heartbeat:.1f} s with a 5 s heartbeat "
        f"timeout, {without:.1f} s with the 30 s start-to-close timeout alone"
    )
    assert with_heartbeat < RECOVERY_BOUND_S, with_heartbeat
    # Measured beside it, the old way: the timeout, less what the attempt ran before the
    # kill. Were heartbeats not what made the difference, the two would be alike.
    assert without > with_heartbeat + 10, (with_heartbeat, without)
    for order in (beating, silent):
        final = await system.finish(order.order_id)
        assert final["status"] == "COMPLETED", final
        assert _step(final, "reserve_stock")["attempts"] == 2, final["steps"]
        assert len(system.effect_ids("inventory", step_key(order, "reserve_stock"))) == 1
    assert system.invariant_violations() == []


async def test_orders_worker_killed_during_approval_wait_and_compensation_resumes_every_saga(
    system: FaultSystem,
) -> None:
    stack = system.stack
    # The payments worker is down while the orders are placed: each reserves its stock and
    # then waits on the payments queue, so every one has a reservation before inventory
    # goes down too. With inventory down, every rollback stops at its last compensation
    # (release the stock) and stays in COMPENSATING for as long as the test needs.
    assert stack.stop("payments") == 0
    bodies = {
        "approve": order_body(sku="SKU-3", quantity=1),
        "reject": order_body(sku="SKU-3", quantity=1),
        "cancel": order_body(sku="SKU-3", quantity=1),
        "declined": order_body(sku="SKU-1", quantity=1, card="tok_decline"),
        "undeliverable": order_body(sku="SKU-1", quantity=1, country="XX"),
    }
    ids = {name: await system.place(body) for name, body in bodies.items()}
    for order_id in ids.values():
        await system.wait_until(
            order_id,
            lambda s: (
                s["current_step"] == "authorize_payment"
                and _step(s, "reserve_stock")["status"] == "succeeded"
            ),
        )
    assert stack.stop("inventory") == 0
    system.start_worker("payments")

    for name in ("approve", "reject", "cancel"):
        await system.wait_for(ids[name], "AWAITING_APPROVAL")
    rejected = await system.http.post(f"/orders/{ids['reject']}/reject")
    assert (rejected.status_code, rejected.json()["status"]) == (200, "COMPENSATING")
    cancelled = await system.http.post(f"/orders/{ids['cancel']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    rolling_back = ("reject", "cancel", "declined", "undeliverable")
    for name in rolling_back:
        status = await system.wait_until(ids[name], _releasing_stock)
        assert status["status"] == "COMPENSATING"

    system.kill_worker("orders")
    system.start_worker("orders")
    system.start_worker("inventory")

    # Answered by the new process, which replayed the saga up to its wait.
    waiting = await system.wait_for(ids["approve"], "AWAITING_APPROVAL")
    assert waiting["current_step"] == "await_approval"
    approved = await system.decide(ids["approve"], "approve")
    assert (approved.status_code, approved.json()["status"]) == (200, "PENDING"), approved.text

    expected = {
        "approve": ("COMPLETED", None),
        "reject": ("COMPENSATED", "REJECTED_BY_OPERATOR"),
        "cancel": ("COMPENSATED", "CANCELLED_BY_CUSTOMER"),
        "declined": ("COMPENSATED", "PAYMENT_DECLINED"),
        "undeliverable": ("COMPENSATED", "UNDELIVERABLE"),
    }
    finals = {name: await system.finish(order_id) for name, order_id in ids.items()}
    assert {n: (f["status"], f["failure_reason"]) for n, f in finals.items()} == expected
    for name in rolling_back:
        outcomes = {c["name"]: c["status"] for c in finals[name]["compensations"]}
        assert outcomes["reserve_stock"] == "succeeded", finals[name]
        assert set(outcomes.values()) <= {"succeeded", "not_needed"}, finals[name]
    assert system.invariant_violations() == []


async def test_service_down_longer_than_retry_intervals_loses_no_task(
    system: FaultSystem,
) -> None:
    # Longer than STEP_RETRY's 30 s maximum interval: were the tasks being retried rather
    # than waiting on the queue, attempts would pile up (or run out) in that time.
    outage_s = 36
    down_since = time.monotonic()
    assert system.stack.stop("shipping") == 0
    bodies = {
        "visa-1": order_body(sku="SKU-1", quantity=1),
        "visa-2": order_body(sku="SKU-2", quantity=1),
        "flaky": order_body(sku="SKU-1", quantity=1, card="tok_flaky"),
        "approved": order_body(sku="SKU-3", quantity=1),
        "undeliverable": order_body(sku="SKU-1", quantity=1, country="XX"),
    }
    ids = {name: await system.place(body) for name, body in bodies.items()}
    await system.wait_for(ids["approved"], "AWAITING_APPROVAL")
    approved = await system.decide(ids["approved"], "approve")
    assert approved.status_code == 200, approved.text
    for order_id in ids.values():
        await system.wait_until(order_id, lambda s: s["current_step"] == "create_shipment")

    await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - down_since)))
    for name, order_id in ids.items():
        status = await system.status(order_id)
        assert status is not None
        assert (status["status"], status["current_step"]) == ("PENDING", "create_shipment"), name
        assert _step(status, "create_shipment")["status"] == "running", name

    system.start_worker("shipping")
    finals = {name: await system.finish(order_id) for name, order_id in ids.items()}
    assert {n: (f["status"], f["failure_reason"]) for n, f in finals.items()} == {
        **dict.fromkeys(("visa-1", "visa-2", "flaky", "approved"), ("COMPLETED", None)),
        "undeliverable": ("COMPENSATED", "UNDELIVERABLE"),
    }
    # Each shipment was attempted once, when the worker came back: the tasks waited.
    for name, final in finals.items():
        assert _step(final, "create_shipment")["attempts"] == 1, (name, final["steps"])
    assert system.invariant_violations() == []


async def _start_held(system: FaultSystem, step: str, phase: str, **overrides: Any) -> OrderInput:
    """A saga whose `step` the held worker stops at `phase` (engaged before it can run)."""
    order_id = f"order-{uuid.uuid4().hex}"
    system.holds.engage(step, phase, order_id)
    return await start_directly(
        system, items=(("SKU-1", QUANTITY),), order_id=order_id, **overrides
    )


def _step(status: Status, name: str) -> dict[str, Any]:
    (record,) = [s for s in status["steps"] if s["name"] == name]
    return record


def _releasing_stock(status: Status) -> bool:
    outcomes = {c["name"]: c["status"] for c in status["compensations"]}
    return outcomes.get("authorize_payment") == "succeeded" and outcomes.get("reserve_stock") in (
        "pending",
        "running",
    )


def _shelf(system: FaultSystem, sku: str = "SKU-1") -> int:
    return read_databases(system.stack.database_urls()).stock[sku]
