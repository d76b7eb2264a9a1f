"""The Coordination State Layer on the real system: a dev server, the real worker processes
and the real API, driven through HTTP.

- A chaos drill on payments, once with the circuit breaker and once without: with it, the
  calls that reach payments while its circuit is open stay at the probe rate; without it,
  every saga's retry hits the failing service. Then the fault is cleared and every held
  saga completes, exactly once.
- Signals into the coordinator stay at or below one per second per worker process, read
  from the coordinator's own history.
- The state streams as server-sent events; intake pauses and the bound on checkouts
  actively running shed load with 503 + Retry-After while accepted orders run on (orders
  held for approval never count); a fault survives a worker restart, and a failing
  optional step degrades gracefully.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.support.api_client import Api, order_body, poll, system_on
from tests.support.temporal import dev_server_env
from workers.agent import REFRESH_S

pytestmark = pytest.mark.e2e

T = TypeVar("T")

OPEN_S = 5
HOLD_S = 20
DRILL_ORDERS = 8
DRILL_ENV = {
    "SAGAWORKS_CIRCUIT_MIN_CALLS": "5",
    "SAGAWORKS_CIRCUIT_ERROR_RATIO": "0.5",
    "SAGAWORKS_CIRCUIT_WINDOW_S": "20",
    "SAGAWORKS_CIRCUIT_OPEN_S": str(OPEN_S),
    "SAGAWORKS_SSE_HEARTBEAT_S": "1",
}


@pytest_asyncio.fixture(scope="module")
async def server() -> AsyncIterator[WorkflowEnvironment]:
    async with dev_server_env() as env:
        yield env


@pytest_asyncio.fixture(scope="module")
async def system(
    server: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with system_on(server.client, tmp_path_factory.mktemp("coordinated"), DRILL_ENV) as api:
        yield api


def injected_errors(api: Api, service: str) -> int:
    """Calls that reached `service` and were failed by its injected fault (its own DB)."""
    with sqlite3.connect(Path(api.stack.data_dir) / f"{service}.db") as db:
        row = db.execute(
            "SELECT injected_errors FROM injected_fault WHERE service = ?", (service,)
        ).fetchone()
    return int(row[0]) if row else 0


def payment_rows(api: Api, order_ids: list[str]) -> list[tuple[str, str]]:
    with sqlite3.connect(Path(api.stack.data_dir) / "payments.db") as db:
        marks = ",".join("?" * len(order_ids))
        sql = f"SELECT order_id, status FROM payments_payment WHERE order_id IN ({marks})"
        return [(str(a), str(b)) for a, b in db.execute(sql, order_ids).fetchall()]


async def coordination(api: Api) -> dict[str, Any]:
    response = await api.http.get("/coordination")
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


async def circuit(api: Api, service: str) -> str:
    state: str = (await coordination(api))["services"][service]["circuit"]["state"]
    return state


async def chaos_drill(api: Api, *, breaker: bool) -> int:
    """Fail every payments call for HOLD_S seconds under load; return the calls that hit it."""
    response = await api.http.put("/admin/faults/payments", json={"error_ratio": 1.0})
    assert response.status_code == 200, response.text
    order_ids = [await api.place(order_body()) for _ in range(DRILL_ORDERS)]
    started = time.monotonic()
    if breaker:
        await poll_with_logs(api, lambda: circuit(api, "payments"), lambda s: s == "open")
        opened_after = time.monotonic() - started
        assert opened_after < 15, f"the circuit took {opened_after:.1f}s to open"
    else:
        # Let the sagas reach payments and start retrying before counting.
        await poll(lambda: asyncio.sleep(0, injected_errors(api, "payments")), bool, within=20)
    # The workers learn of the open circuit within their one-second refresh: count from then.
    await asyncio.sleep(2 * REFRESH_S)
    before = injected_errors(api, "payments")
    await asyncio.sleep(HOLD_S)
    reached = injected_errors(api, "payments") - before
    if breaker:
        # The sagas did try meanwhile: their calls were refused at the worker, fast.
        assert (await coordination(api))["services"]["payments"]["rejected"] > 0

    assert (await api.http.delete("/admin/faults/payments")).status_code == 204
    if breaker:
        await poll(lambda: circuit(api, "payments"), lambda s: s == "closed", within=40)
    for order_id in order_ids:
        done = await api.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED", within=90)
        assert done["status"] == "COMPLETED", done
    # Held, not lost and not doubled: one payment per order, captured once.
    assert sorted(payment_rows(api, order_ids)) == sorted((o, "captured") for o in order_ids)
    return reached


async def poll_with_logs(
    api: Api, fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 20
) -> T:
    try:
        return await poll(fetch, done, within=within)
    except AssertionError as err:
        state = json.dumps(await coordination(api), indent=1)
        raise AssertionError(f"{err}\n{state}\n{api.stack.logs()}") from None


async def test_open_circuit_holds_payments_to_the_probe_rate(
    server: WorkflowEnvironment, system: Api, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with_breaker = await chaos_drill(system, breaker=True)
    without_env = {**DRILL_ENV, "SAGAWORKS_CIRCUIT_BREAKER_ENABLED": "false"}
    async with system_on(
        server.client, tmp_path_factory.mktemp("unbroken"), without_env
    ) as unbroken:
        without_breaker = await chaos_drill(unbroken, breaker=False)

    # Open for OPEN_S at a time, then one probe per payments worker process.
    probe_budget = HOLD_S // OPEN_S + 2
    assert with_breaker <= probe_budget, (with_breaker, without_breaker)
    assert without_breaker >= 3 * max(with_breaker, 1), (with_breaker, without_breaker)
    print(f"calls reaching payments in {HOLD_S}s: {with_breaker} with, {without_breaker} without")


async def test_each_worker_signals_the_coordinator_at_most_once_a_second(
    server: WorkflowEnvironment, system: Api
) -> None:
    order_ids = await asyncio.gather(*(system.place(order_body()) for _ in range(30)))
    for order_id in order_ids:
        await system.wait_for(order_id, "COMPLETED", within=90)
    coordinator_id = system.stack.env["SAGAWORKS_COORDINATOR_WORKFLOW_ID"]
    received = await signal_times(server.client, coordinator_id)

    workers = [identity for identity in received if "@" in identity]
    assert len(workers) >= 5, received.keys()  # every worker process reported
    for identity, times in received.items():
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps, default=1.0) >= 0.95, (identity, sorted(gaps)[:5])
    busiest = max(len(times) for times in received.values())
    assert busiest >= 10  # the load really produced a stream of reports


async def signal_times(client: Client, workflow_id: str) -> dict[str, list[float]]:
    """Arrival times of the report signals, per sending identity, across every run."""
    received: dict[str, list[float]] = defaultdict(list)
    handle = client.get_workflow_handle(workflow_id)
    run_id = (await handle.describe()).raw_description.workflow_execution_info.first_run_id
    while run_id:
        events = [
            e
            async for e in client.get_workflow_handle(
                workflow_id, run_id=run_id
            ).fetch_history_events()
        ]
        for event in events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                identity = event.workflow_execution_signaled_event_attributes.identity
                received[identity].append(event.event_time.ToDatetime().timestamp())
        last = events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            else ""
        )
    return received


async def test_stream_pushes_changes_and_heartbeats(system: Api) -> None:
    async with system.http.stream("GET", "/coordination/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        name, data = await read_event(lines)
        assert name == "state"
        completed_before = json.loads(data)["sagas"]["finished_total"].get("COMPLETED", 0)
        await system.place(order_body())
        completion_pushed = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            name, data = await read_event(lines)
            if name == "state":
                completed = json.loads(data)["sagas"]["finished_total"].get("COMPLETED", 0)
                completion_pushed = completion_pushed or completed > completed_before
            elif name == "heartbeat" and completion_pushed:
                return  # the change was pushed, and the quiet stream after it stays alive
        raise AssertionError(f"completion pushed: {completion_pushed}; no heartbeat after it")


async def read_event(lines: AsyncIterator[str]) -> tuple[str, str]:
    """The next SSE event as (event name, data); a comment line counts as a heartbeat."""
    name, data = "message", ""
    async for line in lines:
        if line.startswith(": heartbeat") or line.startswith(":heartbeat"):
            return "heartbeat", ""
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data += line.removeprefix("data:").strip()
        elif line == "" and data:
            return name, data
    raise AssertionError("the stream ended")


async def test_paused_intake_sheds_new_orders_while_accepted_ones_run_on(system: Api) -> None:
    # Held for approval (above the threshold): accepted before the pause, decided after.
    held = await system.place(order_body(sku="SKU-3", quantity=1))
    await system.wait_for(held, "AWAITING_APPROVAL")
    paused = await system.http.post("/coordination/operate", json={"action": "pause_intake"})
    assert paused.status_code == 200 and paused.json()["intake"]["paused"] is True
    try:
        shed = await system.http.post("/orders", json=order_body())
        assert shed.status_code == 503, shed.text
        assert shed.headers["Retry-After"] == "5"
        assert "intake is paused" in shed.json()["detail"]
        assert (await system.http.post(f"/orders/{held}/approve")).status_code == 200
        assert (await system.wait_for(held, "COMPLETED"))["status"] == "COMPLETED"
    finally:
        resumed = await system.http.post("/coordination/operate", json={"action": "resume_intake"})
        assert resumed.status_code == 200
    await system.place(order_body())


async def test_checkouts_actively_running_shed_load_and_parked_ones_never_do(
    server: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bound = {"SAGAWORKS_MAX_IN_FLIGHT_SAGAS": "2", "SAGAWORKS_APPROVAL_TIMEOUT_S": "600"}
    async with system_on(server.client, tmp_path_factory.mktemp("bounded"), bound) as api:
        # Two orders held for approval: parked, so at a cap of 2 they shed nothing.
        held = [await api.place(order_body(sku="SKU-3", quantity=1)) for _ in range(2)]
        for order_id in held:
            await api.wait_for(order_id, "AWAITING_APPROVAL")
        state = await poll(
            lambda: coordination(api),
            lambda s: s["sagas"]["parked_by_type"].get("OrderWorkflow", 0) == 2,
            within=20,
        )
        assert state["sagas"]["in_flight"] >= 2  # what the old rule compared with the cap
        assert state["sagas"]["active_caps"]["OrderWorkflow"] == 2
        taken = await api.place(order_body())
        assert (await api.wait_for(taken, "COMPLETED"))["status"] == "COMPLETED"

        # Two checkouts retrying a failing payments service: actively running steps.
        response = await api.http.put("/admin/faults/payments", json={"error_ratio": 1.0})
        assert response.status_code == 200, response.text
        try:
            busy = [await api.place(order_body()) for _ in range(2)]
            await poll(
                lambda: coordination(api),
                lambda s: s["sagas"]["active_by_type"].get("OrderWorkflow", 0) >= 2,
                within=20,
            )
            shed = await api.http.post("/orders", json=order_body())
            assert shed.status_code == 503, shed.text
            assert shed.headers["Retry-After"] == "5"
            assert "2 checkouts actively running (limit 2" in shed.json()["detail"]
        finally:
            assert (await api.http.delete("/admin/faults/payments")).status_code == 204
        for order_id in busy:
            assert (await api.wait_for(order_id, "COMPLETED", within=90))["status"] == "COMPLETED"
        for order_id in held:
            assert (await api.http.post(f"/orders/{order_id}/reject")).status_code == 200
            await api.wait_for(order_id, "COMPENSATED")
        await poll(lambda: coordination(api), lambda s: s["sagas"]["in_flight"] == 0, within=20)
        accepted = await poll(
            lambda: api.http.post("/orders", json=order_body()),
            lambda r: r.status_code == 202,
            within=10,
        )
        assert accepted.status_code == 202


async def test_fault_survives_a_worker_restart_and_optional_step_degrades(system: Api) -> None:
    response = await system.http.put("/admin/faults/notifications", json={"error_ratio": 1.0})
    assert response.status_code == 200, response.text
    system.stack.stop("notifications", signal.SIGTERM)
    system.stack.start("notifications")
    try:
        order_id = await system.place(order_body())
        done = await system.wait_for(order_id, "COMPLETED", "COMPENSATED", "FAILED", within=60)
        assert done["status"] == "COMPLETED"
        notify = done["steps"][-1]
        assert (notify["name"], notify["status"]) == ("send_confirmation", "skipped")
        assert "injected fault" in notify["error"]
        assert injected_errors(system, "notifications") >= 1
    finally:
        assert (await system.http.delete("/admin/faults/notifications")).status_code == 204
    order_id = await system.place(order_body())
    done = await system.wait_for(order_id, "COMPLETED", within=60)
    assert done["steps"][-1]["status"] == "succeeded"


async def test_fault_requests_reach_the_service_or_answer_503(system: Api) -> None:
    put = await system.http.put(
        "/admin/faults/shipping", json={"error_ratio": 0.25, "latency_ms": 30}
    )
    assert put.status_code == 200
    assert put.json() | {"updated_at": None} == {
        "service": "shipping",
        "error_ratio": 0.25,
        "latency_ms": 30,
        "activity": None,
        "non_retryable": False,
        "injected_errors": 0,
        "updated_at": None,
    }
    system.stack.stop("shipping", signal.SIGTERM)
    try:
        unreachable = await system.http.delete("/admin/faults/shipping")
        assert unreachable.status_code == 503
        assert "shipping worker did not apply" in unreachable.json()["detail"]
    finally:
        system.stack.start("shipping")
    cleared = await poll(
        lambda: system.http.delete("/admin/faults/shipping"),
        lambda r: r.status_code == 204,
        within=30,
    )
    assert cleared.status_code == 204
    with sqlite3.connect(Path(system.stack.data_dir) / "shipping.db") as db:
        assert db.execute("SELECT COUNT(*) FROM injected_fault").fetchone() == (0,)
