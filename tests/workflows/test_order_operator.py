"""OrderWorkflow where it waits for a person: past the pivot, while FAILED, while held.

Issue 17's defects in the checkout, each shown against the real activities over SQLite:
a capture that fails for good past the pivot leaves the shipped order FAILED and open for
an operator's retry (never rolled back); waiting FAILED survives a Temporal cancel; an
approval signal sent before the order is held decides nothing; and parallel orders cannot
pass the approval-hold cap, which the payments service's hold ledger enforces. Paths with
updates run on a dev server (the time-skipping server handles updates poorly).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from tests.workflows.helpers import (
    INITIAL_STOCK,
    PRICE,
    RefusingCaptures,
    RefusingVoids,
    Services,
    order_input,
    payments_of,
    reservations,
    result_of,
    running_worker,
    shipments_of,
    start_order,
    stock,
    wait_for_status,
)
from workflows.models import (
    FailureReason,
    OrderInput,
    OrderState,
    OrderStatus,
    RetryCompensationsRequest,
)
from workflows.order import OrderWorkflow
from workflows.steps import IGNORED_WHILE_FAILED_NOTE

# SKU-3 costs 189_000 cents, above the default approval threshold of 100_000.
HIGH_VALUE = [("SKU-3", 1)]


def same_customer(first: OrderInput, input: OrderInput) -> OrderInput:
    return dataclasses.replace(input, customer_id=first.customer_id)


def failed(status: OrderStatus) -> bool:
    return status.status == OrderState.FAILED


async def test_a_capture_failing_for_good_leaves_the_shipped_order_failed_until_a_retry(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    gateway = RefusingCaptures(services)
    input = order_input(task_queue, items=[("SKU-2", 1)])
    activities = services.activities(replace={"capture_payment": gateway.capture_payment})
    async with running_worker(dev_env.client, task_queue, activities):
        handle = await start_order(dev_env.client, input, task_queue)
        stuck = await wait_for_status(handle, failed)

        # Past the pivot nothing is undone: the parcel exists, the authorization and the
        # stock stand, and the order waits open with the capture as its failed step.
        assert stuck.failure_reason == FailureReason.CAPTURE_FAILED
        assert (stuck.steps[-1].name, stuck.steps[-1].status) == ("capture_payment", "failed")
        assert [c.status for c in stuck.compensations] == ["pending"] * 3
        assert [s.status for s in shipments_of(services.shipping, input.order_id)] == ["created"]
        assert [p.status for p in payments_of(services.payments, input.order_id)] == ["authorized"]
        assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"] - 1
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING

        # `retry_compensations` has nothing to run: no compensation failed.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                OrderWorkflow.retry_compensations, RetryCompensationsRequest("ops")
            )
        assert "no compensation of this order failed" in str(refused.value.cause)

        gateway.fixed = True
        retrying = await handle.execute_update(
            OrderWorkflow.retry, RetryCompensationsRequest("ops")
        )
        assert retrying.status in (OrderState.PENDING, OrderState.COMPLETED)
        result = await result_of(handle)

    assert (result.status, result.failure_reason) == (OrderState.COMPLETED, None)
    assert gateway.refused == 1
    assert [s.status for s in shipments_of(services.shipping, input.order_id)] == ["created"]
    [payment] = payments_of(services.payments, input.order_id)
    assert (payment.status, payment.amount_cents) == ("captured", PRICE["SKU-2"])
    # The capture ran twice: the failure, then the operator's retry.
    assert [s.name for s in result.steps].count("capture_payment") == 2


async def test_a_failed_order_waiting_for_an_operator_survives_a_temporal_cancel(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    gateway = RefusingVoids(services)
    input = order_input(task_queue, items=[("SKU-2", 1)], country="XX")
    activities = services.activities(replace={"void_payment": gateway.void_payment})
    async with running_worker(dev_env.client, task_queue, activities):
        handle = await start_order(dev_env.client, input, task_queue)
        await wait_for_status(handle, failed)

        # What the Web UI's or the CLI's cancel sends: recorded, and the order stays open.
        await handle.cancel()
        ignored = await wait_for_status(handle, lambda s: s.cancel_ignored)
        assert ignored.status == OrderState.FAILED
        assert ignored.steps[-1].note == IGNORED_WHILE_FAILED_NOTE
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

        gateway.fixed = True
        await handle.execute_update(OrderWorkflow.retry, RetryCompensationsRequest("ops"))
        result = await result_of(handle)

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.UNDELIVERABLE,
    )
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["voided"]


async def test_a_temporal_cancel_whose_compensation_fails_waits_for_the_operator(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    gateway = RefusingVoids(services)
    input = order_input(task_queue, items=HIGH_VALUE)
    activities = services.activities(replace={"void_payment": gateway.void_payment})
    async with running_worker(dev_env.client, task_queue, activities):
        handle = await start_order(dev_env.client, input, task_queue)
        await wait_for_status(handle, lambda s: s.status == OrderState.AWAITING_APPROVAL)
        await handle.cancel()
        # The void failed for good: the cancel does not close the order with money held.
        stuck = await wait_for_status(handle, failed)
        assert [p.status for p in payments_of(services.payments, input.order_id)] == ["authorized"]
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

        gateway.fixed = True
        await handle.execute_update(OrderWorkflow.retry, RetryCompensationsRequest("ops"))
        with pytest.raises(Exception):  # noqa: B017 - the cancel is obeyed once all is undone
            await result_of(handle)

    assert stuck.failure_reason == FailureReason.CANCELLED_BY_CUSTOMER
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert [p.status for p in payments_of(services.payments, input.order_id)] == ["voided"]
    assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"]


async def test_an_approve_signal_sent_before_the_order_is_held_decides_nothing(
    ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    input = order_input(task_queue, items=HIGH_VALUE, approval_timeout_s=3600)
    async with running_worker(ts_env.client, task_queue, services.activities()):
        # Delivered with the start, long before the order reaches the approval step.
        handle = await ts_env.client.start_workflow(
            OrderWorkflow.run,
            input,
            id=input.order_id,
            task_queue=task_queue,
            start_signal="approve",
        )
        result = await result_of(handle)  # the hour of waiting is skipped

    assert (result.status, result.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.APPROVAL_TIMEOUT,
    )
    assert shipments_of(services.shipping, input.order_id) == []


async def test_parallel_orders_above_the_threshold_cannot_pass_the_hold_cap(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    first = order_input(task_queue, items=HIGH_VALUE, max_held_orders=3)
    inputs = [first] + [
        same_customer(first, order_input(task_queue, items=HIGH_VALUE, max_held_orders=3))
        for _ in range(11)
    ]
    async with running_worker(dev_env.client, task_queue, services.activities()):
        handles = await asyncio.gather(
            *(start_order(dev_env.client, input, task_queue) for input in inputs)
        )
        settled = await asyncio.gather(
            *(
                wait_for_status(
                    handle,
                    lambda s: s.status in (OrderState.AWAITING_APPROVAL, OrderState.COMPENSATED),
                    within_s=60,
                )
                for handle in handles
            )
        )
        held = [s for s in settled if s.status == OrderState.AWAITING_APPROVAL]
        refused = [s for s in settled if s.status == OrderState.COMPENSATED]
        for handle, status in zip(handles, settled, strict=True):
            if status.status == OrderState.AWAITING_APPROVAL:
                await handle.terminate("test over")

    assert (len(held), len(refused)) == (3, 9)
    assert {s.failure_reason for s in refused} == {FailureReason.HOLD_LIMIT_REACHED}
    # What a refused order took is given back: its authorization voided, its stock freed.
    for status in refused:
        assert [p.status for p in payments_of(services.payments, status.order_id)] == ["voided"]
        assert [r.status for r in reservations(services.inventory, status.order_id)] == ["released"]
    assert stock(services.inventory, "SKU-3") == INITIAL_STOCK["SKU-3"] - 3


async def test_the_hold_cap_bounds_the_value_a_customer_holds(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    cap = PRICE["SKU-3"] + PRICE["SKU-2"] * 4  # one machine fits; a second one would not
    first = order_input(task_queue, items=HIGH_VALUE, max_held_cents=cap)
    second = same_customer(first, order_input(task_queue, items=HIGH_VALUE, max_held_cents=cap))
    async with running_worker(dev_env.client, task_queue, services.activities()):
        held = await start_order(dev_env.client, first, task_queue)
        await wait_for_status(held, lambda s: s.status == OrderState.AWAITING_APPROVAL)
        over = await result_of(await start_order(dev_env.client, second, task_queue))
        # Once decided, the first order's hold is freed: the same order fits again.
        await held.signal(OrderWorkflow.reject)
        await result_of(held)
        again = same_customer(first, order_input(task_queue, items=HIGH_VALUE, max_held_cents=cap))
        third = await start_order(dev_env.client, again, task_queue)
        now_held = await wait_for_status(third, lambda s: s.status == OrderState.AWAITING_APPROVAL)
        await third.terminate("test over")

    assert (over.status, over.failure_reason) == (
        OrderState.COMPENSATED,
        FailureReason.HOLD_LIMIT_REACHED,
    )
    assert now_held.current_step == "await_approval"
