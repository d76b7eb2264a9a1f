"""The coordinator's drift check against a real dev server's visibility.

`reconcile_sagas` (activities/visibility.py) must name every candidate that is no longer in
flight, for each saga type of workflows/registry.py: ended ones with their last status, and
open ones whose status is an end (a FAILED order or return waits open for an operator's
retry), while sagas still under way keep counting.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.visibility import CoordinationActivities
from tests.support.api_client import poll
from tests.workflows.standin_sagas import StandIn, StandInOrder, StandInReturn
from workflows.coordination_models import ReconcileRequest, ReconcileResult
from workflows.registry import SAGA_TYPE_NAMES

# (saga type, status it sets, stays open) -> ended as reported, or None if still in flight
CASES: dict[tuple[str, str, bool], str | None] = {
    ("OrderWorkflow", "AWAITING_APPROVAL", True): None,
    ("OrderWorkflow", "FAILED", True): "FAILED",
    ("OrderWorkflow", "COMPLETED", False): "COMPLETED",
    ("ReturnWorkflow", "AWAITING_PARCEL", True): None,
    ("ReturnWorkflow", "FAILED", True): "FAILED",
    ("ReturnWorkflow", "REFUNDED", False): "REFUNDED",
}


@pytest_asyncio.fixture(loop_scope="session")
async def started(
    dev_env: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[dict[str, tuple[str, str, bool]]]:
    """Every case running (or ended) on this test's own task queue, by workflow ID."""
    handles: list[WorkflowHandle[Any, Any]] = []
    cases: dict[str, tuple[str, str, bool]] = {}
    async with Worker(
        dev_env.client, task_queue=task_queue, workflows=[StandInOrder, StandInReturn]
    ):
        for case in CASES:
            saga_type, status, stay_open = case
            workflow_id = f"{saga_type}-{uuid.uuid4().hex}"
            handle = await dev_env.client.start_workflow(
                saga_type,  # the stand-in registered under the saga type's name
                StandIn(status, stay_open),
                id=workflow_id,
                task_queue=task_queue,
            )
            handles.append(handle)
            cases[workflow_id] = case
            if not stay_open:
                await handle.result()
        try:
            yield cases
        finally:
            for handle in handles:
                if (await handle.describe()).close_time is None:
                    await handle.terminate("test over")


async def test_candidates_no_longer_in_flight_are_named_with_their_status(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    started: dict[str, tuple[str, str, bool]],
) -> None:
    activities = CoordinationActivities(dev_env.client)
    gone = f"order-{uuid.uuid4().hex}"  # never ran (or long gone with retention)
    request = ReconcileRequest(
        saga_types=SAGA_TYPE_NAMES, candidates=[*started, gone], task_queue=task_queue
    )
    open_per_type = {
        name: sum(1 for t, _, stay_open in started.values() if t == name and stay_open)
        for name in SAGA_TYPE_NAMES
    }

    def listed_as_now(result: ReconcileResult) -> bool:
        # Visibility lags behind the starts and the status upserts.
        return result.running == open_per_type and len(result.ended) == 5

    result = await poll(lambda: activities.reconcile_sagas(request), listed_as_now, within=30)

    ended = {saga.order_id: saga for saga in result.ended}
    expected = {wid: CASES[case] for wid, case in started.items() if CASES[case] is not None}
    assert {wid: ended[wid].status for wid in expected} == expected
    assert ended[gone].status == "UNKNOWN"
    assert set(ended) == {*expected, gone}  # the two under way keep counting
    for workflow_id, (_, _, stay_open) in started.items():
        if workflow_id in ended and not stay_open:
            assert ended[workflow_id].closed_at is not None
