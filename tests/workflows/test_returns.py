"""ReturnWorkflow with the real activities over SQLite.

On the time-skipping server: a return that expires on its (skipped) parcel timeout, and
two returns of one order that together would over-claim it. Each gets a server of its own
(about 0.3 s): two result calls awaited at once were seen to leave that server's time
locked, for every test after them. The paths that need an update (`receive`, `cancel`,
`retry`) run on a dev server, as the order's do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlmodel import select
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.inventory import CATALOGUE, ReturnClaim
from activities.payments import PaymentActivities, Refund
from activities.shipping import ReturnLabel
from tests.workflows.helpers import (
    INITIAL_STOCK,
    Services,
    order_input,
    result_of,
    running_worker,
    start_order,
    stock,
)
from tooling.temporal import time_skipping_env
from workflows.models import CancelRequest, OrderItem, OrderState, RetryCompensationsRequest
from workflows.registry import SAGA_WORKFLOWS
from workflows.return_models import (
    ClaimStatus,
    LabelStatus,
    ReceiveRequest,
    RefundReturnInput,
    RefundReturnResult,
    ReturnFailure,
    ReturnInput,
    ReturnState,
    ReturnStatus,
)
from workflows.returns import ReturnWorkflow

PRICE = {p.sku: p.price_cents for p in CATALOGUE}
ReturnHandle = WorkflowHandle[ReturnWorkflow, ReturnStatus]


@pytest_asyncio.fixture(loop_scope="session")
async def own_ts_env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_env() as env:
        yield env


async def completed_order(client: Client, task_queue: str, *items: tuple[str, int]) -> str:
    """A checkout run to COMPLETED: what every return starts from."""
    input = order_input(task_queue, items=list(items))
    result = await result_of(await start_order(client, input, task_queue))
    assert result.status == OrderState.COMPLETED, result
    return input.order_id


def return_input(
    task_queue: str, order_id: str, *items: tuple[str, int], **overrides: Any
) -> ReturnInput:
    queues = order_input(task_queue).task_queues
    return ReturnInput(
        return_id=f"return-{uuid.uuid4().hex}",
        order_id=order_id,
        customer_id="c-1",
        items=[OrderItem(sku, quantity) for sku, quantity in items],
        reason="damaged",
        nonce=uuid.uuid4().hex,
        task_queues=queues,
        **overrides,
    )


async def start_return(client: Client, input: ReturnInput, task_queue: str) -> ReturnHandle:
    return await client.start_workflow(
        ReturnWorkflow.run, input, id=input.return_id, task_queue=task_queue
    )


async def until(
    handle: ReturnHandle, condition: Callable[[ReturnStatus], bool], within_s: float = 30
) -> ReturnStatus:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        status = await handle.query(ReturnWorkflow.status)
        if condition(status):
            return status
        assert asyncio.get_running_loop().time() < deadline, f"never reached; last: {status}"
        await asyncio.sleep(0.05)


def awaiting_parcel(status: ReturnStatus) -> bool:
    return status.current_step == "await_parcel"


def claims(services: Services, return_id: str) -> list[ReturnClaim]:
    with services.inventory() as session:
        query = select(ReturnClaim).where(ReturnClaim.return_id == return_id)
        return list(session.exec(query).all())


def labels(services: Services, return_id: str) -> list[ReturnLabel]:
    with services.shipping() as session:
        query = select(ReturnLabel).where(ReturnLabel.return_id == return_id)
        return list(session.exec(query).all())


def refunds(services: Services, order_id: str) -> list[Refund]:
    with services.payments() as session:
        return list(session.exec(select(Refund).where(Refund.order_id == order_id)).all())


async def refusal_of(update: Awaitable[object]) -> str:
    """The validator's words for an update it refused."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await update
    cause = refused.value.cause
    return cause.message if isinstance(cause, FailureError) else str(cause)


def steps(status: ReturnStatus) -> list[tuple[str, str]]:
    return [(s.name, s.status) for s in status.steps]


# --- on the time-skipping server ------------------------------------------------------------


async def test_a_return_without_a_parcel_expires_and_undoes_its_label_and_claim(
    own_ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    ts_env = own_ts_env
    async with running_worker(
        ts_env.client, task_queue, services.activities(), workflows=SAGA_WORKFLOWS
    ):
        order_id = await completed_order(ts_env.client, task_queue, ("SKU-1", 2))
        input = return_input(
            task_queue,
            order_id,
            ("SKU-1", 1),
            parcel_timeout_s=14 * 86400,
            step_heartbeat_timeout_s=0,
        )
        result = await result_of(await start_return(ts_env.client, input, task_queue))

    assert (result.status, result.failure_reason) == (
        ReturnState.EXPIRED,
        ReturnFailure.PARCEL_TIMEOUT,
    )
    assert steps(result) == [
        ("claim_return", "succeeded"),
        ("issue_return_label", "succeeded"),
        ("await_parcel", "failed"),
    ]
    assert [(c.name, c.status) for c in result.compensations] == [
        ("claim_return", "succeeded"),
        ("issue_return_label", "succeeded"),
    ]
    assert [label.status for label in labels(services, input.return_id)] == [LabelStatus.CANCELLED]
    assert [c.status for c in claims(services, input.return_id)] == [ClaimStatus.RELEASED]
    assert stock(services.inventory, "SKU-1") == INITIAL_STOCK["SKU-1"] - 2  # nothing back
    assert refunds(services, order_id) == []


async def test_two_returns_that_together_over_claim_an_order_get_one_claim(
    own_ts_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    ts_env = own_ts_env
    async with running_worker(
        ts_env.client, task_queue, services.activities(), workflows=SAGA_WORKFLOWS
    ):
        order_id = await completed_order(ts_env.client, task_queue, ("SKU-1", 3))
        inputs = [return_input(task_queue, order_id, ("SKU-1", 2)) for _ in range(2)]
        handles = await asyncio.gather(
            *(start_return(ts_env.client, input, task_queue) for input in inputs)
        )
        # Time stands still while the test only queries, so both claims are decided before
        # anything skips; awaiting the results then lets the admitted one expire. One at a
        # time: two result calls at once on this server have failed its time skipping.
        for handle in handles:
            await until(handle, lambda s: s.status.is_terminal or awaiting_parcel(s))
        results = [await result_of(handle) for handle in handles]

    [refused] = [r for r in results if r.status == ReturnState.FAILED]
    [admitted] = [r for r in results if r is not refused]
    assert refused.failure_reason == ReturnFailure.EXCEEDS_ORDER
    assert steps(refused) == [("claim_return", "failed")]
    assert refused.steps[0].error_code == "ReturnExceedsOrder"
    # Refused cleanly: its claim left only a tombstone, so nothing of the order is held.
    assert [c.status for c in claims(services, refused.return_id)] == [ClaimStatus.RELEASED]
    # The other claimed its two (its share of the total) and went on to wait for its parcel.
    assert admitted.steps[0].status == "succeeded"
    assert admitted.refund_cents == 2 * PRICE["SKU-1"]
    assert admitted.status == ReturnState.EXPIRED


# --- updates: on a dev server -------------------------------------------------------------


async def test_a_received_return_is_restocked_and_refunded_its_share(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    async with running_worker(
        dev_env.client, task_queue, services.activities(), workflows=SAGA_WORKFLOWS
    ):
        order_id = await completed_order(dev_env.client, task_queue, ("SKU-1", 2), ("SKU-2", 1))
        input = return_input(task_queue, order_id, ("SKU-2", 1))
        handle = await start_return(dev_env.client, input, task_queue)
        admitted = await handle.execute_update(ReturnWorkflow.admission)
        assert admitted.failure_reason is None
        await until(handle, awaiting_parcel)
        answer = await handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("ops"))
        result = await result_of(handle)

    assert answer.received and answer.status == ReturnState.REFUNDING
    assert result.status == ReturnState.REFUNDED
    assert steps(result) == [
        ("claim_return", "succeeded"),
        ("issue_return_label", "succeeded"),
        ("await_parcel", "succeeded"),
        ("restock_items", "succeeded"),
        ("refund_return", "succeeded"),
    ]
    assert [c.status for c in result.compensations] == ["not_needed", "not_needed"]
    assert result.refund_cents == PRICE["SKU-2"]
    assert [r.amount_cents for r in refunds(services, order_id)] == [PRICE["SKU-2"]]
    assert stock(services.inventory, "SKU-2") == INITIAL_STOCK["SKU-2"]  # back on the shelf
    assert [c.status for c in claims(services, input.return_id)] == [ClaimStatus.RESTOCKED]
    assert [label.status for label in labels(services, input.return_id)] == [LabelStatus.ISSUED]


async def test_a_cancel_before_receipt_frees_the_items_for_another_return(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    async with running_worker(
        dev_env.client, task_queue, services.activities(), workflows=SAGA_WORKFLOWS
    ):
        order_id = await completed_order(dev_env.client, task_queue, ("SKU-1", 1))
        first = await start_return(
            dev_env.client, return_input(task_queue, order_id, ("SKU-1", 1)), task_queue
        )
        await until(first, awaiting_parcel)
        await first.execute_update(ReturnWorkflow.cancel, CancelRequest("changed my mind"))
        cancelled = await result_of(first)
        with pytest.raises(RPCError, match="already completed"):  # a closed one takes none
            await first.execute_update(ReturnWorkflow.receive, ReceiveRequest("ops"))

        second = await start_return(
            dev_env.client, return_input(task_queue, order_id, ("SKU-1", 1)), task_queue
        )
        again = await second.execute_update(ReturnWorkflow.admission)

    assert (cancelled.status, cancelled.failure_reason) == (
        ReturnState.CANCELLED,
        ReturnFailure.CANCELLED_BY_CUSTOMER,
    )
    assert [label.status for label in labels(services, first.id)] == [LabelStatus.CANCELLED]
    assert [c.status for c in claims(services, first.id)] == [ClaimStatus.RELEASED]
    assert again.failure_reason is None and again.refund_cents == PRICE["SKU-1"]


async def test_after_receipt_a_cancel_is_refused_and_a_second_receive_too(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    async with running_worker(
        dev_env.client, task_queue, services.activities(), workflows=SAGA_WORKFLOWS
    ):
        order_id = await completed_order(dev_env.client, task_queue, ("SKU-1", 1))
        handle = await start_return(
            dev_env.client, return_input(task_queue, order_id, ("SKU-1", 1)), task_queue
        )
        await until(handle, awaiting_parcel)
        await handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("ops"))
        late_cancel = await refusal_of(
            handle.execute_update(ReturnWorkflow.cancel, CancelRequest())
        )
        second = await refusal_of(
            handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("ops"))
        )
        result = await result_of(handle)

    assert "can no longer be cancelled" in late_cancel
    assert "already received" in second
    assert result.status == ReturnState.REFUNDED and not result.cancel_requested


class FlakyRefunds:
    """A payment provider that fails a refund `failures` times, retryably, then refunds."""

    def __init__(self, services: Services, failures: int) -> None:
        self.failures = failures
        self._refund = PaymentActivities(services.payments).refund_return

    @activity.defn(name="refund_return")
    def refund_return(self, input: RefundReturnInput) -> RefundReturnResult:
        if activity.info().attempt <= self.failures:
            raise ApplicationError("provider timeout", type="GatewayUnavailable")
        return self._refund(input)


class RefusingRefunds:
    """A payment provider that refuses refunds for good until `fixed`."""

    def __init__(self, services: Services) -> None:
        self.fixed = False
        self._refund = PaymentActivities(services.payments).refund_return

    @activity.defn(name="refund_return")
    def refund_return(self, input: RefundReturnInput) -> RefundReturnResult:
        if not self.fixed:
            raise ApplicationError("refunds disabled", type="RefundRefused", non_retryable=True)
        return self._refund(input)


async def test_a_refund_failing_transiently_is_retried_until_it_succeeds(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    flaky = FlakyRefunds(services, failures=2)
    activities = services.activities(replace={"refund_return": flaky.refund_return})
    async with running_worker(dev_env.client, task_queue, activities, workflows=SAGA_WORKFLOWS):
        order_id = await completed_order(dev_env.client, task_queue, ("SKU-1", 1))
        handle = await start_return(
            dev_env.client, return_input(task_queue, order_id, ("SKU-1", 1)), task_queue
        )
        await until(handle, awaiting_parcel)
        await handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("ops"))
        result = await result_of(handle, within_s=60)

    assert result.status == ReturnState.REFUNDED
    refund = result.steps[-1]
    assert (refund.name, refund.status, refund.attempts) == ("refund_return", "succeeded", 3)
    assert [r.amount_cents for r in refunds(services, order_id)] == [PRICE["SKU-1"]]


async def test_a_refund_failing_for_good_waits_failed_for_an_operator_retry(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    refusing = RefusingRefunds(services)
    activities = services.activities(replace={"refund_return": refusing.refund_return})
    async with running_worker(dev_env.client, task_queue, activities, workflows=SAGA_WORKFLOWS):
        order_id = await completed_order(dev_env.client, task_queue, ("SKU-1", 1))
        handle = await start_return(
            dev_env.client, return_input(task_queue, order_id, ("SKU-1", 1)), task_queue
        )
        await until(handle, awaiting_parcel)
        early = await refusal_of(
            handle.execute_update(ReturnWorkflow.retry, RetryCompensationsRequest("ops"))
        )
        assert "not FAILED" in early
        await handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("ops"))
        failed = await until(handle, lambda s: s.status == ReturnState.FAILED)
        described = await handle.describe()
        refunded_while_failed = refunds(services, order_id)

        refusing.fixed = True
        retried = await handle.execute_update(
            ReturnWorkflow.retry, RetryCompensationsRequest("ops")
        )
        result = await result_of(handle)

    # Open, not closed: it waits for the operator, with the refund as the thing that failed.
    assert described.close_time is None
    assert failed.failure_reason == ReturnFailure.REFUND_FAILED
    assert (failed.steps[-1].name, failed.steps[-1].status) == ("refund_return", "failed")
    assert failed.steps[-1].error_code == "RefundRefused"
    assert refunded_while_failed == []
    assert retried.status == ReturnState.REFUNDING
    assert result.status == ReturnState.REFUNDED and result.failure_reason is None
    assert [s.name for s in result.steps][-2:] == ["refund_return", "refund_return"]
    assert [r.amount_cents for r in refunds(services, order_id)] == [PRICE["SKU-1"]]
    # Restocked once, whatever the refund went through.
    assert stock(services.inventory, "SKU-1") == INITIAL_STOCK["SKU-1"]
