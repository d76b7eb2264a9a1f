"""The order lifecycle over HTTP, against real worker processes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.support.api_client import Api, order_body, poll
from workflows.order import escape_markdown


async def test_order_is_accepted_then_completes(api: Api) -> None:
    body = order_body(quantity=2)
    response = await api.http.post("/orders", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    order_id = accepted["order_id"]
    assert order_id.startswith("order-")
    assert accepted == {"order_id": order_id, "status": "PENDING", "replayed": False}
    assert response.headers["Location"] == f"/orders/{order_id}"

    done = await api.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED")
    assert done["status"] == "COMPLETED"
    assert done["failure_reason"] is None
    assert done["total_cents"] == 2 * 1_800
    assert done["tracking_number"]
    assert [s["name"] for s in done["steps"]] == [
        "reserve_stock",
        "authorize_payment",
        "create_shipment",
        "capture_payment",
        "send_confirmation",
    ]
    assert all(s["status"] == "succeeded" for s in done["steps"])

    # What an operator sees in the Temporal UI, and the fingerprint idempotency relies on.
    described = await api.temporal.get_workflow_handle(order_id).describe()
    # Customer text is escaped: the Web UI renders the summary as Markdown.
    expected = f"Checkout for {escape_markdown(body['customer_id'])}: 2 items"
    assert await described.static_summary() == expected
    assert escape_markdown("SKU-1") in (await described.static_details() or "")
    assert len(await described.memo_value("request_sha256", "")) == 64


@pytest.mark.parametrize("path", ["", "/cancel", "/approve", "/reject"])
async def test_unknown_order_is_404(api: Api, path: str) -> None:
    for order_id in (f"order-{uuid.uuid4().hex}", "not-an-order"):
        method = api.http.get if not path else api.http.post
        response = await method(f"/orders/{order_id}{path}")
        assert response.status_code == 404, response.text
        assert response.json() == {"detail": f"order {order_id} not found"}


async def test_declined_card_is_compensated(api: Api) -> None:
    order_id = await api.place(order_body(card="tok_decline"))
    done = await api.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED")
    assert (done["status"], done["failure_reason"]) == ("COMPENSATED", "PAYMENT_DECLINED")


async def test_concurrent_posts_with_one_key_start_one_order(api: Api) -> None:
    body = order_body()
    key = f"key-{uuid.uuid4()}"
    responses = await asyncio.gather(
        *(api.http.post("/orders", json=body, headers={"Idempotency-Key": key}) for _ in range(12))
    )
    assert [r.status_code for r in responses] == [202] * 12, [r.text for r in responses]
    answers = [r.json() for r in responses]
    assert len({a["order_id"] for a in answers}) == 1
    assert sorted(a["replayed"] for a in answers) == [False] + [True] * 11
    order_id = answers[0]["order_id"]
    assert {r.headers["Location"] for r in responses} == {f"/orders/{order_id}"}

    # The key still names the same order once the saga is over.
    await api.wait_for(order_id, "COMPLETED")
    again = await api.http.post("/orders", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 202
    assert again.json() == {"order_id": order_id, "status": "COMPLETED", "replayed": True}

    # Once visibility shows the saga's last write, it would show any second saga too.
    listed = await poll(
        lambda: api.http.get("/orders", params={"customer_id": body["customer_id"]}),
        lambda r: any(o["status"] == "COMPLETED" for o in r.json()["orders"]),
    )
    assert [o["order_id"] for o in listed.json()["orders"]] == [order_id]
    runs = [w.run_id async for w in api.temporal.list_workflows(f"WorkflowId = '{order_id}'")]
    assert len(runs) == 1


async def test_same_key_with_a_different_body_is_422(api: Api) -> None:
    key = f"key-{uuid.uuid4()}"
    first = order_body()
    order_id = await api.place(first, **{"Idempotency-Key": key})

    changed = order_body(first["customer_id"], quantity=3)
    response = await api.http.post("/orders", json=changed, headers={"Idempotency-Key": key})
    assert response.status_code == 422, response.text
    assert "Idempotency-Key" in response.json()["detail"]

    # Key order matters not: the same body with its fields reordered is the same request.
    reordered = dict(reversed(list(first.items())))
    replay = await api.http.post("/orders", json=reordered, headers={"Idempotency-Key": key})
    assert replay.status_code == 202
    assert replay.json()["order_id"] == order_id
    assert replay.json()["replayed"] is True


async def test_cancel_while_awaiting_approval_compensates(api: Api) -> None:
    order_id = await api.place(order_body(sku="SKU-3", quantity=1))
    await api.wait_for(order_id, "AWAITING_APPROVAL")

    response = await api.http.post(f"/orders/{order_id}/cancel", json={"reason": "changed mind"})
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested"] is True

    done = await api.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED")
    assert (done["status"], done["failure_reason"]) == ("COMPENSATED", "CANCELLED_BY_CUSTOMER")
    assert {c["status"] for c in done["compensations"]} <= {"succeeded", "not_needed"}

    again = await api.http.post(f"/orders/{order_id}/cancel")
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "COMPENSATED"

    late = await api.http.post(f"/orders/{order_id}/approve")
    assert late.status_code == 409, late.text
    assert "not awaiting approval" in late.json()["detail"]


async def test_cancel_of_a_completed_order_is_409(api: Api) -> None:
    order_id = await api.place(order_body())
    await api.wait_for(order_id, "COMPLETED")
    response = await api.http.post(f"/orders/{order_id}/cancel")
    assert response.status_code == 409, response.text
    assert response.json() == {"detail": "order is already COMPLETED"}


async def test_approved_high_value_order_completes(api: Api) -> None:
    order_id = await api.place(order_body(sku="SKU-3", quantity=1))
    waiting = await api.wait_for(order_id, "AWAITING_APPROVAL")
    assert waiting["total_cents"] == 189_000
    assert waiting["current_step"] == "await_approval"

    response = await api.http.post(f"/orders/{order_id}/approve", json={"note": "known customer"})
    assert response.status_code == 200, response.text
    assert response.json()["order_id"] == order_id
    # The answer already reflects the decision: the saga has left the approval wait.
    assert response.json()["status"] == "PENDING"

    done = await api.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED")
    assert done["status"] == "COMPLETED"
    assert [s["status"] for s in done["steps"] if s["name"] == "await_approval"] == ["succeeded"]

    twice = await api.http.post(f"/orders/{order_id}/approve")
    assert twice.status_code == 409, twice.text
    assert twice.json()["detail"] == "order is not awaiting approval (it is COMPLETED)"


async def test_approving_an_order_not_held_for_approval_is_409(api: Api) -> None:
    order_id = await api.place(order_body())
    response = await api.http.post(f"/orders/{order_id}/approve")
    assert response.status_code == 409, response.text
    assert response.json()["detail"].startswith("order is not awaiting approval")


async def test_rejected_order_is_compensated(api: Api) -> None:
    order_id = await api.place(order_body(sku="SKU-3", quantity=1))
    await api.wait_for(order_id, "AWAITING_APPROVAL")
    response = await api.http.post(f"/orders/{order_id}/reject", json={"note": "no"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "COMPENSATING"
    done = await api.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED")
    assert (done["status"], done["failure_reason"]) == ("COMPENSATED", "REJECTED_BY_OPERATOR")
