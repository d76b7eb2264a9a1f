"""Payload encryption on the real system: Temporal stores ciphertext, the API still answers.

Orders go in through HTTP with a unique card token and address line. Their histories are
then read through a client with no codec, as anyone who can reach the Temporal server
would: neither value appears in any event, failure messages are encoded, and the API
(which holds the key ring) still returns the live and the finished status. Last, every
process restarts on a rotated key ring: new orders use the new key, old ones stay readable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from common.binaries import find_binary
from tests.dashboard.browser import chromium
from tests.support.api_client import Api, order_body, system_on
from tests.support.codec import TEST_CODEC_ENV, TEST_DATA_CONVERTER, TEST_KEY_ID
from tests.support.stack import REPO_ROOT, SERVICES, free_port, wait_until_ready
from tests.support.temporal import SEARCH_ATTRIBUTES

pytestmark = pytest.mark.e2e

ROTATED_KEY_ID = "test-key-2"
# The old key stays in the ring (it still decrypts); the new one encrypts.
ROTATED_ENV = {
    "SAGAWORKS_CODEC_KEYS": json.dumps(
        {
            **json.loads(TEST_CODEC_ENV["SAGAWORKS_CODEC_KEYS"]),
            ROTATED_KEY_ID: base64.b64encode(hashlib.sha256(b"rotated test key").digest()).decode(),
        }
    ),
    "SAGAWORKS_CODEC_ACTIVE_KEY_ID": ROTATED_KEY_ID,
}


@pytest.fixture(scope="module")
def ui_port() -> int:
    return free_port()


@pytest_asyncio.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory, ui_port: int) -> AsyncIterator[Api]:
    """The real stack on a dev server with its Web UI, whose origin the codec answers."""
    server = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
        data_converter=TEST_DATA_CONVERTER,
        ui=True,
        ui_port=ui_port,
    )
    cors = {"SAGAWORKS_CODEC_CORS_ORIGINS": json.dumps([f"http://127.0.0.1:{ui_port}"])}
    async with server, system_on(server.client, tmp_path_factory.mktemp("encryption"), cors) as api:
        yield api


def secret_order(card: str | None = None) -> dict[str, Any]:
    body = order_body(card=card or f"tok_secret_{uuid.uuid4().hex[:10]}")
    body["shipping_address"]["line1"] = f"Hidden Lane {uuid.uuid4().hex[:8]}"
    return body


def secrets_of(body: dict[str, Any]) -> list[bytes]:
    return [body["payment"]["card_token"].encode(), body["shipping_address"]["line1"].encode()]


async def raw_events(api: Api, order_id: str) -> list[HistoryEvent]:
    """The history as the server holds it: read by a client with no codec at all."""
    plain = await Client.connect(api.temporal.service_client.config.target_host)
    return list((await plain.get_workflow_handle(order_id).fetch_history()).events)


async def assert_search_attributes_are_minimal(
    api: Api, order_id: str, body: dict[str, Any]
) -> None:
    """Search attributes are not encrypted: ours are the three the API filters by, no more."""
    plain = await Client.connect(api.temporal.service_client.config.target_host)
    described = await plain.get_workflow_handle(order_id).describe()
    fields = described.raw_description.workflow_execution_info.search_attributes.indexed_fields
    ours = {name for name in fields if not name.startswith(("Temporal", "BuildIds"))}
    assert ours <= {"OrderStatus", "CustomerId", "FailureReason"}, ours
    raw = b"".join(payload.SerializeToString() for payload in fields.values())
    for secret in secrets_of(body):
        assert secret not in raw


def raw_bytes(events: list[HistoryEvent]) -> bytes:
    return b"".join(event.SerializeToString() for event in events)


async def test_history_holds_neither_card_nor_address(system: Api) -> None:
    body = secret_order()
    order_id = await system.place(body)
    status = await system.wait_for(order_id, "COMPLETED")
    assert status["customer_id"] == body["customer_id"]  # the API decrypted it

    raw = raw_bytes(await raw_events(system, order_id))
    for secret in secrets_of(body):
        assert secret not in raw
    assert b"binary/encrypted" in raw and TEST_KEY_ID.encode() in raw
    await assert_search_attributes_are_minimal(system, order_id, body)
    # The input is there, encrypted: the tests' own client (with the key ring) reads it.
    history = await system.temporal.get_workflow_handle(order_id).fetch_history()
    [started] = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    ]
    [order] = await TEST_DATA_CONVERTER.decode(
        started.workflow_execution_started_event_attributes.input.payloads
    )
    assert order["card_token"] == body["payment"]["card_token"]


async def test_failure_messages_are_encoded(system: Api) -> None:
    body = secret_order(card="tok_decline")
    order_id = await system.place(body)
    status = await system.wait_for(order_id, "COMPENSATED")
    assert status["failure_reason"] == "PAYMENT_DECLINED"

    events = await raw_events(system, order_id)
    failed = [
        e.activity_task_failed_event_attributes.failure
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]
    assert failed, "a declined card fails its activity"
    for failure in failed:
        assert failure.message == "Encoded failure" and failure.stack_trace == ""
        decoded = await TEST_DATA_CONVERTER.decode_failure(failure)
        assert str(decoded) and str(decoded) != "Encoded failure"
    raw = raw_bytes(events)
    assert body["shipping_address"]["line1"].encode() not in raw
    await assert_search_attributes_are_minimal(system, order_id, body)


def open_in_web_ui(driver: WebDriver, ui: str, system: Api, order_id: str, run_id: str) -> None:
    """What README "Data protection" tells an operator to set in the Web UI's codec settings."""
    driver.get(ui)
    settings = {
        "endpoint": json.dumps(f"{system.stack.api_url}/codec"),
        "includeCredentials": "true",
        "overrideRemoteCodecConfiguration": "true",
    }
    for key, value in settings.items():
        driver.execute_script("localStorage.setItem(arguments[0], arguments[1])", key, value)
    driver.get(f"{ui}/namespaces/default/workflows/{order_id}/{run_id}/history")


async def shows(driver: WebDriver, text: str, within: float = 60) -> None:
    def wait() -> None:
        waiter: WebDriverWait[WebDriver] = WebDriverWait(driver, within, poll_frequency=0.3)
        waiter.until(lambda d: text in d.page_source, message=f"the Web UI never showed {text!r}")

    await asyncio.to_thread(wait)


async def test_the_web_ui_decrypts_for_a_logged_in_operator_only(
    system: Api, ui_port: int, tmp_path: Path
) -> None:
    ui = f"http://127.0.0.1:{ui_port}"
    body = secret_order()
    order_id = await system.place(body)
    await system.wait_for(order_id, "COMPLETED")
    run_id = (await system.temporal.get_workflow_handle(order_id).describe()).run_id
    card = body["payment"]["card_token"]

    with chromium(tmp_path / "stranger") as stranger:
        await asyncio.to_thread(open_in_web_ui, stranger, ui, system, order_id, run_id)
        await shows(stranger, "Codec Server could not connect")  # the endpoint said 401
        assert card not in stranger.page_source

    with chromium(tmp_path / "operator") as browser:
        assert system.stack.api_url is not None
        await asyncio.to_thread(browser.get, f"{system.stack.api_url}/login")
        browser.find_element(By.NAME, "key").send_keys(system.stack.operator_token)
        browser.find_element(By.CSS_SELECTOR, "form [type=submit]").click()
        # The login answers with the cookie and a redirect; leaving the page before that
        # lands would open the Web UI without a session (a race a loaded machine loses).
        await asyncio.to_thread(
            WebDriverWait(browser, 60, poll_frequency=0.2).until,
            lambda d: d.get_cookie("sagaworks_session") is not None,
            "the login never set the session cookie",
        )
        await asyncio.to_thread(open_in_web_ui, browser, ui, system, order_id, run_id)
        await shows(browser, card)
        await shows(browser, body["shipping_address"]["line1"])
        browser.save_screenshot(str(tmp_path / "web-ui-decrypted.png"))


def test_make_up_points_the_web_ui_at_the_codec_endpoint(tmp_path: Path) -> None:
    """temporal-dev/start.sh (make up's server) passes --ui-codec-endpoint to the Web UI."""
    port, ui_port = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "SAGAWORKS_TEMPORAL_PORT": str(port),
        "SAGAWORKS_TEMPORAL_UI_PORT": str(ui_port),
        "SAGAWORKS_TEMPORAL_DB": str(tmp_path / "temporal.db"),
    }
    env.pop("SAGAWORKS_UI_CODEC_ENDPOINT", None)
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [str(REPO_ROOT / "temporal-dev" / "start.sh")], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                settings = httpx.get(f"http://127.0.0.1:{ui_port}/api/v1/settings", timeout=2)
                if settings.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the dev server's Web UI never answered"
            time.sleep(0.3)
        assert settings.json()["Codec"]["Endpoint"] == "http://127.0.0.1:8000/codec"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


async def test_rotating_the_key_keeps_old_orders_readable(system: Api) -> None:
    old_body = secret_order()
    old_id = await system.place(old_body)
    await system.wait_for(old_id, "COMPLETED")

    stack = system.stack
    for name in list(stack.processes):
        stack.stop(name)
    stack.env.update(ROTATED_ENV)
    for name in SERVICES:
        stack.start(name)
    stack.start("api")
    wait_until_ready(stack)

    new_body = secret_order()
    new_id = await system.place(new_body)
    await system.wait_for(new_id, "COMPLETED")
    old = await system.http.get(f"/orders/{old_id}")
    assert old.status_code == 200, old.text
    assert (old.json()["status"], old.json()["customer_id"]) == (
        "COMPLETED",
        old_body["customer_id"],
    )

    new_raw = raw_bytes(await raw_events(system, new_id))
    assert ROTATED_KEY_ID.encode() in new_raw and TEST_KEY_ID.encode() not in new_raw
    for secret in secrets_of(new_body):
        assert secret not in new_raw
    # The operator's codec endpoint, now on the rotated ring, decrypts both generations.
    for order_id, body in ((old_id, old_body), (new_id, new_body)):
        [started] = (await raw_events(system, order_id))[:1]
        payloads = json_format.MessageToDict(
            started.workflow_execution_started_event_attributes.input
        )
        answer = await system.http.post("/codec/decode", json=payloads)
        assert answer.status_code == 200, answer.text
        [decoded] = answer.json()["payloads"]
        order = json.loads(base64.b64decode(decoded["data"]))
        assert order["card_token"] == body["payment"]["card_token"]
