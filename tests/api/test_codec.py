"""The codec endpoint: Temporal's remote codec protocol, for operators, CORS for the Web UI.

Payloads sent to it are taken from a real order's history, read through a client with no
codec, exactly as the Web UI and the CLI see them before they ask the endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from common.binaries import find_binary
from tests.support.api_client import Api, order_body
from tests.support.auth import bearer, issue_key

UI_ORIGIN = "http://127.0.0.1:8233"
JSON = {"Content-Type": "application/json"}


async def started_input(api: Api) -> tuple[str, dict[str, Any], Payloads]:
    """A completed order with a unique card and address, and its input as Temporal stores it."""
    body = order_body(card=f"tok_{uuid.uuid4().hex[:12]}")
    body["shipping_address"]["line1"] = f"Codec Street {uuid.uuid4().hex[:6]}"
    order_id = await api.place(body)
    await api.wait_for(order_id, "COMPLETED")
    plain = await Client.connect(api.temporal.service_client.config.target_host)  # no codec
    history = await plain.get_workflow_handle(order_id).fetch_history()
    [started] = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    ]
    return order_id, body, started.workflow_execution_started_event_attributes.input


def fresh_client(api: Api) -> httpx.AsyncClient:
    """A client without the suite's operator header: a stranger, or a browser."""
    assert api.stack.api_url is not None
    return httpx.AsyncClient(base_url=api.stack.api_url, timeout=30)


def protocol_body(payloads: Payloads) -> dict[str, Any]:
    """What the Web UI and the CLI send: the protobuf JSON form of `Payloads`."""
    body: dict[str, Any] = json_format.MessageToDict(payloads)
    return body


def from_protocol(answer: dict[str, Any]) -> Payloads:
    return json_format.ParseDict(answer, Payloads())


async def test_operator_decodes_a_real_orders_input(api: Api) -> None:
    order_id, body, stored = await started_input(api)
    raw = stored.SerializeToString()
    assert body["payment"]["card_token"].encode() not in raw  # ciphertext in Temporal
    answer = await api.http.post(
        "/codec/decode", json=protocol_body(stored), headers={"X-Namespace": "default"}
    )
    assert answer.status_code == 200, answer.text
    [decoded] = from_protocol(answer.json()).payloads
    assert decoded.metadata["encoding"] == b"json/plain"
    value = json.loads(decoded.data)
    assert value["card_token"] == body["payment"]["card_token"]
    assert value["shipping_address"]["line1"] == body["shipping_address"]["line1"]


async def test_encode_then_decode_round_trips(api: Api) -> None:
    plain = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()}}
    plain["data"] = base64.b64encode(b'"hello"').decode()  # type: ignore[assignment]
    encoded = await api.http.post("/codec/encode", json={"payloads": [plain]})
    assert encoded.status_code == 200, encoded.text
    [payload] = encoded.json()["payloads"]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"binary/encrypted"
    assert b"hello" not in base64.b64decode(payload["data"])
    decoded = await api.http.post("/codec/decode", json=encoded.json())
    assert decoded.json() == {"payloads": [plain]}


async def test_missing_key_is_401_and_customer_key_is_403(api: Api) -> None:
    _, _, stored = await started_input(api)
    body = protocol_body(stored)
    async with fresh_client(api) as anonymous:
        missing = await anonymous.post("/codec/decode", json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        customer = issue_key(api.stack.env, "customer", customer_id="c-codec")
        refused = await anonymous.post("/codec/decode", json=body, headers=bearer(customer))
        assert refused.status_code == 403, refused.text
        refused_encode = await anonymous.post("/codec/encode", json=body, headers=bearer(customer))
        assert refused_encode.status_code == 403
    for answer in (missing, refused):
        assert "tok_" not in answer.text


async def test_operator_session_cookie_decodes_from_the_web_ui(api: Api) -> None:
    _, body, stored = await started_input(api)
    operator = issue_key(api.stack.env, "operator", name="ui-operator")
    async with fresh_client(api) as browser:
        login = await browser.post("/login", data={"key": operator})
        assert login.status_code == 303, login.text
        # As the Web UI sends it with "include cross-origin credentials": cookie, JSON.
        answer = await browser.post(
            "/codec/decode",
            json=protocol_body(stored),
            headers={"Origin": UI_ORIGIN, "X-Namespace": "default"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == UI_ORIGIN
    assert answer.headers["access-control-allow-credentials"] == "true"
    [decoded] = from_protocol(answer.json()).payloads
    assert json.loads(decoded.data)["card_token"] == body["payment"]["card_token"]


@pytest.mark.parametrize("origin", [UI_ORIGIN, "http://localhost:8233"])
async def test_preflight_from_the_web_ui_needs_no_credentials(api: Api, origin: str) -> None:
    async with fresh_client(api) as browser:
        answer = await browser.options(
            "/codec/decode",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == origin
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert "POST" in answer.headers["access-control-allow-methods"]


async def test_cors_is_refused_to_other_origins_and_other_routes(api: Api) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    async with fresh_client(api) as browser:
        other_origin = await browser.options(
            "/codec/decode", headers={"Origin": "https://evil.example", **preflight}
        )
        other_route = await browser.options("/orders", headers={"Origin": UI_ORIGIN, **preflight})
    assert other_origin.status_code == 400
    assert "access-control-allow-origin" not in other_origin.headers
    assert "access-control-allow-origin" not in other_route.headers
    answer = await api.http.post(
        "/codec/encode", json={"payloads": []}, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(
    ("body", "headers", "detail"),
    [
        ({"payloads": [{"data": "%%%"}]}, {}, "must be base64"),
        ({"payloads": []}, {"X-Namespace": "other"}, "serves namespace 'default' only"),
        (
            {
                "payloads": [
                    {
                        "metadata": {
                            "encoding": base64.b64encode(b"binary/encrypted").decode(),
                            "encryption-key-id": base64.b64encode(b"key-unknown").decode(),
                        },
                        "data": base64.b64encode(b"x" * 40).decode(),
                    }
                ]
            },
            {},
            "unknown codec key id 'key-unknown'",
        ),
    ],
)
async def test_bad_requests_are_400(
    api: Api, body: dict[str, Any], headers: dict[str, str], detail: str
) -> None:
    answer = await api.http.post("/codec/decode", json=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert detail in answer.json()["detail"]


def cli_show(api: Api, workflow_id: str, *flags: str) -> subprocess.CompletedProcess[str]:
    address = api.temporal.service_client.config.target_host
    command = [find_binary("temporal"), "workflow", "show", "--workflow-id", workflow_id]
    return subprocess.run(
        [*command, "--address", address, *flags], capture_output=True, text=True, timeout=60
    )


def payload_texts(node: Any) -> list[str]:
    """Every payload's data in `--output json`, base64-decoded: what the history holds."""
    if isinstance(node, list):
        return [text for item in node for text in payload_texts(item)]
    if not isinstance(node, dict):
        return []
    if "metadata" in node and isinstance(node.get("data"), str):
        return [base64.b64decode(node["data"]).decode(errors="replace")]
    return [text for value in node.values() for text in payload_texts(value)]


async def test_the_temporal_cli_shows_a_decrypted_history_to_an_operator(api: Api) -> None:
    order_id, body, _ = await started_input(api)
    card, line1 = body["payment"]["card_token"], body["shipping_address"]["line1"]
    endpoint = f"{api.stack.api_url}/codec"

    raw = await asyncio.to_thread(cli_show, api, order_id, "--output", "json")
    assert raw.returncode == 0, raw.stderr
    texts = payload_texts(json.loads(raw.stdout))
    assert texts and not [t for t in texts if card in t or line1 in t]
    assert card not in raw.stdout and line1 not in raw.stdout

    operator = ("--codec-endpoint", endpoint, "--codec-auth", f"Bearer {api.stack.operator_token}")
    shown = await asyncio.to_thread(cli_show, api, order_id, "--detailed", *operator)
    assert shown.returncode == 0, shown.stderr
    assert f"card_token: {card}" in shown.stdout and line1 in shown.stdout
    decoded = await asyncio.to_thread(cli_show, api, order_id, "--output", "json", *operator)
    assert [t for t in payload_texts(json.loads(decoded.stdout)) if card in t]

    customer = issue_key(api.stack.env, "customer", customer_id="c-cli")
    refused = ("--codec-endpoint", endpoint, "--codec-auth", f"Bearer {customer}")
    answer = await asyncio.to_thread(cli_show, api, order_id, "--detailed", *refused)
    assert card not in answer.stdout + answer.stderr
