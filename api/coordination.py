"""The Temporal side of the coordination endpoints, and the load-shedding decision.

One `CoordinationView` per API process caches the coordinator's state for a second, so a
burst of requests (every POST /orders consults it) costs one query, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError, Overloaded, TemporalUnavailable, UnprocessableRequest
from api.temporal_calls import bounded, refusal
from common import metrics
from common.settings import Settings
from workflows.coordination_models import CoordinationState, OperateRequest
from workflows.coordinator import CoordinatorWorkflow
from workflows.faults import FaultChange, FaultConfigWorkflow
from workflows.models import ConfigureFaultInput, FaultState

log = logging.getLogger("sagaworks.api")

CACHE_S = 1.0
# Past this age a cached state is not served: intake decisions need a live view.
TRUST_S = 10.0


class CoordinatorNotRunning(ApiError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__(
            "the coordinator is not running yet; it starts with the first worker report"
        )


class CoordinationView:
    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._state: CoordinationState | None = None
        self._fetched = 0.0
        self._refreshing: asyncio.Task[CoordinationState] | None = None

    async def state(self, *, background: bool = False) -> CoordinationState:
        """The state as of at most a second ago (one query at a time, shared by callers).

        With `background`, a caller that must not wait (the intake check on every POST)
        gets a copy up to TRUST_S old while the refresh runs behind it.
        """
        age = time.monotonic() - self._fetched
        if self._state is not None and age <= CACHE_S:
            return self._state
        refresh = self._refresh()
        if background and self._state is not None and age <= TRUST_S:
            return self._state
        return await asyncio.shield(refresh)

    def _refresh(self) -> asyncio.Task[CoordinationState]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._fetch())
            # Retrieved here, so a background failure nobody awaited is not logged as lost.
            self._refreshing.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._refreshing

    async def _fetch(self) -> CoordinationState:
        try:
            state = await self._query()
        except Exception:
            metrics.COORDINATION.unreachable()
            raise
        self._state, self._fetched = state, time.monotonic()
        metrics.COORDINATION.observe(state)  # the gauges follow every read
        return state

    async def _query(self) -> CoordinationState:
        handle = self._client.get_workflow_handle_for(
            CoordinatorWorkflow.run, self._settings.coordinator_workflow_id
        )
        try:
            return await bounded(
                self._settings,
                lambda t: handle.query(CoordinatorWorkflow.state, rpc_timeout=t),
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise CoordinatorNotRunning() from err
            raise

    async def operate(self, request: OperateRequest) -> CoordinationState:
        handle = self._client.get_workflow_handle_for(
            CoordinatorWorkflow.run, self._settings.coordinator_workflow_id
        )
        try:
            state = await bounded(
                self._settings,
                lambda t: handle.execute_update(
                    CoordinatorWorkflow.operate, request, rpc_timeout=t
                ),
            )
        except WorkflowUpdateFailedError as err:
            raise UnprocessableRequest(refusal(err)) from err
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise CoordinatorNotRunning() from err
            raise
        self._state, self._fetched = state, time.monotonic()
        metrics.COORDINATION.observe(state)
        return state

    async def check_intake(self) -> None:
        """Raise `Overloaded` while intake is paused or too many sagas are in flight."""
        settings = self._settings
        if not settings.coordination_enabled:
            return
        try:
            state = await self.state(background=True)
        except ApiError as err:
            # Fail open: an unreadable coordinator must not stop the business.
            log.warning("intake check skipped: %s", err.detail)
            return
        retry_after = settings.shed_retry_after_s
        if state.intake.paused:
            metrics.LOAD_SHED.labels("intake_paused").inc()
            raise Overloaded(f"intake is paused ({state.intake.reason}); retry later", retry_after)
        if state.sagas.in_flight >= settings.max_in_flight_sagas:
            metrics.LOAD_SHED.labels("too_many_in_flight").inc()
            raise Overloaded(
                f"{state.sagas.in_flight} sagas in flight (limit "
                f"{settings.max_in_flight_sagas}); retry later",
                retry_after,
            )


async def configure_fault(
    client: Client, settings: Settings, change: ConfigureFaultInput
) -> FaultState:
    """Run `configure_fault` on the service's own queue, through FaultConfigWorkflow."""
    # Inside the gateway's own bound, so a service that is down is named as such.
    timeout = round(settings.api_temporal_timeout_s * 0.8, 1)
    try:
        return await bounded(
            settings,
            lambda t: client.execute_workflow(
                FaultConfigWorkflow.run,
                FaultChange(
                    change,
                    task_queue=settings.task_queue(change.service),
                    timeout_s=timeout,
                ),
                id=f"fault-{change.service}-{uuid.uuid4().hex[:12]}",
                task_queue=settings.orders_task_queue,
                execution_timeout=timedelta(seconds=timeout),
                rpc_timeout=t,
            ),
        )
    except WorkflowFailureError as err:
        raise TemporalUnavailable(
            f"the {change.service} worker did not apply the change within {timeout:g}s"
        ) from err
