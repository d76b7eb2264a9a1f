"""What the coordination workflows need from Temporal itself and cannot do in workflow code.

- `reconcile_sagas`: the coordinator's drift check. It lists the running executions of
  each saga type (`WorkflowType='OrderWorkflow' AND ExecutionStatus='Running'`, on the
  sagas' own task queue), and names the candidates (sagas the coordinator still counts in
  flight, quiet for a whole interval) that are not among them, each with the status it
  ended on (its type's status search attribute, from workflows/registry.py); and those
  still running whose status is an end (a FAILED order or return stays open for an
  operator retry). A saga whose terminal report was lost with a killed worker then stops counting.
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

log = logging.getLogger("sagaworks.coordination")


def running_query(saga_type: str, task_queue: str | None) -> str:
    query = f"WorkflowType='{saga_type}' AND ExecutionStatus='Running'"
    return f"{query} AND TaskQueue='{task_queue}'" if task_queue else query


class CoordinationActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name=RECONCILE_ACTIVITY)
    async def reconcile_sagas(self, request: ReconcileRequest) -> ReconcileResult:
        running: dict[str, int] = {}
        # Each running saga's type and status search attribute, listed with it.
        listed: dict[str, tuple[str, str | None]] = {}
        for saga_type in request.saga_types:
            key = STATUS_OF.get(saga_type, ORDER_STATUS)
            count = 0
            async for execution in self._client.list_workflows(
                running_query(saga_type, request.task_queue)
            ):
                listed[execution.id] = (saga_type, execution.typed_search_attributes.get(key))
                count += 1
            running[saga_type] = count
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
        if ended:
            log.info("reconciliation: %d saga(s) ended unreported", len(ended))
        return ReconcileResult(running=running, ended=ended)

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
