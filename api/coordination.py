"""The Temporal side of the coordination endpoints, and the load-shedding decision.

One `CoordinationView` per API process caches the coordinator's state for a second, so a
burst of requests (every POST /orders consults it) costs one query, not one each.

Shedding counts the sagas of the requested type that actively run steps
(`sagas.active_by_type`), against that type's cap from settings; parked sagas (held for
approval, waiting for a parcel or an operator: `is_parked`) never count, so days of
returns waiting for parcels cannot refuse a single checkout.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
from workflows.order import OrderWorkflow
from workflows.returns import ReturnWorkflow

log = logging.getLogger("sagaworks.api")

CACHE_S = 1.0
# Past this age a cached state is not served: intake decisions need a live view.
TRUST_S = 10.0
CHECKOUT = OrderWorkflow.__name__
RETURN = ReturnWorkflow.__name__
# What each shed saga type is called in a 503's detail.
NOUNS = {CHECKOUT: "checkouts", RETURN: "returns"}


def active_caps(settings: Settings) -> dict[str, int]:
    """The cap on sagas actively running steps, per saga type that intake sheds.

    Args:
        settings: the API's settings.

    Returns:
        Workflow type to cap: checkouts `SAGAWORKS_MAX_IN_FLIGHT_SAGAS`, returns
        `SAGAWORKS_MAX_ACTIVE_RETURNS`.
    """
    return {CHECKOUT: settings.max_in_flight_sagas, RETURN: settings.max_active_returns}


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

    def _with_caps(self, state: CoordinationState) -> CoordinationState:
        # The caps are the API's settings, not the coordinator's: shown beside the counts.
        sagas = dataclasses.replace(state.sagas, active_caps=active_caps(self._settings))
        return dataclasses.replace(state, sagas=sagas)

    async def _query(self) -> CoordinationState:
        handle = self._client.get_workflow_handle_for(
            CoordinatorWorkflow.run, self._settings.coordinator_workflow_id
        )
        try:
            state = await bounded(
                self._settings,
                lambda t: handle.query(CoordinatorWorkflow.state, rpc_timeout=t),
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise CoordinatorNotRunning() from err
            raise
        return self._with_caps(state)

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
        state = self._with_caps(state)
        self._state, self._fetched = state, time.monotonic()
        metrics.COORDINATION.observe(state)
        return state

    async def check_intake(self, saga_type: str = CHECKOUT) -> None:
        """Refuse a new saga while intake is paused or its type's active sagas are at the cap.

        Args:
            saga_type: the workflow type about to start; pausing intake stops checkouts.

        Raises:
            Overloaded: shed with 503 and Retry-After.
        """
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
        if state.intake.paused and saga_type == CHECKOUT:
            metrics.LOAD_SHED.labels("intake_paused").inc()
            raise Overloaded(f"intake is paused ({state.intake.reason}); retry later", retry_after)
        cap = active_caps(settings).get(saga_type)
        active = state.sagas.active_by_type.get(saga_type, 0)
        if cap is not None and active >= cap:
            metrics.LOAD_SHED.labels("too_many_in_flight").inc()
            raise Overloaded(
                f"{active} {NOUNS.get(saga_type, saga_type)} actively running (limit {cap}; "
                "sagas parked for approval, a parcel or an operator do not count); retry later",
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
