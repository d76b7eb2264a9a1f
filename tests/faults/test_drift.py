"""No drift, on the real stack: the orders worker SIGKILLed right after sagas end.

A saga's end reaches the coordinator in its orders worker's next report. Kill the worker
before that report and, without reconciliation, the coordinator counts the saga in
flight forever. Here the stack reports through two coordinator shards (so the sharded
path runs on the real stack too, every worker listed by the root), reconciles every 5 s,
and its workers report every 30 s rather than every second: once the coordinator has
counted the held sagas, there is a wide window in which they end and the orders worker
dies before reporting it. In production the window is one report interval; widening it
makes the loss certain instead of a race the test could lose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from tests.faults.support import FaultSystem, fault_system
from tests.support.api_client import order_body, poll

RECONCILE_S = 5
REPORT_INTERVAL_S = 30
ENV = {
    "SAGAWORKS_COORDINATOR_SHARDS": "2",
    "SAGAWORKS_COORDINATOR_RECONCILE_S": str(RECONCILE_S),
    "SAGAWORKS_REPORT_INTERVAL_S": str(REPORT_INTERVAL_S),
    "SAGAWORKS_APPROVAL_TIMEOUT_S": "900",
}
log = logging.getLogger(__name__)
ROLES = {"orders", "inventory", "payments", "shipping", "notifications"}
ENDING, HELD = 3, 2
# What the README promises once the orders process runs again: the first check at least
# one interval after a saga's last report takes it out; checks come every interval. The
# slack is a process start on a busy machine and the shards' backlog.
CONVERGES_WITHIN_S = 2 * RECONCILE_S + 30


@pytest_asyncio.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultSystem]:
    async with fault_system(tmp_path_factory.mktemp("drift"), extra_env=ENV) as system:
        yield system


async def coordination(system: FaultSystem, details: bool = False) -> dict[str, Any]:
    """The state, waiting out a coordinator that has not started yet (503 until it has)."""
    state = await poll(lambda: coordination_if_up(system, details), lambda s: s is not None)
    assert state is not None, "the coordinator did not answer"
    return state


async def coordination_if_up(system: FaultSystem, details: bool = False) -> dict[str, Any] | None:
    """The state, or None while the orders process (which runs the coordinator) is away."""
    response = await system.http.get("/coordination", params={"details": str(details).lower()})
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def seen(state: dict[str, Any], role: str) -> dict[str, Any]:
    [worker] = [w for w in state["workers"] if w["worker"].startswith(f"{role} ")]
    return worker


async def test_sagas_whose_end_died_with_the_orders_worker_stop_counting(
    system: FaultSystem,
) -> None:
    # Every worker process is listed by the root, each through a shard.
    state = await poll(
        lambda: coordination(system, details=True),
        lambda s: {w["worker"].split(" ")[0] for w in s["workers"]} == ROLES,
        within=90,
    )
    assert {w["shard"] for w in state["workers"]} <= {0, 1}
    assert all(w["shard"] is not None for w in state["workers"])

    # Sagas held for approval: the coordinator counts them in flight.
    ending = [await system.place(order_body(sku="SKU-3", quantity=1)) for _ in range(ENDING)]
    held = [await system.place(order_body(sku="SKU-3", quantity=1)) for _ in range(HELD)]
    for order_id in ending + held:
        await system.wait_for(order_id, "AWAITING_APPROVAL")
    state = await poll(
        lambda: coordination(system, details=True),
        lambda s: s["sagas"]["by_status"].get("AWAITING_APPROVAL") == ENDING + HELD,
        within=3 * REPORT_INTERVAL_S,
        interval=0.5,
    )
    in_flight, orders = state["sagas"]["in_flight"], seen(state, "orders")
    # Its next report comes one interval after this one (half, were its schedule to move).
    next_report = datetime.fromisoformat(orders["last_report_at"]) + timedelta(
        seconds=REPORT_INTERVAL_S / 2
    )

    # They end, and the orders worker dies before its next report can say so.
    for order_id in ending:
        assert (await system.decide(order_id, "approve")).status_code == 200
    for order_id in ending:
        assert (await system.finish(order_id))["status"] == "COMPLETED"
    state = await coordination(system, details=True)
    assert seen(state, "orders")["reports"] == orders["reports"]  # none since they ended
    assert state["sagas"]["in_flight"] == in_flight
    assert datetime.now(UTC) < next_report - timedelta(seconds=2), "too slow to be sure"
    system.kill_worker("orders")

    # The orders process (which also runs the coordinator) comes back; its reconciliation
    # with visibility finds the three ended and takes them out of the count.
    system.start_worker("orders")
    restarted = time.monotonic()
    back = await poll(
        lambda: coordination_if_up(system, details=True),
        lambda s: s is not None and s["sagas"]["in_flight"] == in_flight - ENDING,
        within=CONVERGES_WITHIN_S + 60,
        interval=0.5,
    )
    assert back is not None
    state = back
    converged_after = time.monotonic() - restarted
    log.info("in-flight count corrected %.1f s after the orders worker restarted", converged_after)
    assert converged_after <= CONVERGES_WITHIN_S, f"converged after {converged_after:.0f}s"
    reconciliation = state["reconciliation"]
    assert reconciliation["corrected_total"] == ENDING  # not a late report: the check
    assert state["sagas"]["by_status"] == {"AWAITING_APPROVAL": HELD}
    # Their ends are recorded as Temporal has them (the OrderStatus search attribute).
    ended = {t["order_id"]: t["status"] for t in state["recent_terminals"]}
    assert all(ended[order_id] == "COMPLETED" for order_id in ending)
    # Visibility counted exactly this stack's running sagas: the two orders still held
    # (and no saga of any other type: workflows/registry.py).
    running = state["reconciliation"]["running"]
    assert running["OrderWorkflow"] == HELD
    assert sum(running.values()) == HELD
    for order_id in held:
        assert (await system.decide(order_id, "reject")).status_code == 200
