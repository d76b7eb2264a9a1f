"""A compensation that fails for good, on the real stack: nothing is silently swallowed.

An injected permanent failure of `void_payment` makes an undeliverable order's roll-back
fail. The order shows FAILED with the failed compensation, and the coordination state
lists it as a dead letter for operators. Once the fault is cleared, an operator retries
the compensation through the API, and the order ends COMPENSATED with the payment voided.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.api_client import Api, order_body, poll, system_on_dev_server

VOID_REFUSED = {
    "error_ratio": 1.0,
    "activity": "void_payment",
    "non_retryable": True,
}


@pytest_asyncio.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async with system_on_dev_server(tmp_path_factory.mktemp("operator-retry")) as api:
        yield api


async def dead_letters(api: Api) -> list[dict[str, Any]]:
    response = await api.http.get("/coordination")
    assert response.status_code == 200, response.text
    letters: list[dict[str, Any]] = response.json()["dead_letters"]
    return letters


def payment_status(api: Api, order_id: str) -> list[str]:
    with sqlite3.connect(Path(api.stack.data_dir) / "payments.db") as db:
        rows = db.execute(
            "SELECT status FROM payments_payment WHERE order_id = ?", (order_id,)
        ).fetchall()
    return [str(status) for (status,) in rows]


async def test_failed_compensation_waits_for_an_operator_then_compensates(system: Api) -> None:
    assert (await system.http.put("/admin/faults/payments", json=VOID_REFUSED)).status_code == 200
    try:
        order_id = await system.place(order_body(country="XX"))
        failed = await system.wait_for(order_id, "FAILED", "COMPENSATED", within=60)
        assert (failed["status"], failed["failure_reason"]) == ("FAILED", "UNDELIVERABLE")
        void = next(c for c in failed["compensations"] if c["name"] == "authorize_payment")
        assert void["status"] == "failed"
        assert "injected fault" in void["error"]
        assert payment_status(system, order_id) == ["authorized"]  # the money is still held

        # Visible to operators: the coordinator's dead-letter list names it.
        letters = await poll(
            lambda: dead_letters(system),
            lambda found: any(d["order_id"] == order_id for d in found),
            within=20,
        )
        [letter] = [d for d in letters if d["order_id"] == order_id]
        assert (letter["compensation"], letter["status"]) == ("authorize_payment", "failed")

        # Still failing: a retry before the fix fails again, and the order stays FAILED.
        retried = await system.http.post(f"/orders/{order_id}/retry-compensations")
        assert retried.status_code == 202, retried.text
        again = await system.wait_for(order_id, "FAILED", within=60)
        assert (
            next(c for c in again["compensations"] if c["name"] == "authorize_payment")["rounds"]
            == 2
        )
    finally:
        assert (await system.http.delete("/admin/faults/payments")).status_code == 204

    retried = await system.http.post(
        f"/orders/{order_id}/retry-compensations", json={"note": "provider fixed"}
    )
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "COMPENSATING"
    done = await system.wait_for(order_id, "COMPENSATED", "FAILED", within=60)
    assert done["status"] == "COMPENSATED"
    assert all(c["status"] == "succeeded" for c in done["compensations"])
    assert payment_status(system, order_id) == ["voided"]
    await poll(
        lambda: dead_letters(system),
        lambda found: all(d["order_id"] != order_id for d in found),
        within=20,
    )
    # Nothing left to retry: the order is closed.
    repeat = await system.http.post(f"/orders/{order_id}/retry-compensations")
    assert repeat.status_code == 409
    assert repeat.json()["detail"] == "order is COMPENSATED, not FAILED"


async def test_retry_is_refused_for_orders_that_did_not_fail(system: Api) -> None:
    order_id = await system.place(order_body())
    await system.wait_for(order_id, "COMPLETED", within=60)
    response = await system.http.post(f"/orders/{order_id}/retry-compensations")
    assert response.status_code == 409
    unknown = await system.http.post("/orders/order-" + "0" * 32 + "/retry-compensations")
    assert unknown.status_code == 404


async def test_a_capture_failing_for_good_waits_for_an_operator_and_never_rolls_back(
    system: Api,
) -> None:
    # Issue 17: past the pivot the shipped order only goes forward. A non-retryable capture
    # failure leaves it FAILED with the capture as its dead letter, nothing undone, until
    # `POST /orders/{id}/retry` runs the capture again.
    refused = {"error_ratio": 1.0, "activity": "capture_payment", "non_retryable": True}
    assert (await system.http.put("/admin/faults/payments", json=refused)).status_code == 200
    try:
        order_id = await system.place(order_body())
        failed = await system.wait_for(order_id, "FAILED", "COMPENSATED", within=60)
        assert (failed["status"], failed["failure_reason"]) == ("FAILED", "CAPTURE_FAILED")
        assert all(c["status"] == "pending" for c in failed["compensations"])
        assert payment_status(system, order_id) == ["authorized"]
        letters = await poll(
            lambda: dead_letters(system),
            lambda found: any(d["order_id"] == order_id for d in found),
            within=20,
        )
        [letter] = [d for d in letters if d["order_id"] == order_id]
        assert (letter["compensation"], letter["status"]) == ("capture_payment", "failed")
        # Only compensations run on this route, and none failed.
        nothing = await system.http.post(f"/orders/{order_id}/retry-compensations")
        assert nothing.status_code == 409, nothing.text
    finally:
        assert (await system.http.delete("/admin/faults/payments")).status_code == 204

    retried = await system.http.post(f"/orders/{order_id}/retry", json={"note": "fixed"})
    assert retried.status_code == 202, retried.text
    done = await system.wait_for(order_id, "COMPLETED", "FAILED", within=60)
    assert done["status"] == "COMPLETED"
    assert payment_status(system, order_id) == ["captured"]
    await poll(
        lambda: dead_letters(system),
        lambda found: all(d["order_id"] != order_id for d in found),
        within=20,
    )
    again = await system.http.post(f"/orders/{order_id}/retry")
    assert again.status_code == 409
