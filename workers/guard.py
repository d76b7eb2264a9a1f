"""The service worker's activity interceptor: circuit breaking, injected faults, metrics.

Every business activity of a service passes through `ServiceGuard`:
1. While the service's circuit is open, the call fails fast with a retryable
   `ApplicationError` whose `next_retry_delay` is the rest of the open window, so the
   saga's durable retry waits instead of hammering the service. While half-open, one call
   at a time per process goes through as the probe.
2. An injected fault (chaos drill) adds latency and fails a share of the calls.
3. The outcome and latency go into the process's `ReportBuffer` for the coordinator. Only
   infrastructure failures count as errors: a business refusal, and a poison pill (a value
   the database refuses, `InvalidInput`), are healthy answers that no circuit should see.
4. While the call runs it heartbeats, when the step has a heartbeat timeout: from this
   event loop, so it goes on while the activity's thread waits on the database, and stops
   the moment the process dies, which lets Temporal retry the step within seconds rather
   than after the whole start-to-close timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from activities.faults import FaultStore
from common import metrics
from common.db import is_poison
from workers.reporting import ReportBuffer
from workflows.coordination_models import CircuitPhase, CircuitView
from workflows.coordinator import CIRCUITS_MEMO
from workflows.models import BusinessError, FaultState

log = logging.getLogger("sagaworks.guard")

# Operator plumbing is never refused or faulted: clearing a fault must work mid-drill.
UNGUARDED_ACTIVITIES = frozenset({"configure_fault"})
CIRCUIT_OPEN = "CircuitOpen"
INJECTED_FAULT = "InjectedFault"
# A circuit view older than this is ignored: a lost coordinator must not block a service.
STALE_AFTER = timedelta(seconds=30)
MIN_DELAY = timedelta(seconds=1)
# Failures that are the input's fault, even when raised retryable by some older code path.
NOT_INFRASTRUCTURE = frozenset({BusinessError.INVALID_INPUT})
# Heartbeats per heartbeat timeout: a late one or two must not time the step out. The SDK
# throttles what it sends to the server anyway.
BEATS_PER_TIMEOUT = 3


class CircuitCache:
    """This process's copy of the coordinator's circuit states, refreshed by the agent."""

    def __init__(self) -> None:
        self._circuits: dict[str, CircuitView] = {}
        self._fetched_at: datetime | None = None

    async def refresh(self, client: Client, coordinator_id: str) -> None:
        handle = client.get_workflow_handle(coordinator_id)
        try:
            # From the memo: the server answers alone, without a coordinator task.
            description = await handle.describe(rpc_timeout=timedelta(seconds=2))
            circuits = await description.memo_value(
                CIRCUITS_MEMO, None, type_hint=dict[str, CircuitView]
            )
        except Exception as err:  # the coordinator may not exist yet
            log.debug("circuit refresh failed: %s", err)
            return
        if circuits is not None:
            self._circuits = circuits
            self._fetched_at = datetime.now(UTC)

    def current(self, service: str) -> CircuitView | None:
        if self._fetched_at is None or datetime.now(UTC) - self._fetched_at > STALE_AFTER:
            return None
        return self._circuits.get(service)


class FaultCache:
    """The injected fault stored in this service's database, re-read once a second."""

    def __init__(self, store: FaultStore) -> None:
        self._store = store
        self.fault = FaultState(store.service)
        store.listeners.append(self.use)

    async def refresh(self) -> None:
        try:
            fault = await asyncio.to_thread(self._store.read)
        except Exception as err:  # a busy database delays the drill, never the service
            log.warning("could not read the injected fault: %s", err)
            return
        self.use(fault)

    def use(self, fault: FaultState) -> None:
        # Called from the activity thread too; replacing the reference is atomic.
        if fault != dataclasses.replace(self.fault, injected_errors=fault.injected_errors):
            log.warning("injected fault on %s now: %s", fault.service, fault)
        self.fault = fault

    async def apply(self, activity_type: str) -> None:
        fault = self.fault
        if not fault.applies_to(activity_type):
            return
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.error_ratio and random.random() < fault.error_ratio:
            await asyncio.to_thread(self._store.count_injected_error)
            target = fault.activity or f"{fault.service} calls"
            raise ApplicationError(
                f"injected fault: {fault.error_ratio:.0%} of {target} fail",
                type=INJECTED_FAULT,
                non_retryable=fault.non_retryable,
            )


class ServiceGuard(Interceptor):
    def __init__(
        self,
        service: str,
        buffer: ReportBuffer,
        faults: FaultCache,
        circuits: CircuitCache | None,
        open_s: int,
    ) -> None:
        self.service = service
        self.buffer = buffer
        self.faults = faults
        self.circuits = circuits
        self.open_s = open_s
        # The half-open period (its `since`) in which this process sent its probe, and when:
        # one probe per period, or another if the first one's outcome never arrived.
        self._probe_period: datetime | None = None
        self._probe_sent = 0.0

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _GuardedActivity(next, self)

    def admit(self) -> bool:
        """Raise if the circuit refuses the call; return True if it is the half-open probe."""
        circuit = self.circuits.current(self.service) if self.circuits else None
        if circuit is None or circuit.state == CircuitPhase.CLOSED:
            return False
        if circuit.state == CircuitPhase.HALF_OPEN and (
            self._probe_period != circuit.since or time.monotonic() - self._probe_sent > self.open_s
        ):
            self._probe_period, self._probe_sent = circuit.since, time.monotonic()
            log.info("%s circuit half-open: letting a probe through", self.service)
            return True
        if circuit.state == CircuitPhase.OPEN and circuit.retry_at is not None:
            delay = circuit.retry_at - datetime.now(UTC)
        elif circuit.state == CircuitPhase.OPEN:  # tripped by hand: open until reset
            delay = timedelta(seconds=self.open_s)
        else:  # half-open, and this period's probe is out: its outcome decides
            delay = MIN_DELAY
        self.buffer.call_rejected(self.service)
        metrics.CALLS_REJECTED.labels(self.service).inc()
        raise ApplicationError(
            f"{self.service} circuit is {circuit.state.value}: {circuit.reason}",
            type=CIRCUIT_OPEN,
            next_retry_delay=max(delay, MIN_DELAY) + timedelta(seconds=random.random()),
        )


class _GuardedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, guard: ServiceGuard) -> None:
        super().__init__(next)
        self._guard = guard
        self._outbound: ActivityOutboundInterceptor | None = None

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        # The outbound heartbeat is the one to call from the event loop: for a sync
        # activity the SDK rebinds `activity.heartbeat` for the activity's own thread.
        self._outbound = outbound
        super().init(outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        guard = self._guard
        info = activity.info()
        activity_type = info.activity_type
        if activity_type in UNGUARDED_ACTIVITIES:
            return await self.next.execute_activity(input)
        guard.admit()
        guard.buffer.call_started(guard.service)
        started = time.monotonic()
        error: str | None = None
        beating = self._keep_alive(info.heartbeat_timeout)
        outcome = "ok"  # for the latency histograms (common/metrics.py)
        try:
            await guard.faults.apply(activity_type)
            return await self.next.execute_activity(input)
        except ApplicationError as err:
            # A business refusal is a healthy answer; only retryable failures count.
            healthy = err.non_retryable or err.type in NOT_INFRASTRUCTURE
            error = None if healthy else f"{err.type}: {err}"
            outcome = "business_error" if err.non_retryable else "error"
            raise
        except Exception as err:
            error = None if is_poison(err) else f"{type(err).__name__}: {err}"
            outcome = "error"
            raise
        except BaseException:  # cancelled (heartbeat timeout, worker shutdown)
            outcome = "cancelled"
            raise
        finally:
            if beating is not None:
                beating.cancel()
            elapsed_ms = (time.monotonic() - started) * 1000
            guard.buffer.call_finished(guard.service, elapsed_ms, error)
            metrics.observe_call(guard.service, activity_type, outcome, elapsed_ms / 1000)

    def _keep_alive(self, timeout: timedelta | None) -> asyncio.Task[None] | None:
        if timeout is None or self._outbound is None:
            return None
        return asyncio.create_task(_heartbeat(self._outbound, timeout / BEATS_PER_TIMEOUT))


async def _heartbeat(outbound: ActivityOutboundInterceptor, every: timedelta) -> None:
    while True:
        outbound.heartbeat()
        await asyncio.sleep(every.total_seconds())
