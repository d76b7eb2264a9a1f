"""The gateway as a security boundary, on the real stack: principals, ownership, the
operator plane, limits and input hygiene. Every key is issued by the real key store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType

from tests.support.api_client import Api, order_body, poll
from tests.support.auth import bearer, issue_key
from tests.support.stack import REPO_ROOT


def _customer(api: Api, customer_id: str | None = None) -> tuple[str, dict[str, str]]:
    customer = customer_id or f"c-{uuid.uuid4().hex[:10]}"
    return customer, bearer(issue_key(api.stack.env, "customer", customer_id=customer))


def _own_body(**kwargs: Any) -> dict[str, Any]:
    body = order_body(**kwargs)
    del body["customer_id"]  # a customer's key names the customer
    return body


async def _place(api: Api, headers: dict[str, str], body: dict[str, Any], **extra: str) -> str:
    response = await api.http.post("/orders", json=body, headers={**headers, **extra})
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    return order_id


# --- principals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer sw_0123456789abcdef_notakey", "Bearer x y"],
)
async def test_missing_malformed_or_unknown_tokens_get_401(
    api: Api, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=api.http.base_url, headers=headers) as anonymous:
        for method, path in [("GET", "/orders"), ("POST", "/orders"), ("GET", "/coordination")]:
            response = await anonymous.request(method, path, json=order_body())
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert isinstance(response.json()["detail"], str)


async def test_probes_need_no_token(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.http.base_url) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/readyz")).status_code == 200


OPERATOR_ROUTES = [
    ("POST", "/orders/order-{unknown}/approve", {}),
    ("POST", "/orders/order-{unknown}/reject", {}),
    ("POST", "/orders/order-{unknown}/retry-compensations", {}),
    ("POST", "/orders/order-{unknown}/retry", {}),
    ("GET", "/coordination", None),
    ("GET", "/coordination/stream", None),
    ("POST", "/coordination/operate", {"action": "pause_intake"}),
    ("PUT", "/admin/faults/inventory", {"error_ratio": 1.0}),
    ("DELETE", "/admin/faults/inventory", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATOR_ROUTES)
async def test_operator_routes_refuse_customers_with_403_and_strangers_with_401(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    _, customer = _customer(api)
    url = path.format(unknown=uuid.uuid4().hex)
    refused = await api.http.request(method, url, json=body, headers=customer)
    assert refused.status_code == 403, refused.text
    async with httpx.AsyncClient(base_url=api.http.base_url) as anonymous:
        assert (await anonymous.request(method, url, json=body)).status_code == 401
    # Nothing a refused call asked for happened.
    state = (await api.http.get("/coordination")).json()
    assert state["intake"]["paused"] is False
    faults = await api.http.put("/admin/faults/inventory", json={"error_ratio": 0.0})
    assert faults.json()["error_ratio"] == 0.0


async def test_a_revoked_key_stops_working_at_once(api: Api) -> None:
    _, headers = _customer(api)
    assert (await api.http.get("/orders", headers=headers)).status_code == 200
    key_id = headers["Authorization"].removeprefix("Bearer sw_").split("_", 1)[0]
    revoke = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.keys", "revoke", key_id],
        cwd=REPO_ROOT,
        env=api.stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stderr
    after = await api.http.get("/orders", headers=headers)
    assert after.status_code == 401
    assert after.headers["WWW-Authenticate"] == "Bearer"


# --- ownership -----------------------------------------------------------------------------------


async def test_customers_see_and_cancel_only_their_own_orders(api: Api) -> None:
    alice_id, alice = _customer(api)
    bob_id, bob = _customer(api)
    # Held for approval, so it is still open when Bob tries to cancel it.
    order_id = await _place(api, alice, _own_body(sku="SKU-3", quantity=1))
    mine = await api.http.get(f"/orders/{order_id}", headers=alice)
    assert mine.status_code == 200 and mine.json()["customer_id"] == alice_id

    foreign = await api.http.get(f"/orders/{order_id}", headers=bob)
    unknown_id = f"order-{uuid.uuid4().hex}"
    unknown = await api.http.get(f"/orders/{unknown_id}", headers=bob)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["detail"] == unknown.json()["detail"].replace(unknown_id, order_id)

    cancel = await api.http.post(f"/orders/{order_id}/cancel", headers=bob)
    assert cancel.status_code == 404, cancel.text
    await api.wait_for(order_id, "AWAITING_APPROVAL")
    assert (await api.http.get(f"/orders/{order_id}", headers=alice)).json()[
        "cancel_requested"
    ] is False

    # Visibility lags: wait until Alice's own list shows the order, then Bob's lists.
    await poll(
        lambda: api.http.get("/orders", headers=alice),
        lambda r: order_id in {o["order_id"] for o in r.json()["orders"]},
    )
    for query in ["", f"?customer_id={alice_id}", "?status=AWAITING_APPROVAL"]:
        listed = await api.http.get(f"/orders{query}", headers=bob)
        assert listed.status_code == 200
        assert {o["customer_id"] for o in listed.json()["orders"]} <= {bob_id}
    everyone = await api.http.get(f"/orders?customer_id={alice_id}")  # the operator
    assert order_id in {o["order_id"] for o in everyone.json()["orders"]}

    own_cancel = await api.http.post(f"/orders/{order_id}/cancel", headers=alice)
    assert own_cancel.status_code == 202, own_cancel.text


async def test_a_customer_cannot_order_for_another_customer(api: Api) -> None:
    _, alice = _customer(api)
    response = await api.http.post("/orders", json=order_body("someone-else"), headers=alice)
    assert response.status_code == 403, response.text
    assert "themselves" in response.json()["detail"]


async def test_an_operator_must_name_the_customer(api: Api) -> None:
    response = await api.http.post("/orders", json=_own_body())
    assert response.status_code == 422, response.text


async def test_idempotency_keys_are_scoped_to_the_caller(api: Api) -> None:
    _, alice = _customer(api)
    _, bob = _customer(api)
    key = {"Idempotency-Key": f"shared-{uuid.uuid4().hex}"}
    body = _own_body()
    first = await api.http.post("/orders", json=body, headers={**alice, **key})
    again = await api.http.post("/orders", json=body, headers={**alice, **key})
    other = await api.http.post("/orders", json=body, headers={**bob, **key})
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json() == {**first.json(), "replayed": True, "status": again.json()["status"]}
    assert other.json()["order_id"] != first.json()["order_id"]
    assert other.json()["replayed"] is False
    # Bob's order is his own; Alice's stays invisible to him.
    assert (
        await api.http.get(f"/orders/{other.json()['order_id']}", headers=bob)
    ).status_code == 200
    hidden = await api.http.get(f"/orders/{first.json()['order_id']}", headers=bob)
    assert hidden.status_code == 404


async def test_the_operator_on_record_is_the_authenticated_principal(api: Api) -> None:
    name = f"op-{uuid.uuid4().hex[:8]}"
    operator = bearer(issue_key(api.stack.env, "operator", name=name))
    order_id = await api.place(order_body(sku="SKU-3", quantity=1))
    await api.wait_for(order_id, "AWAITING_APPROVAL")
    decided = await api.http.post(
        f"/orders/{order_id}/reject", json={"note": "checked"}, headers=operator
    )
    assert decided.status_code == 200, decided.text
    forged = await api.http.post(f"/orders/{order_id}/reject", json={"operator": "mallory"})
    assert forged.status_code == 422  # no body field names the operator
    history = await api.temporal.get_workflow_handle(order_id).fetch_history()
    decisions = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    converter = api.temporal.data_converter
    (payloads,) = decisions
    (decision,) = await converter.decode(payloads.args.payloads)
    assert decision["operator"] == name


# --- the operator's browser session ------------------------------------------------------------


async def test_operator_session_cookie_needs_csrf_for_changes(api: Api) -> None:
    operator = issue_key(api.stack.env, "operator", name="browser")
    async with httpx.AsyncClient(base_url=api.http.base_url) as browser:
        login = await browser.post("/login", data={"key": operator, "next": "/coordination"})
        assert login.status_code == 303 and login.headers["location"] == "/coordination"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=" in cookie
        assert (await browser.get("/coordination")).status_code == 200
        forged = await browser.post("/coordination/operate", data={"action": "pause_intake"})
        assert forged.status_code in (403, 422)  # neither a CSRF token nor a JSON body
        plain = await browser.post(
            "/orders/order-0/approve", headers={"content-type": "text/plain"}
        )
        assert plain.status_code == 403, plain.text
        csrf = (await browser.get("/session")).json()["csrf_token"]
        resumed = await browser.post(
            "/coordination/operate",
            json={"action": "resume_intake"},
            headers={"X-CSRF-Token": csrf},
        )
        assert resumed.status_code == 200, resumed.text
        await browser.post("/logout")
        assert (await browser.get("/coordination")).status_code == 401


async def test_login_refuses_customer_keys(api: Api) -> None:
    _, customer = _customer(api)
    token = customer["Authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=api.http.base_url) as browser:
        response = await browser.post("/login", data={"key": token})
        assert response.status_code == 401
        assert "set-cookie" not in response.headers


async def test_unknown_hosts_are_refused(api: Api) -> None:
    response = await api.http.get("/healthz", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert response.json() == {"detail": "invalid Host header"}
    assert (await api.http.get("/healthz", headers={"Host": "localhost"})).status_code == 200


# --- limits ------------------------------------------------------------------------------------


async def test_bodies_above_64_kib_get_413(api: Api) -> None:
    big = {**order_body(), "padding": "x" * 70_000}
    response = await api.http.post("/orders", json=big)
    assert response.status_code == 413
    assert "detail" in response.json()

    async def chunks() -> Any:  # no Content-Length: counted as it streams in
        for _ in range(80):
            yield b"x" * 1024

    streamed = await api.http.post(
        "/orders", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


async def test_validation_errors_are_bounded(api: Api) -> None:
    # 20 items (the most a body may carry), each wrong three ways: 60 field errors.
    body = {**order_body(), "items": [{"sku": "", "quantity": 0, "x": 1} for _ in range(20)]}
    response = await api.http.post("/orders", json=body)
    assert response.status_code == 422
    assert len(response.json()["errors"]) <= 20
    assert "more" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [("shipping_address", "name"), ("shipping_address", "line1"), ("payment", "card_token")],
)
@pytest.mark.parametrize("char", ["\u0000", "\u0007", "\u001b", "\u007f", "\u0085"])
async def test_control_characters_are_refused(api: Api, path: tuple[str, str], char: str) -> None:
    body = order_body()
    body[path[0]][path[1]] = f"a{char}b"
    response = await api.http.post("/orders", json=body)
    assert response.status_code == 422, response.text
    assert path[1] in response.json()["detail"]


async def test_control_characters_refused_in_items_and_reasons(api: Api) -> None:
    body = order_body()
    body["items"][0]["sku"] = "SKU-\u00001"
    assert (await api.http.post("/orders", json=body)).status_code == 422
    order_id = await api.place(order_body(sku="SKU-3", quantity=1))
    cancel = await api.http.post(f"/orders/{order_id}/cancel", json={"reason": "x\u0000"})
    assert cancel.status_code == 422


async def test_streams_are_capped_per_principal_and_end_at_their_lifetime(api: Api) -> None:
    operator = bearer(issue_key(api.stack.env, "operator", name=f"s-{uuid.uuid4().hex[:6]}"))
    async with httpx.AsyncClient(base_url=api.http.base_url, headers=operator, timeout=30) as h:
        opened = [
            await h.send(h.build_request("GET", "/coordination/stream"), stream=True)
            for _ in range(3)
        ]
        try:
            assert [r.status_code for r in opened] == [200, 200, 200]
            fourth = await h.get("/coordination/stream")
            assert fourth.status_code == 429, fourth.text
            assert fourth.headers["Retry-After"].isdigit()
            # The stream lifetime is 3 s in this suite: the server ends it with `reconnect`.
            text = ""
            async for chunk in opened[0].aiter_text():
                text += chunk
            assert "event: reconnect" in text
        finally:
            for response in opened:
                await response.aclose()
        # Closed streams give their slots back.
        again = await h.send(h.build_request("GET", "/coordination/stream"), stream=True)
        assert again.status_code == 200
        await again.aclose()


async def test_orders_held_for_approval_are_capped_per_customer(api: Api) -> None:
    _, carol = _customer(api)
    held = [await _place(api, carol, _own_body(sku="SKU-3", quantity=1)) for _ in range(3)]
    for order_id in held:
        await api.wait_for(order_id, "AWAITING_APPROVAL")
    await poll(
        lambda: api.http.get("/orders?status=AWAITING_APPROVAL", headers=carol),
        lambda r: len(r.json()["orders"]) == 3,
    )
    refused = await api.http.post("/orders", json=_own_body(sku="SKU-3", quantity=1), headers=carol)
    assert refused.status_code == 409, refused.text
    assert "waiting for approval" in refused.json()["detail"]
    for order_id in held:  # give the stock back
        assert (await api.http.post(f"/orders/{order_id}/cancel", headers=carol)).status_code == 202


async def test_parallel_orders_cannot_pass_the_hold_cap(api: Api) -> None:
    # Issue 17: a burst beats any count of eventually consistent visibility; the payments
    # service's hold ledger takes one customer's holds one at a time.
    _, dave = _customer(api)
    body = _own_body(sku="SKU-3", quantity=1)
    answers = await asyncio.gather(
        *(api.http.post("/orders", json=body, headers=dave) for _ in range(12))
    )
    assert {a.status_code for a in answers} <= {202, 409}, [a.text for a in answers]
    accepted = [a.json()["order_id"] for a in answers if a.status_code == 202]
    ends = [await api.wait_for(o, "AWAITING_APPROVAL", "COMPENSATED") for o in accepted]
    held = [o["order_id"] for o in ends if o["status"] == "AWAITING_APPROVAL"]
    refused = [o for o in ends if o["status"] == "COMPENSATED"]
    assert len(held) == 3, ends
    assert {o["failure_reason"] for o in refused} <= {"HOLD_LIMIT_REACHED"}
    for order_id in held:  # give the stock back
        assert (await api.http.post(f"/orders/{order_id}/cancel", headers=dave)).status_code == 202
