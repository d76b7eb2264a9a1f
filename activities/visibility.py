"""What the coordination workflows need from Temporal itself and cannot do in workflow code.

- `reconcile_sagas`: the coordinator's drift check. It counts the running executions of
  each saga type (`WorkflowType='OrderWorkflow' AND ExecutionStatus='Running'`, on the
  sagas' own task queue) and lists only the candidates among them (`WorkflowId IN (...)`,
  in batches), never every running saga: sagas parked for days add up. It names the
  candidates (sagas the coordinator still counts in flight, quiet for a whole interval)
  that do not run, each with the status it ended on (its type's status search attribute,
  from workflows/registry.py), and those still running whose status is an end (a FAILED
  order or return stays open for an operator retry). A saga whose terminal report was
  lost with a killed worker then stops counting. It also names the sagas waiting for an
  operator (dead letters) that Temporal no longer runs: terminated or deleted, they will
  never report again.
- `start_coordinator`: a shard starts the root when it finds it missing.

Both run on the coordination task queue, served by the orders process (workers/orders.py).
"""

from __future__ import annotations

import logging

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from workflows.coordination_models import EndedSaga, ReconcileRequest, ReconcileResult
from workflows.coordination_shard import (
    START_ROOT_ACTIVITY,
    StartCoordinatorInput,
    StartedCoordinator,
)
from workflows.coordinator import RECONCILE_ACTIVITY, TASK_TIMEOUT, CoordinatorWorkflow
from workflows.registry import SAGAS
from workflows.search_attributes import ORDER_STATUS

# The search attribute each saga type keeps its status in.
STATUS_OF = {saga.name: saga.status for saga in SAGAS}
# Statuses a saga can reach while its workflow stays open: a FAILED order or return waits
# for an operator's retry, and is no longer in flight.
ENDED_WHILE_OPEN = {saga.name: saga.terminal_states for saga in SAGAS}

# Workflow IDs per visibility query: short enough for any visibility store's query limit.
ID_BATCH = 100

log = logging.getLogger("sagaworks.coordination")


def running_query(saga_type: str, task_queue: str | None) -> str:
    query = f"WorkflowType='{saga_type}' AND ExecutionStatus='Running'"
    return f"{query} AND TaskQueue='{task_queue}'" if task_queue else query


def _quotable(workflow_id: str) -> bool:
    return "'" not in workflow_id and "\\" not in workflow_id


class CoordinationActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name=RECONCILE_ACTIVITY)
    async def reconcile_sagas(self, request: ReconcileRequest) -> ReconcileResult:
        running = {
            saga_type: await self._count(running_query(saga_type, request.task_queue))
            for saga_type in request.saga_types
        }
        # Each running candidate's type and status search attribute, listed with it.
        listed = await self._running_among(
            [*request.candidates, *request.waiting], request.saga_types, request.task_queue
        )
        ended = []
        for order_id in request.candidates:
            if order_id in listed:
                saga_type, status = listed[order_id]
                if status is not None and status in ENDED_WHILE_OPEN.get(saga_type, frozenset()):
                    ended.append(EndedSaga(order_id, status))
                continue
            found = await self._ended(order_id)
            if found is not None:
                ended.append(found)
        gone = [
            saga_id
            for saga_id in request.waiting
            if saga_id not in listed and await self._ended(saga_id) is not None
        ]
        if ended or gone:
            log.info("reconciliation: %d saga(s) ended unreported, %d gone", len(ended), len(gone))
        return ReconcileResult(running=running, ended=ended, gone=gone)

    async def _count(self, query: str) -> int:
        try:
            return (await self._client.count_workflows(query)).count
        except RPCError as err:
            if err.status != RPCStatusCode.UNIMPLEMENTED:
                raise
        # Only Temporal's time-skipping test server cannot count: list there.
        return len([execution async for execution in self._client.list_workflows(query)])

    async def _running_among(
        self, workflow_ids: list[str], saga_types: list[str], task_queue: str | None
    ) -> dict[str, tuple[str, str | None]]:
        """Which of `workflow_ids` run as one of `saga_types`: their type and status."""
        quotable = sorted({w for w in workflow_ids if _quotable(w)})
        types = ", ".join(f"'{saga_type}'" for saga_type in saga_types)
        listed: dict[str, tuple[str, str | None]] = {}
        for start in range(0, len(quotable), ID_BATCH):
            ids = ", ".join(f"'{w}'" for w in quotable[start : start + ID_BATCH])
            query = (
                f"ExecutionStatus='Running' AND WorkflowType IN ({types}) AND WorkflowId IN ({ids})"
            )
            if task_queue:
                query += f" AND TaskQueue='{task_queue}'"
            async for execution in self._client.list_workflows(query):
                key = STATUS_OF.get(execution.workflow_type, ORDER_STATUS)
                status = execution.typed_search_attributes.get(key)
                listed[execution.id] = (execution.workflow_type, status)
        # An ID no query can quote is described one by one (`_ended`) instead.
        return listed

    async def _ended(self, order_id: str) -> EndedSaga | None:
        """How a saga visibility no longer lists as running ended; None if it still runs."""
        try:
            description = await self._client.get_workflow_handle(order_id).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # Gone from Temporal altogether (retention): it ended long ago.
            return EndedSaga(order_id, "UNKNOWN")
        if description.status in (None, WorkflowExecutionStatus.RUNNING):
            return None  # listed a moment too early, or a new run under the same ID
        key = STATUS_OF.get(description.workflow_type, ORDER_STATUS)
        status = description.typed_search_attributes.get(key)
        return EndedSaga(order_id, status or description.status.name, description.close_time)

    @activity.defn(name=START_ROOT_ACTIVITY)
    async def start_coordinator(self, request: StartCoordinatorInput) -> StartedCoordinator:
        # Several shards may find the root missing at once: the first start wins, the
        # others find it running and leave it be.
        handle = await self._client.start_workflow(
            CoordinatorWorkflow.run,
            request.input,
            id=request.workflow_id,
            task_queue=request.task_queue,
            task_timeout=TASK_TIMEOUT,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return StartedCoordinator(handle.result_run_id)
