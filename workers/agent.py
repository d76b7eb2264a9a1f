"""The per-process coordination agent: one report out and one refresh in, once a second.

It sends the process's `ReportBuffer` to the coordinator by signal-with-start (so the
first worker to report also starts it), refreshes this process's copy of the circuit
states, and re-reads the injected fault from the service's database.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio.client import Client

from common.settings import SERVICES, Settings
from workers.guard import CircuitCache, FaultCache
from workers.reporting import ReportBuffer
from workflows.coordination_models import CircuitPolicy, CoordinatorConfig, WorkerReport
from workflows.coordinator import REPORT_SIGNAL, CoordinatorInput, CoordinatorWorkflow

log = logging.getLogger("sagaworks.agent")

# Circuit states and injected faults are re-read this often (DESIGN §3: at most once a second).
REFRESH_S = 1.0


def coordinator_config(settings: Settings) -> CoordinatorConfig:
    return CoordinatorConfig(
        services=list(SERVICES),
        circuit=CircuitPolicy(
            min_calls=settings.circuit_min_calls,
            error_ratio=settings.circuit_error_ratio,
            window_s=settings.circuit_window_s,
            open_s=settings.circuit_open_s,
        ),
        stats_window_s=settings.stats_window_s,
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

    async def run(self) -> None:
        """Report and refresh until cancelled, each in its own loop so neither delays the other."""
        await asyncio.gather(self._report(), self._refresh())

    async def _report(self) -> None:
        if self._buffer is None:
            return
        await self.flush(announce=True)
        while True:
            # The pause starts once the last signal was acknowledged, so the server records
            # this process's signals at least `report_interval_s` apart, however slow it is.
            await asyncio.sleep(self._settings.report_interval_s)
            await self.flush()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            if self._circuits is not None:
                await self._circuits.refresh(self._client, self._settings.coordinator_workflow_id)
            if self._faults is not None:
                await self._faults.refresh()

    async def flush(self, *, announce: bool = False) -> None:
        """Send what was recorded since the last report; `announce` sends even if nothing was."""
        if self._buffer is None:
            return
        report = self._buffer.drain()
        if report is None and not announce:
            return
        try:
            await self._signal(report or WorkerReport(worker=self._buffer.worker))
        except Exception as err:  # Temporal unreachable: keep the numbers for the next try
            log.warning("coordination report not sent: %s", err)
            if report is not None:
                self._buffer.restore(report)

    async def _signal(self, report: WorkerReport) -> None:
        settings = self._settings
        await self._client.start_workflow(
            CoordinatorWorkflow.run,
            CoordinatorInput(config=coordinator_config(settings)),
            id=settings.coordinator_workflow_id,
            task_queue=settings.coordinator_task_queue,
            start_signal=REPORT_SIGNAL,
            start_signal_args=[report],
            rpc_timeout=timedelta(seconds=5),
        )
