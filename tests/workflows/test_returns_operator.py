"""ReturnWorkflow where a person acts: the receipt of the parcel, a cancel while FAILED.

Issue 17's defects in the returns saga, on a dev server (they go through updates): a
parcel "received" while its label was still being issued was lost when that step then
failed; and a Temporal cancel closed a return whose compensation had failed for good.
"""

from __future__ import annotations

import threading

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities.shipping import ShippingActivities
from tests.workflows.helpers import RefusingLabelCancels, Services, result_of, running_worker
from tests.workflows.test_returns import (
    awaiting_parcel,
    completed_order,
    labels,
    refusal_of,
    return_input,
    start_return,
    until,
)
from workflows.models import RetryCompensationsRequest
from workflows.registry import SAGA_WORKFLOWS
from workflows.return_models import (
    IssueReturnLabelInput,
    IssueReturnLabelResult,
    ReceiveRequest,
    ReturnFailure,
    ReturnState,
)
from workflows.returns import ReturnWorkflow


class SlowLabels:
    """A carrier whose label waits until the test lets it go (within the heartbeat)."""

    def __init__(self, services: Services) -> None:
        self.go = threading.Event()
        self._issue = ShippingActivities(services.shipping).issue_return_label

    @activity.defn(name="issue_return_label")
    def issue_return_label(self, input: IssueReturnLabelInput) -> IssueReturnLabelResult:
        self.go.wait(timeout=4)
        return self._issue(input)


async def test_a_parcel_is_received_only_once_its_label_exists(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    carrier = SlowLabels(services)
    activities = services.activities(replace={"issue_return_label": carrier.issue_return_label})
    async with running_worker(dev_env.client, task_queue, activities, workflows=SAGA_WORKFLOWS):
        order_id = await completed_order(dev_env.client, task_queue, ("SKU-1", 1))
        handle = await start_return(
            dev_env.client, return_input(task_queue, order_id, ("SKU-1", 1)), task_queue
        )
        await until(handle, lambda s: s.current_step == "issue_return_label")
        # Taken now, the receipt would be lost if the label step then failed and rolled
        # the return back (claim released, label cancelled).
        early = await refusal_of(
            handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("ops"))
        )
        carrier.go.set()
        await until(handle, awaiting_parcel)
        received = await handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("ops"))
        result = await result_of(handle)

    assert "label is still being issued" in early
    assert received.received
    assert result.status == ReturnState.REFUNDED


async def test_a_failed_return_waiting_for_an_operator_survives_a_temporal_cancel(
    dev_env: WorkflowEnvironment, task_queue: str, services: Services
) -> None:
    carrier = RefusingLabelCancels(services)
    activities = services.activities(replace={"cancel_return_label": carrier.cancel_return_label})
    async with running_worker(dev_env.client, task_queue, activities, workflows=SAGA_WORKFLOWS):
        order_id = await completed_order(dev_env.client, task_queue, ("SKU-1", 1))
        input = return_input(task_queue, order_id, ("SKU-1", 1), parcel_timeout_s=1)
        handle = await start_return(dev_env.client, input, task_queue)
        # No parcel within a second: the roll-back meets a label cancel refused for good.
        await until(handle, lambda s: s.status == ReturnState.FAILED)

        await handle.cancel()
        ignored = await until(handle, lambda s: s.cancel_ignored)
        described = await handle.describe()

        carrier.fixed = True
        await handle.execute_update(ReturnWorkflow.retry, RetryCompensationsRequest("ops"))
        result = await result_of(handle)

    assert ignored.status == ReturnState.FAILED
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert (result.status, result.failure_reason) == (
        ReturnState.EXPIRED,
        ReturnFailure.PARCEL_TIMEOUT,
    )
    assert [label.status for label in labels(services, input.return_id)] == ["cancelled"]
