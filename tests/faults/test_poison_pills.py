"""Poison pills on the real stack: a value the database refuses fails once, for good.

Before, such a step failed retryably, so the saga retried it forever while it held its
stock, and every attempt counted as an infrastructure error against the service: enough
poisoned orders opened the circuit for everyone. Now the service raises it non-retryable
(`InvalidInput`), the saga rolls back at once with a clear reason, and the circuit guard
does not count it. The input reaches the saga through Temporal, since the API's own
bounds would refuse it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.faults.direct import start_directly
from tests.faults.support import FaultSystem, fault_system
from tests.support.api_client import poll

# More than the circuit's default minimum of 10 calls in its window: counted as errors,
# these (half of inventory's calls: each reserve fails, each release succeeds) would open
# the circuit at its default 0.5 error ratio.
POISONED = 12


@pytest_asyncio.fixture(scope="module")
async def system(
    tmp_path_factory: pytest.TempPathFactory, backend_env: dict[str, str]
) -> AsyncIterator[FaultSystem]:
    # Each backend refuses its own way (tests/faults/conftest.py runs SQLite, then PostgreSQL).
    async with fault_system(tmp_path_factory.mktemp("poison"), extra_env=backend_env) as system:
        yield system


async def test_poisoned_orders_roll_back_at_once_and_leave_the_circuit_closed(
    system: FaultSystem,
) -> None:
    # Above 64 bits: SQLite cannot bind it (PostgreSQL finds it out of range too).
    orders = [
        await start_directly(system, items=(("SKU-1", 1), ("SKU-2", 2**63)))
        for _ in range(POISONED)
    ]
    for order in orders:
        final = await system.finish(order.order_id)
        assert (final["status"], final["failure_reason"]) == ("COMPENSATED", "INVALID_INPUT")
        [reserve] = [s for s in final["steps"] if s["name"] == "reserve_stock"]
        assert (reserve["status"], reserve["attempts"]) == ("failed", 1), reserve
        assert reserve["error"] == "InvalidInput: the service refused a value of this order"

    async def inventory() -> dict[str, Any]:
        response = await system.http.get("/coordination")
        assert response.status_code == 200, response.text
        service: dict[str, Any] = response.json()["services"]["inventory"]
        return service

    # Once the coordinator has every call (a reserve and a release per order): none of
    # them an infrastructure error, and the circuit never left closed.
    seen = await poll(inventory, lambda s: s["calls"] >= 2 * POISONED, within=30)
    assert (seen["errors"], seen["error_ratio"]) == (0, 0), seen
    assert seen["circuit"]["state"] == "closed" and seen["circuit"]["opened_count"] == 0, seen
    assert system.invariant_violations() == []
