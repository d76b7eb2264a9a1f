"""422 answers: the body and headers are checked before anything reaches Temporal."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.api_client import Api, order_body

Body = dict[str, Any]


def _with(change: Callable[[Body], None]) -> Body:
    body = order_body()
    change(body)
    return body


INVALID_BODIES: dict[str, tuple[Body, str]] = {
    "unknown top-level field": (_with(lambda b: b.update(coupon="FREE")), "coupon"),
    "unknown nested field": (
        _with(lambda b: b["items"][0].update(price_cents=1)),
        "items.0.price_cents",
    ),
    "quantity zero": (_with(lambda b: b["items"][0].update(quantity=0)), "items.0.quantity"),
    "quantity too large": (
        _with(lambda b: b["items"][0].update(quantity=1001)),
        "items.0.quantity",
    ),
    "quantity as string": (
        _with(lambda b: b["items"][0].update(quantity="2")),
        "items.0.quantity",
    ),
    "lowercase country": (
        _with(lambda b: b["shipping_address"].update(country="de")),
        "shipping_address.country",
    ),
    "three-letter country": (
        _with(lambda b: b["shipping_address"].update(country="DEU")),
        "shipping_address.country",
    ),
    "missing payment": (_with(lambda b: b.pop("payment")), "payment"),
    "missing city": (_with(lambda b: b["shipping_address"].pop("city")), "city"),
    "no items": (_with(lambda b: b.update(items=[])), "items"),
    "21 items": (_with(lambda b: b.update(items=[{"sku": "SKU-1", "quantity": 1}] * 21)), "items"),
    "customer id with a quote": (_with(lambda b: b.update(customer_id="c'1")), "customer_id"),
    "customer id too long": (_with(lambda b: b.update(customer_id="c" * 65)), "customer_id"),
    "empty card token": (_with(lambda b: b["payment"].update(card_token="")), "card_token"),
    "sku too long": (_with(lambda b: b["items"][0].update(sku="S" * 65)), "items.0.sku"),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
async def test_invalid_order_bodies_are_422_with_detail(api: Api, case: str) -> None:
    body, field = INVALID_BODIES[case]
    response = await api.http.post("/orders", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert isinstance(answer["detail"], str)
    assert field in answer["detail"]
    assert answer["errors"] and all(e["loc"][0] == "body" for e in answer["errors"])


@pytest.mark.parametrize("key", ["", "k" * 201, "tab\there"])
async def test_bad_idempotency_keys_are_422(api: Api, key: str) -> None:
    response = await api.http.post("/orders", json=order_body(), headers={"Idempotency-Key": key})
    assert response.status_code == 422, response.text
    assert "Idempotency-Key" in response.json()["detail"]


async def test_longest_idempotency_key_is_accepted(api: Api) -> None:
    key = ("k" * 168 + uuid.uuid4().hex)[:200]
    assert len(key) == 200
    await api.place(order_body(), **{"Idempotency-Key": key})


@pytest.mark.parametrize(
    "query",
    [
        {"status": "SHIPPED"},
        {"customer_id": "c'1 OR 1=1"},
        {"page_size": "0"},
        {"page_size": "101"},
        {"page_token": "not base64 !"},
        {"page_token": "AAAAAAAAAAAAAAAAAAAA"},
    ],
)
async def test_bad_list_filters_are_422(api: Api, query: dict[str, str]) -> None:
    response = await api.http.get("/orders", params=query)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize("path", ["cancel", "approve"])
async def test_unknown_fields_in_action_bodies_are_422(api: Api, path: str) -> None:
    order_id = f"order-{uuid.uuid4().hex}"
    response = await api.http.post(f"/orders/{order_id}/{path}", json={"force": True})
    assert response.status_code == 422, response.text
