"""Saga safety: the pivot, poison pills, the retry ceiling, keys that outlive history.

Paths with a Temporal cancel while an activity is outstanding, and the deleted-history
restart, run on a dev server (the test server leaks its time-skipping lock for an activity
still outstanding when a workflow closes, temporalio/sdk-java#1138); the rest skip time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.payments import PaymentActivities
from tests.workflows.helpers import (
    INITIAL_STOCK,
    Services,
    build_services,
    order_input,
    payments_of,
    reservations,
    result_of,
    running_worker,
    shipments_of,
    start_order,
    step_key,
    stock,
    wait_for_status,
)
from workflows.models import (
    CapturePaymentInput,
    CapturePaymentResult,
    FailureReason,
    OrderState,
    OrderStatus,
    ReserveStockInput,
    ReserveStockResult,
    SendConfirmationInput,
    SendConfirmationResult,
    StepRecord,
)
from workflows.order import IGNORED_CANCEL_NOTE, details_markdown, escape_markdown

HOLD_LIMIT_S = 30


def step(status: OrderStatus, name: str) -> StepRecord:
    (record,) = [s for s in status.steps if s.name == name]
    return record


class Held:
    """Wraps a real activity so that its first attempt waits until the test releases it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def hold(self) -> None:
        self.calls += 1
        self.started.set()
        assert self.release.wait(HOLD_LIMIT_S), "the test never released the held step"


# --- the pivot ------------------------------------------------------------------------------


@pytest.fixture
def held() -> Iterator[Held]:
    holder = Held()
    yield holder
    holder.release.set()  # a failing test must not leave a worker thread blocked


@pytest.mark.parametrize("held_step", ["capture_payment", "send_confirmation"])
async def test_a_temporal_cancel_past_the_pivot_is_recorded_and_the_order_completes(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services, held: Held, held_step: str
) -> None:
    payments = PaymentActivities(services.payments)
    [real_send] = services.activities("notifications")

    @activity.defn(name="capture_payment")
    def capture(input: CapturePaymentInput) -> CapturePaymentResult:
        if held_step == "capture_payment":
            held.hold()
        return payments.capture_payment(input)

    @activity.defn(name="send_confirmation")
    def send(input: SendConfirmationInput) -> SendConfirmationResult:
        if held_step == "send_confirmation":
            held.hold()
        result: SendConfirmationResult = real_send(input)
        return result

    input = order_input(task_queue, items=[("SKU-2", 1)])
    activities = services.activities(
        replace={"capture_payment": capture, "send_confirmation": send}
    )
    async with running_worker(dev_env.client, task_queue, activities):
        handle = await start_order(dev_env.client, input, task_queue)
        await asyncio.to_thread(held.started.wait, HOLD_LIMIT_S)
        await handle.cancel()
        noted = await wait_for_status(handle, lambda s: s.cancel_ignored)
        assert noted.status == OrderState.PENDING and noted.current_step == held_step
        held.release.set()
        result = await result_of(handle)

    # Completed forward: nothing refunded, nothing cancelled, the cancel on the record.
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert (result.status, result.failure_reason) == (OrderState.COMPLETED, None)
    assert result.cancel_ignored and not result.cancel_requested
    assert step(result, held_step).note == IGNORED_CANCEL_NOTE
    assert step(result, held_step).status == "succeeded"
    assert [s.status for s in result.steps] == ["succeeded"] * 5
    assert {c.status for c in result.compensations} == {"not_needed"}
    assert held.calls == 1  # the held attempt itself finished: it was never cancelled
    [payment] = payments_of(services.payments, input.order_id)
    assert payment.status == "captured"
    assert [s.status for s in shipments_of(services.shipping, input.order_id)] == ["created"]
    assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"] - 1


# Before the pivot a Temporal cancel still compensates: test_order.py covers it during the
# approval wait and in the middle of create_shipment.


# --- poison pills and the retry ceiling -----------------------------------------------------


async def test_a_value_the_database_refuses_rolls_back_at_once_with_a_clear_reason(
    ts_env: WorkflowEnvironment, task_queue: str, database_url: Callable[[str], str]
) -> None:
    # Above 64 bits: SQLite cannot bind it, PostgreSQL finds it out of range. Retried,
    # it would fail forever while the saga held its place; it fails once, for good.
    services = build_services(database_url)
    try:
        input = order_input(task_queue, items=[("SKU-1", 1), ("SKU-2", 2**63)])
        async with running_worker(ts_env.client, task_queue, services.activities()):
            result = await result_of(await start_order(ts_env.client, input, task_queue))
        assert (result.status, result.failure_reason) == (
            OrderState.COMPENSATED,
            FailureReason.INVALID_INPUT,
        )
        reserve = step(result, "reserve_stock")
        assert (reserve.status, reserve.attempts, reserve.error_code) == (
            "failed",
            1,
            "InvalidInput",
        )
        assert reserve.error == "InvalidInput: the service refused a value of this order"
        assert [(c.name, c.status) for c in result.compensations] == [
            ("reserve_stock", "succeeded")
        ]
        assert stock(services.inventory, "SKU-1") == INITIAL_STOCK["SKU-1"]
        assert [r.status for r in reservations(services.inventory, input.order_id)] == ["released"]
    finally:
        for engine in services.engines:
            engine.dispose()


async def test_a_step_failing_past_its_retry_ceiling_rolls_the_saga_back(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    calls = 0

    @activity.defn(name="reserve_stock")
    def unavailable(input: ReserveStockInput) -> ReserveStockResult:
        nonlocal calls
        calls += 1
        raise ApplicationError("inventory database unreachable at 10.0.0.7", type="Unavailable")

    input = order_input(task_queue, step_max_attempts=3)
    activities = services.activities(replace={"reserve_stock": unavailable})
    async with running_worker(ts_env.client, task_queue, activities):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.STEP_EXHAUSTED,
    )
    reserve = step(result, "reserve_stock")
    assert (reserve.status, reserve.attempts, calls) == ("failed", 3, 3)
    assert reserve.error == "Unavailable: the call failed; gave up after 3 attempts"
    assert "10.0.0.7" not in (reserve.error or "")
    assert [(c.name, c.status) for c in result.compensations] == [("reserve_stock", "succeeded")]


async def test_past_the_pivot_a_step_retries_beyond_the_ceiling(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    payments = PaymentActivities(services.payments)

    @activity.defn(name="capture_payment")
    def flaky_capture(input: CapturePaymentInput) -> CapturePaymentResult:
        if activity.info().attempt <= 3:
            raise ApplicationError("acquirer timeout", type="GatewayUnavailable")
        return payments.capture_payment(input)

    input = order_input(task_queue, step_max_attempts=2)
    activities = services.activities(replace={"capture_payment": flaky_capture})
    async with running_worker(ts_env.client, task_queue, activities):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    # The shipment exists: giving up would mean a refund, so capture only goes forward.
    assert result.status == OrderState.COMPLETED
    assert step(result, "capture_payment").attempts == 4
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["captured"]


async def test_steps_carry_the_heartbeat_timeout_and_only_pre_pivot_steps_a_ceiling(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, step_max_attempts=7, step_heartbeat_timeout_s=4)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        handle = await start_order(ts_env.client, input, task_queue)
        assert (await result_of(handle)).status == OrderState.COMPLETED
        history = await handle.fetch_history()

    scheduled = {
        e.activity_task_scheduled_event_attributes.activity_type.name: (
            e.activity_task_scheduled_event_attributes
        )
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    assert {
        name: a.heartbeat_timeout.ToSeconds() for name, a in scheduled.items()
    } == dict.fromkeys(scheduled, 4)
    ceilings = {name: a.retry_policy.maximum_attempts for name, a in scheduled.items()}
    assert ceilings == {
        "reserve_stock": 7,
        "authorize_payment": 7,
        "create_shipment": 7,
        "capture_payment": 0,  # unlimited: past the pivot
        "send_confirmation": 3,  # optional, bounded as before
    }


# --- what the status and the Web UI show ----------------------------------------------------


async def test_a_failed_step_shows_a_code_and_a_safe_message_not_the_raw_error(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, country="XX")
    async with running_worker(ts_env.client, task_queue, services.activities()):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    shipping = step(result, "create_shipment")
    assert (shipping.error_code, shipping.error) == (
        "Undeliverable",
        "Undeliverable: no carrier delivers to this address",
    )
    # The service's own message names the country; the status never does.
    assert "'XX'" not in repr(result)


def test_web_ui_markdown_escapes_every_value() -> None:
    assert escape_markdown("[click](http://x) `a`|b *c*") == (
        "\\[click\\]\\(http://x\\) \\`a\\`\\|b \\*c\\*"
    )
    assert escape_markdown("two\nlines") == "two lines"
    status = OrderStatus(order_id="o", customer_id="c", current_step="create_shipment")
    status.cancel_ignored = True
    assert details_markdown(status) == (
        "**PENDING** · step create\\_shipment\n\ncancel ignored past the pivot"
    )


# --- keys that outlive history --------------------------------------------------------------


async def _delete_history(client: Client, workflow_id: str) -> None:
    request = DeleteWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=workflow_id),
    )
    await client.workflow_service.delete_workflow_execution(request)
    # Deletion is asynchronous (a server task, which a busy shared server can take a while
    # to reach): gone once describe no longer finds it. Asking again is harmless.
    loop = asyncio.get_running_loop()
    deadline, ask_again = loop.time() + 120, loop.time() + 15
    while True:
        try:
            await client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        assert loop.time() < deadline, "history never deleted"
        if loop.time() > ask_again:
            try:
                await client.workflow_service.delete_workflow_execution(request)
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    return  # gone between the describe and the request
                raise
            ask_again = loop.time() + 15
        await asyncio.sleep(0.1)


async def test_a_workflow_id_started_again_after_its_history_is_deleted_gets_new_results(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    client = dev_env.client
    first_input = order_input(task_queue, items=[("SKU-2", 1)])
    async with running_worker(client, task_queue, services.activities()):
        first = await result_of(await start_order(client, first_input, task_queue))
        await _delete_history(client, first_input.order_id)
        # The same workflow ID, as retention deleting the history lets anyone start again;
        # the API chooses a new nonce for every order it starts.
        second_input = dataclasses.replace(first_input, nonce=uuid.uuid4().hex)
        second = await result_of(await start_order(client, second_input, task_queue))

    assert first.status == second.status == OrderState.COMPLETED
    # Not the old order's results: a parcel and a charge of its own.
    assert second.tracking_number != first.tracking_number
    payments = payments_of(services.payments, first_input.order_id)
    assert sorted(p.authorization_key for p in payments) == sorted(
        step_key(i, "authorize_payment") for i in (first_input, second_input)
    )
    assert [p.status for p in payments] == ["captured", "captured"]
    assert len(shipments_of(services.shipping, first_input.order_id)) == 2
    assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"] - 2


async def test_keys_without_a_nonce_stay_as_they_were(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    # An input recorded before the nonce existed decodes with none: its saga keeps the
    # old `<workflow_id>:<step>` keys, which its effects were recorded under.
    input = order_input(task_queue, nonce=None)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        assert (await result_of(await start_order(ts_env.client, input, task_queue))).status == (
            OrderState.COMPLETED
        )
    [reservation] = reservations(services.inventory, input.order_id)
    assert reservation.reservation_key == f"{input.order_id}:reserve_stock"
