"""The returns HTTP contract on the real stack: request, follow, receive, cancel, retry.

Keys are issued by the real key store; a customer acts on their own orders' returns only.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from activities.inventory import CATALOGUE
from tests.support.api_client import Api, order_body, poll
from tooling.auth import bearer, issue_key

PRICE = {p.sku: p.price_cents for p in CATALOGUE}
Headers = dict[str, str]


def customer(api: Api) -> tuple[str, Headers]:
    customer_id = f"c-{uuid.uuid4().hex[:10]}"
    return customer_id, bearer(issue_key(api.stack.env, "customer", customer_id=customer_id))


async def completed_order(api: Api, headers: Headers, *, quantity: int = 3) -> str:
    body = order_body(quantity=quantity)
    del body["customer_id"]  # the key names the customer
    response = await api.http.post("/orders", json=body, headers=headers)
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    final = await api.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED")
    assert final["status"] == "COMPLETED", final
    return order_id


def return_body(quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"items": [{"sku": "SKU-1", "quantity": quantity}], "reason": "damaged", **extra}


async def request_return(
    api: Api, order_id: str, headers: Headers, quantity: int = 1, **extra_headers: str
) -> httpx.Response:
    return await api.http.post(
        f"/orders/{order_id}/returns",
        json=return_body(quantity),
        headers={**headers, **extra_headers},
    )


async def wait_return(
    api: Api, return_id: str, headers: Headers, *states: str, within: float = 60
) -> dict[str, Any]:
    def reached(response: httpx.Response) -> bool:
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200 and response.json()["status"] in states

    answer = await poll(
        lambda: api.http.get(f"/returns/{return_id}", headers=headers), reached, within=within
    )
    body: dict[str, Any] = answer.json()
    return body


async def test_a_return_end_to_end_is_refunded_its_share(api: Api) -> None:
    _, me = customer(api)
    order_id = await completed_order(api, me, quantity=3)

    answer = await request_return(api, order_id, me, 2, **{"Idempotency-Key": "ret-1"})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    return_id = accepted["return_id"]
    assert answer.headers["Location"] == f"/returns/{return_id}"
    assert (accepted["status"], accepted["order_id"], accepted["replayed"]) == (
        "AWAITING_PARCEL",
        order_id,
        False,
    )
    again = await request_return(api, order_id, me, 2, **{"Idempotency-Key": "ret-1"})
    assert again.status_code == 202 and again.json()["return_id"] == return_id
    assert again.json()["replayed"] is True

    waiting = await wait_return(api, return_id, me, "AWAITING_PARCEL")
    assert waiting["refund_cents"] == 2 * PRICE["SKU-1"]
    listed = await poll(
        lambda: api.http.get("/returns", params={"order_id": order_id}, headers=me),
        lambda r: (
            r.status_code == 200 and [x["return_id"] for x in r.json()["returns"]] == [return_id]
        ),
        within=30,
    )
    assert listed.json()["returns"][0]["order_id"] == order_id

    # Only an operator says the parcel is in; a customer's key gets 403.
    assert (await api.http.post(f"/returns/{return_id}/receive", headers=me)).status_code == 403
    await poll(
        lambda: api.http.get(f"/returns/{return_id}", headers=me),
        lambda r: r.json()["current_step"] == "await_parcel",
    )
    received = await api.http.post(f"/returns/{return_id}/receive", json={"note": "box ok"})
    assert received.status_code == 200, received.text
    assert received.json()["received"] is True
    done = await wait_return(api, return_id, me, "REFUNDED", "FAILED")
    assert done["status"] == "REFUNDED", done
    assert [s["name"] for s in done["steps"]] == [
        "claim_return",
        "issue_return_label",
        "await_parcel",
        "restock_items",
        "refund_return",
    ]
    # A repeat of the receive is answered as the first one was; a cancel now is too late.
    assert (await api.http.post(f"/returns/{return_id}/receive")).status_code == 200
    late = await api.http.post(f"/returns/{return_id}/cancel", headers=me)
    assert late.status_code == 409, late.text


async def test_returns_never_claim_more_than_the_order_bought(api: Api) -> None:
    _, me = customer(api)
    order_id = await completed_order(api, me, quantity=3)

    # Two returns at once, each for two of the three: one is taken, one refused.
    answers = await asyncio.gather(
        request_return(api, order_id, me, 2), request_return(api, order_id, me, 2)
    )
    assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert "exceed" in refused.json()["detail"]
    # What is left can still be returned; beyond it, nothing.
    assert (await request_return(api, order_id, me, 1)).status_code == 202
    assert (await request_return(api, order_id, me, 1)).status_code == 409


async def test_only_a_completed_order_of_your_own_can_be_returned(api: Api) -> None:
    _, me = customer(api)
    _, stranger = customer(api)
    order_id = await completed_order(api, me, quantity=1)
    # Another customer's order answers 404, exactly as an unknown one does.
    assert (await request_return(api, order_id, stranger)).status_code == 404
    unknown = f"order-{uuid.uuid4().hex}"
    assert (await request_return(api, unknown, me)).status_code == 404

    held = order_body(sku="SKU-3", quantity=1)
    del held["customer_id"]
    placed = await api.http.post("/orders", json=held, headers=me)
    held_id = placed.json()["order_id"]
    await api.wait_for(held_id, "AWAITING_APPROVAL")
    not_yet = await request_return(api, held_id, me)
    assert not_yet.status_code == 409 and "COMPLETED" in not_yet.json()["detail"]
    await api.http.post(f"/orders/{held_id}/cancel", headers=me)

    return_id = (await request_return(api, order_id, me)).json()["return_id"]
    assert (await api.http.get(f"/returns/{return_id}", headers=stranger)).status_code == 404
    assert (await api.http.post(f"/returns/{return_id}/cancel", headers=stranger)).status_code == (
        404
    )
    mine = await api.http.get("/returns", params={"order_id": order_id}, headers=stranger)
    assert mine.status_code == 200 and mine.json()["returns"] == []


async def test_a_cancelled_return_frees_its_items(api: Api) -> None:
    _, me = customer(api)
    order_id = await completed_order(api, me, quantity=1)
    return_id = (await request_return(api, order_id, me)).json()["return_id"]

    cancelled = await api.http.post(
        f"/returns/{return_id}/cancel", json={"reason": "kept it"}, headers=me
    )
    assert cancelled.status_code == 202, cancelled.text
    final = await wait_return(api, return_id, me, "CANCELLED", "FAILED")
    assert (final["status"], final["failure_reason"]) == ("CANCELLED", "CANCELLED_BY_CUSTOMER")
    assert (await api.http.post(f"/returns/{return_id}/cancel", headers=me)).status_code == 202
    assert (await api.http.post(f"/returns/{return_id}/receive")).status_code == 409
    assert (await request_return(api, order_id, me)).status_code == 202


async def test_a_refund_failing_for_good_waits_in_the_dead_letters_for_a_retry(api: Api) -> None:
    _, me = customer(api)
    order_id = await completed_order(api, me, quantity=1)
    return_id = (await request_return(api, order_id, me)).json()["return_id"]
    fault = {"error_ratio": 1.0, "activity": "refund_return", "non_retryable": True}
    assert (await api.http.put("/admin/faults/payments", json=fault)).status_code == 200
    try:
        await poll(
            lambda: api.http.get(f"/returns/{return_id}"),
            lambda r: r.json()["current_step"] == "await_parcel",
        )
        assert (await api.http.post(f"/returns/{return_id}/retry")).status_code == 409
        await api.http.post(f"/returns/{return_id}/receive")
        failed = await wait_return(api, return_id, me, "FAILED")
        assert failed["failure_reason"] == "REFUND_FAILED"
        assert failed["steps"][-1]["error_code"] == "InjectedFault"
        await poll(
            lambda: api.http.get("/coordination"),
            lambda r: any(d["order_id"] == return_id for d in r.json()["dead_letters"]),
            within=30,
        )
    finally:
        assert (await api.http.delete("/admin/faults/payments")).status_code == 204

    retried = await api.http.post(f"/returns/{return_id}/retry", json={"note": "fixed"})
    assert retried.status_code == 202, retried.text
    final = await wait_return(api, return_id, me, "REFUNDED")
    assert final["failure_reason"] is None and final["refund_cents"] == PRICE["SKU-1"]
    await poll(
        lambda: api.http.get("/coordination"),
        lambda r: all(d["order_id"] != return_id for d in r.json()["dead_letters"]),
        within=30,
    )


async def test_return_bodies_are_strict(api: Api) -> None:
    _, me = customer(api)
    order_id = f"order-{uuid.uuid4().hex}"
    for body in (
        return_body(extra="field"),
        return_body(0),
        {"items": [], "reason": "x"},
        {**return_body(), "reason": "bad\x00reason"},
        {**return_body(), "reason": ""},
    ):
        answer = await api.http.post(f"/orders/{order_id}/returns", json=body, headers=me)
        assert answer.status_code == 422, (body, answer.text)
    assert (await api.http.get("/returns/not-a-return", headers=me)).status_code == 404
    bad_filter = await api.http.get("/returns", params={"order_id": "x"}, headers=me)
    assert bad_filter.status_code == 422
