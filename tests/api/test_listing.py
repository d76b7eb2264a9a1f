"""GET /orders: visibility queries by customer and status, one page at a time."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.api_client import Api, order_body, poll


async def _pages(api: Api, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Follow next_page_token to the end; every page holds at most page_size orders."""
    orders: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(10):
        response = await api.http.get(
            "/orders", params={**params, "page_token": token} if token else params
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["orders"]) <= params["page_size"]
        orders += page["orders"]
        token = page["next_page_token"]
        if token is None:
            return orders
    raise AssertionError("pagination did not end")


async def test_list_filters_by_customer_and_status_with_pagination(api: Api) -> None:
    customer = order_body()["customer_id"]
    completed = [await api.place(order_body(customer)) for _ in range(2)]
    declined = await api.place(order_body(customer, card="tok_decline"))
    for order_id in completed:
        await api.wait_for(order_id, "COMPLETED")
    await api.wait_for(declined, "COMPENSATED")

    def listing(**params: Any) -> Any:
        return lambda: api.http.get("/orders", params={"customer_id": customer, **params})

    # Visibility lags the workflows: wait until it has caught up with all three.
    everything = await poll(
        listing(),
        lambda r: (
            sorted(o["status"] for o in r.json()["orders"])
            == ["COMPENSATED", "COMPLETED", "COMPLETED"]
        ),
    )
    assert everything.json()["next_page_token"] is None
    by_id = {o["order_id"]: o for o in everything.json()["orders"]}
    assert set(by_id) == {*completed, declined}
    assert by_id[declined]["failure_reason"] == "PAYMENT_DECLINED"
    assert all(o["customer_id"] == customer for o in by_id.values())
    assert all(o["started_at"] and o["closed_at"] for o in by_id.values())

    first: httpx.Response = await listing(status="COMPLETED", page_size=1)()
    assert len(first.json()["orders"]) == 1
    assert first.json()["next_page_token"]
    paged = await _pages(api, {"customer_id": customer, "status": "COMPLETED", "page_size": 1})
    assert sorted(o["order_id"] for o in paged) == sorted(completed)

    compensated = (await listing(status="COMPENSATED")()).json()["orders"]
    assert [o["order_id"] for o in compensated] == [declined]

    # A token belongs to the filters it was issued for.
    token = first.json()["next_page_token"]
    elsewhere = await api.http.get(
        "/orders", params={"customer_id": customer, "status": "COMPENSATED", "page_token": token}
    )
    assert elsewhere.status_code == 422, elsewhere.text


async def test_list_without_filters_returns_orders(api: Api) -> None:
    order_id = await api.place(order_body())
    response = await poll(
        lambda: api.http.get("/orders", params={"page_size": 100}),
        lambda r: order_id in {o["order_id"] for o in r.json()["orders"]},
    )
    assert response.status_code == 200
