"""Duplicate requests, as retrying clients and impatient operators send them.

Twenty concurrent POSTs with one Idempotency-Key start one saga. Cancels, approvals and
rejections repeated (concurrently, then again afterwards) change nothing after the first
that counts, and every repeat gets the answer the HTTP contract (ARCHITECTURE.md) gives
for the order's state:
a repeated cancel 202 while the order rolls back and after; a cancel 409 once the order
has shipped; an approval or rejection 409 once the order no longer awaits one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.faults.direct import nonce_of
from tests.faults.support import FaultSystem, fault_system
from tests.support.api_client import order_body
from tests.support.auth import order_id_for_key

CONCURRENT = 20
REPEATS = 3


@pytest_asyncio.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultSystem]:
    extra_env = {
        "SAGAWORKS_APPROVAL_TIMEOUT_S": "900",
        # Twenty updates at once on one saga queue up on a busy machine; this module checks
        # what they answer, not how fast, so give them more than the default 5 s bound.
        "SAGAWORKS_API_TEMPORAL_TIMEOUT_S": "20",
    }
    root = tmp_path_factory.mktemp("duplicates")
    # Shipping runs held, so a test can keep an order in the middle of shipping.
    async with fault_system(root, held=("shipping",), extra_env=extra_env) as system:
        yield system


async def test_twenty_concurrent_posts_with_one_key_start_one_saga(system: FaultSystem) -> None:
    body = order_body(sku="SKU-2", quantity=3)
    key = f"dup-{uuid.uuid4()}"
    responses = await asyncio.gather(
        *(
            system.http.post("/orders", json=body, headers={"Idempotency-Key": key})
            for _ in range(CONCURRENT)
        )
    )
    assert [r.status_code for r in responses] == [202] * CONCURRENT, [r.text for r in responses]
    order_ids = {r.json()["order_id"] for r in responses}
    assert len(order_ids) == 1
    (order_id,) = order_ids
    assert Counter(r.json()["replayed"] for r in responses) == {False: 1, True: CONCURRENT - 1}
    system.orders[order_id] = responses[0].json()

    final = await system.finish(order_id)
    assert final["status"] == "COMPLETED", final
    # One workflow execution, ever, for that key; one reservation, payment and parcel.
    client = await system.temporal()
    runs = [w.run_id async for w in client.list_workflows(f"WorkflowId = '{order_id}'")]
    assert len(runs) == 1
    nonce = await nonce_of(system, order_id)  # step keys are <order_id>:<nonce>:<step>
    for service, step in (
        ("inventory", "reserve_stock"),
        ("payments", "authorize_payment"),
        ("shipping", "create_shipment"),
    ):
        assert len(system.effect_ids(service, f"{order_id}:{nonce}:{step}")) == 1, service
    assert system.invariant_violations() == []


async def test_repeated_cancels_are_harmless_and_answered_alike(system: FaultSystem) -> None:
    order_id = await system.place(order_body(sku="SKU-3", quantity=1))
    await system.wait_for(order_id, "AWAITING_APPROVAL")

    burst = await _send(system, order_id, ["cancel"] * CONCURRENT)
    assert [r.status_code for r in burst] == [202] * CONCURRENT, [r.text for r in burst]
    final = await system.finish(order_id)
    assert (final["status"], final["failure_reason"]) == ("COMPENSATED", "CANCELLED_BY_CUSTOMER")

    later = await _send(system, order_id, ["cancel"] * REPEATS)
    assert [(r.status_code, r.json()["status"]) for r in later] == [(202, "COMPENSATED")] * REPEATS
    decisions = await _send(system, order_id, ["approve", "reject"] * REPEATS)
    assert {r.status_code for r in decisions} == {409}
    # Rolled back once: the stock returned once, the authorization voided once.
    nonce = await nonce_of(system, order_id)
    assert _undo_keys(system, order_id) == {
        "inventory": [f"{order_id}:{nonce}:reserve_stock:undo"],
        # The customer's slot in the hold ledger was given back once too.
        "payments": [
            f"{order_id}:{nonce}:authorize_payment:undo",
            f"{order_id}:{nonce}:hold_for_approval:undo",
        ],
    }
    assert system.invariant_violations() == []


async def test_repeated_approvals_decide_once_and_cancels_after_shipping_are_409(
    system: FaultSystem,
) -> None:
    key = f"approve-{uuid.uuid4()}"
    order_id = order_id_for_key(system.stack.env, key)
    system.holds.engage("create_shipment", "before", order_id)
    await system.place(order_body(sku="SKU-3", quantity=1), key=key)
    await system.wait_for(order_id, "AWAITING_APPROVAL")

    burst = await _send(system, order_id, ["approve"] * CONCURRENT)
    codes = Counter(r.status_code for r in burst)
    assert codes == {200: 1, 409: CONCURRENT - 1}, [r.text for r in burst]
    assert all(
        r.json()["detail"].startswith("order is not awaiting approval")
        for r in burst
        if r.status_code == 409
    )
    # Shipping has started (the worker holds the step): from here on a cancel is too late.
    await system.wait_held(order_id, "create_shipment", "before")
    shipping = await _send(system, order_id, ["cancel"] * REPEATS)
    assert [(r.status_code, r.json()["detail"]) for r in shipping] == [
        (409, "order has shipped; it can no longer be cancelled")
    ] * REPEATS
    system.holds.release_all()
    final = await system.finish(order_id)
    assert final["status"] == "COMPLETED", final

    later = await _send(system, order_id, ["approve", "reject", "cancel"] * REPEATS)
    assert {r.status_code for r in later} == {409}
    assert {r.json()["detail"] for r in later} == {
        "order is not awaiting approval (it is COMPLETED)",
        "order is already COMPLETED",
    }
    assert [s["name"] for s in final["steps"]].count("capture_payment") == 1
    nonce = await nonce_of(system, order_id)
    # The hold for approval was taken and, once decided, freed: each once.
    assert system.recorded_keys("payments", f"{order_id}:") == [
        f"{order_id}:{nonce}:authorize_payment",
        f"{order_id}:{nonce}:capture_payment",
        f"{order_id}:{nonce}:hold_for_approval",
        f"{order_id}:{nonce}:release_approval_hold",
    ]
    assert system.invariant_violations() == []


async def test_approve_and_reject_racing_decide_once_and_the_outcome_matches(
    system: FaultSystem,
) -> None:
    order_id = await system.place(order_body(sku="SKU-3", quantity=1))
    await system.wait_for(order_id, "AWAITING_APPROVAL")

    actions = ["approve", "reject"] * (CONCURRENT // 2)
    burst = await _send(system, order_id, actions)
    accepted = [a for a, r in zip(actions, burst, strict=True) if r.status_code == 200]
    assert len(accepted) == 1, [r.text for r in burst]
    assert {r.status_code for r in burst} == {200, 409}

    final = await system.finish(order_id)
    expected = {
        "approve": ("COMPLETED", None),
        "reject": ("COMPENSATED", "REJECTED_BY_OPERATOR"),
    }[accepted[0]]
    assert (final["status"], final["failure_reason"]) == expected
    # Whoever won, the rejected side's cancel is refused too: nothing left to cancel.
    again = await _send(system, order_id, ["cancel", "approve", "reject"])
    assert {r.status_code for r in again} == {409}, [r.text for r in again]
    assert system.invariant_violations() == []


async def _send(system: FaultSystem, order_id: str, actions: list[str]) -> list[httpx.Response]:
    return list(
        await asyncio.gather(*(system.http.post(f"/orders/{order_id}/{a}") for a in actions))
    )


def _undo_keys(system: FaultSystem, order_id: str) -> dict[str, list[str]]:
    return {
        service: [k for k in system.recorded_keys(service, f"{order_id}:") if k.endswith(":undo")]
        for service in ("inventory", "payments")
    }
