"""The coordinator's drift check against a real dev server's visibility.

`reconcile_sagas` (activities/visibility.py) must name every candidate that is no longer in
flight, for each saga type of workflows/registry.py: ended ones with their last status, and
open ones whose status is an end (a FAILED order or return waits open for an operator's
retry), while sagas still under way keep counting.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest_asyncio
from temporalio.client import Client, WorkflowExecution, WorkflowHandle
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


class ListingSpy:
    """The client, counting every execution a visibility listing hands the activity."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.listed = 0

    def list_workflows(self, query: str | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        async def counted() -> AsyncIterator[WorkflowExecution]:
            async for execution in self._client.list_workflows(query, **kwargs):
                self.listed += 1
                yield execution

        return counted()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def start_stand_ins(
    client: Client, task_queue: str, saga_type: str, status: str, count: int
) -> list[WorkflowHandle[Any, Any]]:
    return [
        await client.start_workflow(
            saga_type,
            StandIn(status, stay_open=True),
            id=f"{saga_type}-{uuid.uuid4().hex}",
            task_queue=task_queue,
        )
        for _ in range(count)
    ]


async def test_a_check_lists_only_its_candidates_however_many_sagas_are_parked(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    async with Worker(
        dev_env.client, task_queue=task_queue, workflows=[StandInOrder, StandInReturn]
    ):
        parked = await start_stand_ins(
            dev_env.client, task_queue, "ReturnWorkflow", "AWAITING_PARCEL", 40
        )
        [candidate] = await start_stand_ins(
            dev_env.client, task_queue, "OrderWorkflow", "PENDING", 1
        )
        try:
            spy = ListingSpy(dev_env.client)
            activities = CoordinationActivities(cast(Client, spy))
            request = ReconcileRequest(
                saga_types=SAGA_TYPE_NAMES, candidates=[candidate.id], task_queue=task_queue
            )
            result = await poll(
                lambda: activities.reconcile_sagas(request),
                lambda r: r.running == {"OrderWorkflow": 1, "ReturnWorkflow": 40},
                within=30,
            )
            assert result.ended == []
            # The running sagas are counted, not listed: the 40 parked returns cost nothing.
            spy.listed = 0
            await activities.reconcile_sagas(request)
            assert spy.listed <= 1
        finally:
            for handle in [*parked, candidate]:
                await handle.terminate("test over")


async def test_sagas_waiting_for_an_operator_that_temporal_no_longer_runs_are_gone(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    async with Worker(
        dev_env.client, task_queue=task_queue, workflows=[StandInOrder, StandInReturn]
    ):
        waiting, terminated = await start_stand_ins(
            dev_env.client, task_queue, "OrderWorkflow", "FAILED", 2
        )
        [returned] = await start_stand_ins(
            dev_env.client, task_queue, "ReturnWorkflow", "FAILED", 1
        )
        await terminated.terminate("an operator gave up on it in the Web UI")
        missing = f"order-{uuid.uuid4().hex}"  # deleted by retention
        try:
            activities = CoordinationActivities(dev_env.client)
            request = ReconcileRequest(
                saga_types=SAGA_TYPE_NAMES,
                candidates=[],
                task_queue=task_queue,
                waiting=[waiting.id, terminated.id, returned.id, missing],
            )
            result = await poll(
                lambda: activities.reconcile_sagas(request),
                lambda r: r.running == {"OrderWorkflow": 1, "ReturnWorkflow": 1},
                within=30,
            )
            assert sorted(result.gone) == sorted([terminated.id, missing])
            assert result.ended == []
        finally:
            await waiting.terminate("test over")
            await returned.terminate("test over")
