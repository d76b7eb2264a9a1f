"""The per-process coordination agent: one report out and one refresh in, once a second.

It sends the process's `ReportBuffer` to the coordinator by signal-with-start (so the
first worker to report also starts it), refreshes this process's copy of the circuit
states, and re-reads the injected fault from the service's database.

With the fan-in sharded (`SAGAWORKS_COORDINATOR_SHARDS` > 1) the report goes to the shard
this process's identity hashes to, at the moments the shard's schedule gives it (read
from the shard's memo after each report), so the shard's members never bunch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from temporalio.client import Client

from common.settings import SERVICES, Settings
from workers.guard import CircuitCache, FaultCache
from workers.reporting import ReportBuffer
from workflows.coordination_fanin import next_report_at, shard_for, shard_workflow_id
from workflows.coordination_models import (
    CircuitPolicy,
    CoordinatorConfig,
    ShardPace,
    WorkerReport,
)
from workflows.coordination_shard import PACE_MEMO, CoordinatorShardWorkflow, ShardInput
from workflows.coordinator import (
    REPORT_SIGNAL,
    TASK_TIMEOUT,
    CoordinatorInput,
    CoordinatorWorkflow,
)
from workflows.registry import SAGA_TYPE_NAMES

log = logging.getLogger("sagaworks.agent")

# Circuit states and injected faults are re-read this often: at most once a second
# (ARCHITECTURE.md, Coordination State Layer).
REFRESH_S = 1.0


def coordinator_config(settings: Settings, issued_at: datetime | None = None) -> CoordinatorConfig:
    return CoordinatorConfig(
        services=list(SERVICES),
        circuit=CircuitPolicy(
            min_calls=settings.circuit_min_calls,
            error_ratio=settings.circuit_error_ratio,
            window_s=settings.circuit_window_s,
            open_s=settings.circuit_open_s,
        ),
        stats_window_s=settings.stats_window_s,
        reconcile_s=settings.coordinator_reconcile_s,
        saga_task_queue=settings.orders_task_queue,
        shards=settings.coordinator_shards,
        saga_types=list(SAGA_TYPE_NAMES),
        issued_at=issued_at,
    )


def coordinator_input(
    settings: Settings, config: CoordinatorConfig | None = None
) -> CoordinatorInput:
    return CoordinatorInput(
        config=config or coordinator_config(settings),
        dashboard_url=f"{settings.public_api_url.rstrip('/')}/dashboard",
    )


class CoordinationAgent:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        buffer: ReportBuffer | None,
        *,
        circuits: CircuitCache | None = None,
        faults: FaultCache | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._buffer = buffer
        self._circuits = circuits
        self._faults = faults
        # Stamped with this process's start: a running coordinator adopts it from a report
        # if it is newer than its own; sent until a report carrying it got through.
        self._config = coordinator_config(settings, issued_at=datetime.now(UTC))
        self._config_delivered = False
        shards = settings.coordinator_shards
        # Which shard this process reports to; None: straight to the coordinator.
        self.shard = shard_for(buffer.worker, shards) if buffer and shards > 1 else None
        self._pace: ShardPace | None = None
        # The slot of the shard's schedule the next report goes in (named in the report).
        self._phase: float | None = None

    async def run(self) -> None:
        """Report and refresh until cancelled, each in its own loop so neither delays the other."""
        await asyncio.gather(self._report(), self._refresh())

    async def _report(self) -> None:
        if self._buffer is None:
            return
        if self.shard is not None:
            # Joining a shard that is already running: announce at a slot too, so a rolling
            # start of many processes does not bunch their first reports.
            await asyncio.sleep(await self._pause(None))
        sent_at = time.time()
        await self.flush(announce=True)
        while True:
            # The pause starts once the last signal was acknowledged, so the server records
            # this process's signals at least `report_interval_s` apart, however slow it is.
            await asyncio.sleep(await self._pause(sent_at))
            sent_at = time.time()
            await self.flush()

    async def _pause(self, sent_at: float | None) -> float:
        """Seconds until the next report (`sent_at` None: before the first one)."""
        if self.shard is None:
            return self._settings.report_interval_s
        assert self._buffer is not None
        await self._read_schedule()
        now = time.time()
        if sent_at is None and self._pace is None:
            return 0.0  # no shard yet: this report starts it
        worker, base = self._buffer.worker, self._settings.report_interval_s
        at, self._phase = next_report_at(self._pace, worker, base, now, sent_at)
        return at - now

    async def _read_schedule(self) -> None:
        """This process's shard's schedule (memo `pace`); the last one read if unreadable."""
        assert self.shard is not None
        handle = self._client.get_workflow_handle(
            shard_workflow_id(self._settings.coordinator_workflow_id, self.shard)
        )
        try:
            description = await handle.describe(rpc_timeout=timedelta(seconds=2))
            pace = await description.memo_value(PACE_MEMO, None, type_hint=ShardPace)
        except Exception as err:  # the shard may not exist yet
            log.debug("shard schedule not read: %s", err)
            return
        if pace is not None:
            self._pace = pace

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            if self._circuits is not None:
                await self._circuits.refresh(self._client, self._settings.coordinator_workflow_id)
            if self._faults is not None:
                await self._faults.refresh()

    async def flush(self, *, announce: bool = False) -> bool:
        """Send what was recorded since the last report; `announce` sends even if nothing was.

        True when a report reached Temporal. A refused one is kept for the next try, merged
        with what comes after it (the coordinator then counts one report for both).
        """
        if self._buffer is None:
            return False
        drained = self._buffer.drain()
        if drained is None and not announce:
            return False
        report = drained or WorkerReport(worker=self._buffer.worker)
        report.phase_s = self._phase
        if not self._config_delivered:
            report.config = self._config
        try:
            await self._signal(report)
        except Exception as err:  # Temporal unreachable: keep the numbers for the next try
            log.warning("coordination report not sent: %s", err)
            if drained is not None:
                self._buffer.restore(drained)
            return False
        self._config_delivered = True
        return True

    async def _signal(self, report: WorkerReport) -> None:
        settings = self._settings
        if self.shard is not None:
            await self._client.start_workflow(
                CoordinatorShardWorkflow.run,
                ShardInput(
                    root_id=settings.coordinator_workflow_id,
                    shard=self.shard,
                    shards=settings.coordinator_shards,
                    root=coordinator_input(settings, self._config),
                    report_interval_s=settings.report_interval_s,
                ),
                id=shard_workflow_id(settings.coordinator_workflow_id, self.shard),
                task_queue=settings.coordinator_task_queue,
                start_signal=REPORT_SIGNAL,
                start_signal_args=[report],
                task_timeout=TASK_TIMEOUT,
                rpc_timeout=timedelta(seconds=5),
            )
            return
        await self._client.start_workflow(
            CoordinatorWorkflow.run,
            coordinator_input(settings, self._config),
            id=settings.coordinator_workflow_id,
            task_queue=settings.coordinator_task_queue,
            start_signal=REPORT_SIGNAL,
            start_signal_args=[report],
            task_timeout=TASK_TIMEOUT,
            rpc_timeout=timedelta(seconds=5),
        )
