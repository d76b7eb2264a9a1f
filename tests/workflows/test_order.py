"""OrderWorkflow with the real activities over SQLite, on the time-skipping server.

Workflow updates (`cancel`, `decide`) are exercised on a dev server instead: the
time-skipping server handles updates poorly.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from temporalio import activity
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.inventory import InventoryActivities
from tests.workflows.helpers import (
    INITIAL_STOCK,
    PRICE,
    RefusingVoids,
    Services,
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
    ApprovalDecision,
    CancelRequest,
    FailureReason,
    OrderState,
    OrderStatus,
    ReleaseStockInput,
    ReleaseStockResult,
    ReserveStockInput,
    ReserveStockResult,
    RetryCompensationsRequest,
    SendConfirmationInput,
    TaskQueues,
    VoidPaymentInput,
    VoidPaymentResult,
)
from workflows.order import CUSTOMER_ID, FAILURE_REASON, ORDER_STATUS, OrderWorkflow

# SKU-3 costs 189_000 cents, above the default approval threshold of 100_000.
HIGH_VALUE = [("SKU-3", 1)]


def steps(status: OrderStatus) -> list[tuple[str, str, int]]:
    return [(s.name, s.status, s.attempts) for s in status.steps]


def compensations(status: OrderStatus) -> list[tuple[str, str]]:
    return [(c.name, c.status) for c in status.compensations]


def split_queues(task_queue: str) -> tuple[TaskQueues, str]:
    """Queues where shipping has its own task queue, so a test decides when it is served."""
    shipping_queue = f"{task_queue}-shipping"
    return TaskQueues(task_queue, task_queue, shipping_queue, task_queue), shipping_queue


def in_shipping(status: OrderStatus) -> bool:
    return status.current_step == "create_shipment"


def awaiting_approval(status: OrderStatus) -> bool:
    return status.status == OrderState.AWAITING_APPROVAL


# --- the fixture paths ---------------------------------------------------------------------


async def test_happy_path_completes(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=[("SKU-1", 2)])
    async with running_worker(ts_env.client, task_queue, services.activities()):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert result.status == OrderState.COMPLETED
    assert result.failure_reason is None
    assert result.total_cents == 2 * PRICE["SKU-1"]
    assert steps(result) == [
        ("reserve_stock", "succeeded", 1),
        ("authorize_payment", "succeeded", 1),
        ("create_shipment", "succeeded", 1),
        ("capture_payment", "succeeded", 1),
        ("send_confirmation", "succeeded", 1),
    ]
    assert compensations(result) == [
        ("reserve_stock", "not_needed"),
        ("authorize_payment", "not_needed"),
        ("create_shipment", "not_needed"),
    ]
    assert stock(services.inventory, "SKU-1") == INITIAL_STOCK["SKU-1"] - 2
    assert [r.status for r in reservations(services.inventory, input.order_id)] == ["reserved"]
    [payment] = payments_of(services.payments, input.order_id)
    assert (payment.status, payment.amount_cents) == ("captured", 2 * PRICE["SKU-1"])
    [shipment] = shipments_of(services.shipping, input.order_id)
    assert shipment.status == "created"
    assert result.tracking_number == shipment.tracking_number


async def test_out_of_stock_compensates_and_leaves_stock_untouched(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=[("SKU-1", 1), ("SKU-4", INITIAL_STOCK["SKU-4"] + 1)])
    async with running_worker(ts_env.client, task_queue, services.activities()):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.OUT_OF_STOCK,
    )
    assert steps(result) == [("reserve_stock", "failed", 1)]
    assert compensations(result) == [("reserve_stock", "succeeded")]
    # The whole reservation rolled back, including the SKU-1 line that was available.
    assert stock(services.inventory, "SKU-1") == INITIAL_STOCK["SKU-1"]
    assert stock(services.inventory, "SKU-4") == INITIAL_STOCK["SKU-4"]
    # The release left only a tombstone; nothing reached the other services.
    assert [r.status for r in reservations(services.inventory, input.order_id)] == ["released"]
    assert payments_of(services.payments, input.order_id) == []
    assert shipments_of(services.shipping, input.order_id) == []


async def test_declined_card_releases_the_reservation(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=[("SKU-2", 3)], card="tok_decline")
    async with running_worker(ts_env.client, task_queue, services.activities()):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.PAYMENT_DECLINED,
    )
    assert steps(result) == [
        ("reserve_stock", "succeeded", 1),
        ("authorize_payment", "failed", 1),
    ]
    assert compensations(result) == [
        ("reserve_stock", "succeeded"),
        ("authorize_payment", "succeeded"),
    ]
    assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"]
    assert [r.status for r in reservations(services.inventory, input.order_id)] == ["released"]
    # No authorization was ever taken: the void left a tombstone only.
    [payment] = payments_of(services.payments, input.order_id)
    assert (payment.status, payment.amount_cents) == ("voided", 0)
    assert shipments_of(services.shipping, input.order_id) == []


async def test_undeliverable_voids_payment_and_releases_stock(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=[("SKU-2", 1)], country="XX")
    async with running_worker(ts_env.client, task_queue, services.activities()):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.UNDELIVERABLE,
    )
    assert steps(result) == [
        ("reserve_stock", "succeeded", 1),
        ("authorize_payment", "succeeded", 1),
        ("create_shipment", "failed", 1),
    ]
    assert compensations(result) == [
        ("reserve_stock", "succeeded"),
        ("authorize_payment", "succeeded"),
        ("create_shipment", "succeeded"),
    ]
    assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"]
    [payment] = payments_of(services.payments, input.order_id)
    assert (payment.status, payment.amount_cents) == ("voided", PRICE["SKU-2"])
    [shipment] = shipments_of(services.shipping, input.order_id)
    assert (shipment.status, shipment.tracking_number) == ("cancelled", "")


async def test_flaky_card_completes_after_retries(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, card="tok_flaky")
    async with running_worker(ts_env.client, task_queue, services.activities()):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert result.status == OrderState.COMPLETED
    assert steps(result)[1] == ("authorize_payment", "succeeded", 3)
    [payment] = payments_of(services.payments, input.order_id)
    assert payment.status == "captured"


# --- customer cancellation -----------------------------------------------------------------


async def test_cancel_signal_before_shipment_compensates(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=HIGH_VALUE)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        handle = await start_order(ts_env.client, input, task_queue)
        await wait_for_status(handle, awaiting_approval)
        assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"] - 1
        await handle.signal(OrderWorkflow.request_cancel, CancelRequest("changed my mind"))
        result = await result_of(handle)

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.CANCELLED_BY_CUSTOMER,
    )
    assert result.cancel_requested
    assert steps(result) == [
        ("reserve_stock", "succeeded", 1),
        ("authorize_payment", "succeeded", 1),
        ("hold_for_approval", "succeeded", 1),
        ("await_approval", "cancelled", 1),
    ]
    assert compensations(result) == [
        ("reserve_stock", "succeeded"),
        ("authorize_payment", "succeeded"),
        ("hold_for_approval", "succeeded"),
    ]
    assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"]
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["voided"]
    assert shipments_of(services.shipping, input.order_id) == []


async def test_cancel_signal_once_shipping_started_is_ignored(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    queues, shipping_queue = split_queues(task_queue)
    input = order_input(queues)
    activities = services.activities("inventory", "payments", "notifications")
    async with running_worker(ts_env.client, task_queue, activities):
        handle = await start_order(ts_env.client, input, task_queue)
        # No shipping worker yet: the saga sits in create_shipment, deterministically.
        await wait_for_status(handle, in_shipping)
        await handle.signal(OrderWorkflow.request_cancel, CancelRequest("too late"))
        async with running_worker(
            ts_env.client, shipping_queue, services.activities("shipping"), workflows=()
        ):
            result = await result_of(handle)

    assert result.status == OrderState.COMPLETED
    assert result.failure_reason is None
    assert not result.cancel_requested
    assert [s.status for s in result.steps] == ["succeeded"] * 5
    assert stock(services.inventory, "SKU-1") == INITIAL_STOCK["SKU-1"] - 2
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["captured"]
    assert [s.status for s in shipments_of(services.shipping, input.order_id)] == ["created"]


# --- operator approval ---------------------------------------------------------------------


async def test_approve_signal_lets_a_high_value_order_complete(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=HIGH_VALUE)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        handle = await start_order(ts_env.client, input, task_queue)
        held = await wait_for_status(handle, awaiting_approval)
        assert held.current_step == "await_approval"
        await handle.signal(OrderWorkflow.approve)
        result = await result_of(handle)

    assert result.status == OrderState.COMPLETED
    assert [s.name for s in result.steps] == [
        "reserve_stock",
        "authorize_payment",
        "hold_for_approval",
        "await_approval",
        "release_approval_hold",
        "create_shipment",
        "capture_payment",
        "send_confirmation",
    ]
    assert all(s.status == "succeeded" for s in result.steps)
    [payment] = payments_of(services.payments, input.order_id)
    assert (payment.status, payment.amount_cents) == ("captured", PRICE["SKU-3"])
    assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"] - 1
    assert [s.status for s in shipments_of(services.shipping, input.order_id)] == ["created"]


async def test_reject_signal_compensates(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=HIGH_VALUE)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        handle = await start_order(ts_env.client, input, task_queue)
        await wait_for_status(handle, awaiting_approval)
        await handle.signal(OrderWorkflow.reject)
        result = await result_of(handle)

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.REJECTED_BY_OPERATOR,
    )
    assert steps(result)[-1] == ("await_approval", "failed", 1)
    assert compensations(result) == [
        ("reserve_stock", "succeeded"),
        ("authorize_payment", "succeeded"),
        ("hold_for_approval", "succeeded"),
    ]
    assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"]
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["voided"]
    assert shipments_of(services.shipping, input.order_id) == []


async def test_approval_times_out_on_a_skipped_timer(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=HIGH_VALUE, approval_timeout_s=3600)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        handle = await start_order(ts_env.client, input, task_queue)
        result = await result_of(handle)  # an hour of waiting, skipped

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.APPROVAL_TIMEOUT,
    )
    assert steps(result)[-1] == ("await_approval", "failed", 1)
    approval = result.steps[-1]
    assert approval.started_at is not None and approval.finished_at is not None
    assert approval.finished_at - approval.started_at >= timedelta(seconds=3600)
    assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"]
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["voided"]


# --- compensations that fail ---------------------------------------------------------------


async def test_transiently_failing_compensation_is_retried_until_it_succeeds(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    real = InventoryActivities(services.inventory)
    attempts: list[int] = []

    @activity.defn(name="release_stock")
    def flaky_release(input: ReleaseStockInput) -> ReleaseStockResult:
        attempts.append(activity.info().attempt)
        if activity.info().attempt <= 2:
            raise ApplicationError("inventory database unavailable", type="Unavailable")
        return real.release_stock(input)

    input = order_input(task_queue, items=[("SKU-2", 2)], card="tok_decline")
    activities = services.activities(replace={"release_stock": flaky_release})
    async with running_worker(ts_env.client, task_queue, activities):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.PAYMENT_DECLINED,
    )
    assert attempts == [1, 2, 3]
    [release, void] = result.compensations
    assert (release.name, release.status, release.error) == ("reserve_stock", "succeeded", None)
    assert void.status == "succeeded"
    assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"]
    assert [r.status for r in reservations(services.inventory, input.order_id)] == ["released"]


async def test_permanently_failing_compensation_fails_the_order_but_others_still_run(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    @activity.defn(name="void_payment")
    def broken_void(input: VoidPaymentInput) -> VoidPaymentResult:
        raise ApplicationError("gateway refuses voids", type="VoidRefused", non_retryable=True)

    input = order_input(task_queue, items=[("SKU-2", 1)], country="XX")
    activities = services.activities(replace={"void_payment": broken_void})
    async with running_worker(ts_env.client, task_queue, activities):
        handle = await start_order(ts_env.client, input, task_queue)
        result = await wait_for_status(handle, lambda s: s.status == OrderState.FAILED)
        # FAILED, and still open: it waits for an operator to retry the compensation.
        description = await handle.describe()
        await handle.terminate("test over")

    assert description.status == WorkflowExecutionStatus.RUNNING
    # FAILED: an operator must look, since the money was never given back.
    assert (result.status, result.failure_reason) == (
        OrderState.FAILED,
        FailureReason.UNDELIVERABLE,
    )
    assert compensations(result) == [
        ("reserve_stock", "succeeded"),
        ("authorize_payment", "failed"),
        ("create_shipment", "succeeded"),
    ]
    failed = result.compensations[1]
    # A stable code and a safe message: never the exception's own text.
    assert (failed.error_code, failed.error) == (
        "VoidRefused",
        "VoidRefused: the service refused the request",
    )
    # The compensation registered before the broken one still ran after it.
    assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"]
    assert [s.status for s in shipments_of(services.shipping, input.order_id)] == ["cancelled"]
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["authorized"]


async def test_operator_retries_a_failed_compensation_once_the_cause_is_fixed(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    gateway = RefusingVoids(services)
    failing = order_input(task_queue, items=[("SKU-2", 1)], country="XX")
    held = order_input(task_queue, items=HIGH_VALUE)
    activities = services.activities(replace={"void_payment": gateway.void_payment})
    async with running_worker(dev_env.client, task_queue, activities):
        handle = await start_order(dev_env.client, failing, task_queue)
        await wait_for_status(handle, lambda s: s.status == OrderState.FAILED)
        # Only a FAILED order with a failed compensation can be retried.
        waiting = await start_order(dev_env.client, held, task_queue)
        await wait_for_status(waiting, awaiting_approval)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await waiting.execute_update(
                OrderWorkflow.retry_compensations, RetryCompensationsRequest("ops")
            )
        assert "only a FAILED order can be retried" in str(refused.value.cause)
        await waiting.terminate("test over")

        gateway.fixed = True
        retrying = await handle.execute_update(
            OrderWorkflow.retry_compensations, RetryCompensationsRequest("ops")
        )
        assert retrying.status == OrderState.COMPENSATING
        result = await result_of(handle)

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.UNDELIVERABLE,
    )
    assert compensations(result) == [
        ("reserve_stock", "succeeded"),
        ("authorize_payment", "succeeded"),
        ("create_shipment", "succeeded"),
    ]
    assert result.compensations[1].rounds == 2
    assert [p.status for p in payments_of(services.payments, failing.order_id)] == ["voided"]


# --- a step that commits, then times out ---------------------------------------------------


async def test_step_that_commits_then_times_out_has_no_double_effect(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    real = InventoryActivities(services.inventory)

    @activity.defn(name="reserve_stock")
    def slow_reserve(input: ReserveStockInput) -> ReserveStockResult:
        result = real.reserve_stock(input)
        if activity.info().attempt == 1:
            # Committed, but the answer arrives after the 1 s start-to-close timeout. Time
            # does not skip while an activity runs, so this wait is real (and short).
            time.sleep(2)
        return result

    input = order_input(task_queue, items=[("SKU-4", 2)], step_timeout_s=1)
    activities = services.activities(replace={"reserve_stock": slow_reserve})
    async with running_worker(ts_env.client, task_queue, activities):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert result.status == OrderState.COMPLETED
    assert steps(result)[0] == ("reserve_stock", "succeeded", 2)
    [reservation] = reservations(services.inventory, input.order_id)
    assert reservation.reservation_key == step_key(input, "reserve_stock")
    assert reservation.status == "reserved"
    assert stock(services.inventory, "SKU-4") == INITIAL_STOCK["SKU-4"] - 2


# --- Temporal-level cancellation -----------------------------------------------------------


async def test_workflow_cancellation_during_approval_compensates(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=HIGH_VALUE)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        handle = await start_order(ts_env.client, input, task_queue)
        await wait_for_status(handle, awaiting_approval)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(handle)
        final = await handle.query(OrderWorkflow.status)

    assert isinstance(failure.value.cause, CancelledError)
    assert (final.status, final.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.CANCELLED_BY_CUSTOMER,
    )
    # A terminal order shows no step still running.
    assert steps(final)[-1] == ("await_approval", "cancelled", 1)
    assert compensations(final) == [
        ("reserve_stock", "succeeded"),
        ("authorize_payment", "succeeded"),
        ("hold_for_approval", "succeeded"),
    ]
    assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"]
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["voided"]


# --- visibility ----------------------------------------------------------------------------


async def test_search_attributes_show_status_and_customer(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        handle = await start_order(ts_env.client, input, task_queue)
        assert (await result_of(handle)).status == OrderState.COMPLETED

    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(ORDER_STATUS) == "COMPLETED"
    assert attributes.get(CUSTOMER_ID) == input.customer_id
    assert attributes.get(FAILURE_REASON) is None


# --- workflow updates, on the dev server ---------------------------------------------------


async def test_cancel_update_before_shipment_is_accepted(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=HIGH_VALUE)
    async with running_worker(dev_env.client, task_queue, services.activities()):
        handle = await start_order(dev_env.client, input, task_queue)
        await wait_for_status(handle, awaiting_approval)
        accepted = await handle.execute_update(OrderWorkflow.cancel, CancelRequest())
        assert accepted.cancel_requested
        result = await result_of(handle)

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.CANCELLED_BY_CUSTOMER,
    )
    assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"]
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["voided"]


async def test_cancel_update_is_rejected_once_shipping_started(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    queues, shipping_queue = split_queues(task_queue)
    input = order_input(queues)
    activities = services.activities("inventory", "payments", "notifications")
    async with running_worker(dev_env.client, task_queue, activities):
        handle = await start_order(dev_env.client, input, task_queue)
        await wait_for_status(handle, in_shipping)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(OrderWorkflow.cancel, CancelRequest())
        assert "can no longer be cancelled" in str(refused.value.cause)
        async with running_worker(
            dev_env.client, shipping_queue, services.activities("shipping"), workflows=()
        ):
            result = await result_of(handle)

    assert result.status == OrderState.COMPLETED
    assert not result.cancel_requested
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["captured"]
    assert [s.status for s in shipments_of(services.shipping, input.order_id)] == ["created"]


async def test_decide_update_approves_and_then_refuses_a_second_decision(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    queues, shipping_queue = split_queues(task_queue)
    input = order_input(queues, items=HIGH_VALUE)
    activities = services.activities("inventory", "payments", "notifications")
    async with running_worker(dev_env.client, task_queue, activities):
        handle = await start_order(dev_env.client, input, task_queue)
        await wait_for_status(handle, awaiting_approval)
        await handle.execute_update(OrderWorkflow.decide, ApprovalDecision(approved=True))
        await wait_for_status(handle, in_shipping)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(OrderWorkflow.decide, ApprovalDecision(approved=False))
        assert "not awaiting approval" in str(refused.value.cause)
        async with running_worker(
            dev_env.client, shipping_queue, services.activities("shipping"), workflows=()
        ):
            result = await result_of(handle)

    assert result.status == OrderState.COMPLETED
    assert ("await_approval", "succeeded", 1) in steps(result)
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["captured"]


async def test_decide_update_is_rejected_when_not_awaiting_approval(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    queues, shipping_queue = split_queues(task_queue)
    input = order_input(queues)  # below the threshold: never held for approval
    activities = services.activities("inventory", "payments", "notifications")
    async with running_worker(dev_env.client, task_queue, activities):
        handle = await start_order(dev_env.client, input, task_queue)
        await wait_for_status(handle, in_shipping)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(OrderWorkflow.decide, ApprovalDecision(approved=False))
        assert "not awaiting approval" in str(refused.value.cause)
        async with running_worker(
            dev_env.client, shipping_queue, services.activities("shipping"), workflows=()
        ):
            result = await result_of(handle)

    assert result.status == OrderState.COMPLETED
    assert "await_approval" not in [s.name for s in result.steps]


# --- Temporal cancellation with an activity outstanding, on the dev server -----------------
# The test server leaks its time-skipping lock for an activity still outstanding when a
# workflow closes (temporalio/sdk-java#1138), which would stall every later skipped timer.


async def test_workflow_cancellation_mid_step_still_compensates(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    queues, shipping_queue = split_queues(task_queue)
    input = order_input(queues, items=[("SKU-2", 2)])
    async with running_worker(
        dev_env.client, task_queue, services.activities("inventory", "payments", "notifications")
    ):
        handle = await start_order(dev_env.client, input, task_queue)
        await wait_for_status(handle, in_shipping)
        await handle.cancel()
        # Rolling back needs the shipping service, which is not up yet: the saga waits.
        rolling_back = await wait_for_status(handle, lambda s: s.status == OrderState.COMPENSATING)
        assert steps(rolling_back)[-1] == ("create_shipment", "cancelled", 1)
        async with running_worker(
            dev_env.client, shipping_queue, services.activities("shipping"), workflows=()
        ):
            with pytest.raises(WorkflowFailureError) as failure:
                await result_of(handle)
            final = await handle.query(OrderWorkflow.status)

    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert (final.status, final.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.CANCELLED_BY_CUSTOMER,
    )
    assert compensations(final) == [
        ("reserve_stock", "succeeded"),
        ("authorize_payment", "succeeded"),
        ("create_shipment", "succeeded"),
    ]
    assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"]
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["voided"]
    # The shipment was never created; the cancel left a tombstone in its place.
    [shipment] = shipments_of(services.shipping, input.order_id)
    assert (shipment.status, shipment.tracking_number) == ("cancelled", "")


# --- graceful degradation ------------------------------------------------------------------


async def test_failing_optional_confirmation_is_skipped_and_the_order_completes(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    calls = 0

    @activity.defn(name="send_confirmation")
    def send_confirmation_down(input: SendConfirmationInput) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("mail relay unreachable")

    input = order_input(task_queue)
    activities = services.activities(replace={"send_confirmation": send_confirmation_down})
    async with running_worker(ts_env.client, task_queue, activities):
        result = await result_of(await start_order(ts_env.client, input, task_queue))

    assert result.status == OrderState.COMPLETED
    assert result.failure_reason is None
    notify = result.steps[-1]
    assert (notify.name, notify.status) == ("send_confirmation", "skipped")
    # The SDK names an unexpected exception by its class; its text stays out of the status.
    assert (notify.error_code, notify.error) == ("RuntimeError", "RuntimeError: the call failed")
    assert calls == 3  # the optional step's bounded retries, then it gives up
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["captured"]
    assert [s.status for s in shipments_of(services.shipping, input.order_id)] == ["created"]
