"""Synthetic worker processes for the coordinator bench, all in one asyncio process.

Each reporter is the real `CoordinationAgent` over the real `ReportBuffer`, fed by a small
simulation of what its process would see: a service worker's calls (latency, a few
infrastructure errors, calls in flight), or an orders worker's sagas moving step by step
to an end. So a report has the shape and size the real buffer gives it, and the pacing,
shard choice and signal-with-start are the production code's. Only time is measured here:
each report's send time, and when the root's `state` first counts it (`LagProbe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.service import RPCError

from common.settings import SERVICES, Settings
from workers.agent import CoordinationAgent
from workers.reporting import ReportBuffer
from workflows.coordination_models import SagaSnapshot, WorkerReport
from workflows.coordinator import CoordinatorWorkflow

ROLES = (*SERVICES, "orders")
SAGA_STEPS = ("reserve_stock", "authorize_payment", "create_shipment", "capture_payment")
POLL_S = 0.25


class TimedAgent(CoordinationAgent):
    """The production agent, noting when each report it got through was sent."""

    def __init__(self, client: Client, settings: Settings, buffer: ReportBuffer) -> None:
        super().__init__(client, settings, buffer)
        self.sent: list[float] = []
        self.failures = 0

    async def _signal(self, report: WorkerReport) -> None:
        # Noted before the call, so the root can never count a report not noted yet. A
        # call that fails may still have reached the server, so it stays noted: a report
        # it never delivered then shows as unreflected, never as a short lag.
        self.sent.append(time.time())
        # Stopping the bench lets a report in flight finish, so none ends half-sent.
        sending = asyncio.ensure_future(super()._signal(report))
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            await asyncio.wait([sending])
            raise
        except Exception:
            self.failures += 1
            raise


@dataclass
class Reporter:
    index: int
    agent: TimedAgent
    buffer: ReportBuffer
    rng: random.Random

    @property
    def role(self) -> str:
        return self.buffer.worker.split(" ", 1)[0]

    async def simulate(self) -> None:
        """What this process sees, forever: calls into its service, or sagas."""
        if self.role == "orders":
            await self._sagas()
        else:
            await self._calls()

    async def _calls(self) -> None:
        # About five calls a second, tens of milliseconds each, one in a hundred failing.
        while True:
            await asyncio.sleep(self.rng.expovariate(5.0))
            self.buffer.call_started(self.role)
            latency = self.rng.lognormvariate(3.3, 0.6)
            asyncio.get_running_loop().call_later(latency / 1000, self._finish, latency)

    def _finish(self, latency_ms: float) -> None:
        error = "ConnectionError: upstream reset" if self.rng.random() < 0.01 else None
        self.buffer.call_finished(self.role, latency_ms, error)

    async def _sagas(self) -> None:
        # About one new saga a second, each a few steps over two seconds.
        count = 0
        while True:
            await asyncio.sleep(self.rng.expovariate(1.0))
            count += 1
            order_id = f"bench-{self.index}-{count}"
            asyncio.get_running_loop().create_task(self._saga(order_id))

    async def _saga(self, order_id: str) -> None:
        for step in SAGA_STEPS:
            self.buffer.saga_changed(SagaSnapshot(order_id, "PENDING", step, _now()))
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
        compensated = self.rng.random() < 0.1
        status = "COMPENSATED" if compensated else "COMPLETED"
        self.buffer.saga_changed(SagaSnapshot(order_id, status, None, _now(), terminal=True))


def _now() -> datetime:
    return datetime.now(UTC)


def make_reporters(client: Client, settings: Settings, count: int, seed: int) -> list[Reporter]:
    reporters = []
    for index in range(count):
        # As workers.identity.report_key names a process: role, then pid@host.
        role = ROLES[index % len(ROLES)]
        buffer = ReportBuffer(f"{role} {20_000 + index}@bench-host-{index // 10}")
        agent = TimedAgent(client, settings, buffer)
        reporters.append(Reporter(index, agent, buffer, random.Random(seed + index)))
    return reporters


async def run_reporter(reporter: Reporter, start_after_s: float) -> None:
    """Start like a process in a rolling start, then report until cancelled."""
    await asyncio.sleep(start_after_s)
    simulation = asyncio.create_task(reporter.simulate())
    try:
        await reporter.agent.run()
    finally:
        simulation.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await simulation


@dataclass
class LagProbe:
    """Polls the root's `state`: the first poll that counts a report ends its lag."""

    client: Client
    root_id: str
    reporters: list[Reporter]
    lags_s: list[float] = field(default_factory=list)
    # (send time, lag) of each report counted, to see when the slow ones were sent.
    timeline: list[tuple[float, float]] = field(default_factory=list)
    polls: int = 0
    errors: int = 0
    reflected: dict[str, int] = field(default_factory=dict)
    workers_seen: set[str] = field(default_factory=set)

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(POLL_S)

    async def poll(self) -> None:
        handle = self.client.get_workflow_handle_for(CoordinatorWorkflow.run, self.root_id)
        try:
            state = await handle.query(CoordinatorWorkflow.state, rpc_timeout=timedelta(seconds=5))
        except RPCError:
            self.errors += 1  # not started yet, or a task retried: ask again
            return
        answered = time.time()
        self.polls += 1
        counts = {seen.worker: seen.reports for seen in state.workers}
        self.workers_seen |= set(counts)
        for reporter in self.reporters:
            worker = reporter.buffer.worker
            sent = reporter.agent.sent
            done = self.reflected.get(worker, 0)
            upto = min(counts.get(worker, 0), len(sent))
            for n in range(done, upto):
                self.lags_s.append(answered - sent[n])
                self.timeline.append((sent[n], answered - sent[n]))
            if upto > done:
                self.reflected[worker] = upto

    def unreflected(self) -> int:
        return sum(
            len(r.agent.sent) - self.reflected.get(r.buffer.worker, 0) for r in self.reporters
        )
