"""No drift, on the time-skipping server: the coordinator checks the sagas it counts in
flight against visibility (here a stand-in activity answering as visibility would) and
stops counting those Temporal ended without a report reaching it; news that arrives
while it asks wins; and reports that cross never undo a saga's end."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.support.temporal import time_skipping_env
from workflows.coordination_models import (
    CoordinationState,
    CoordinatorConfig,
    EndedSaga,
    ReconcileRequest,
    ReconcileResult,
    SagaSnapshot,
    StuckCompensation,
    WorkerReport,
)
from workflows.coordinator import (
    RECONCILE_ACTIVITY,
    REPORT_SIGNAL,
    CoordinatorInput,
    CoordinatorWorkflow,
)
from workflows.saga import CompensationStatus

RECONCILE_S = 30
Coordinator = WorkflowHandle[CoordinatorWorkflow, None]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: its long-running coordinators keep the
    server's clock busy, which must not hold up the timers other modules' tests skip."""
    async with time_skipping_env() as env:
        yield env


@dataclass
class Visibility:
    """Answers `reconcile_sagas` from a scripted view of what Temporal still runs."""

    client: Client
    ended: dict[str, EndedSaga] = field(default_factory=dict)
    running: int = 0
    requests: list[ReconcileRequest] = field(default_factory=list)
    # Sagas waiting for an operator that Temporal no longer runs (terminated, deleted).
    gone: set[str] = field(default_factory=set)
    # Run while "visibility is read": a report may reach the coordinator meanwhile.
    during: Callable[[], Awaitable[None]] | None = None

    @activity.defn(name=RECONCILE_ACTIVITY)
    async def reconcile_sagas(self, request: ReconcileRequest) -> ReconcileResult:
        self.requests.append(request)
        if self.during is not None:
            await self.during()
        ended = [self.ended[o] for o in request.candidates if o in self.ended]
        gone = [saga_id for saga_id in request.waiting if saga_id in self.gone]
        return ReconcileResult(running={"OrderWorkflow": self.running}, ended=ended, gone=gone)


@pytest_asyncio.fixture(loop_scope="session")
async def visibility(
    ts_env: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[tuple[Visibility, Coordinator]]:
    fake = Visibility(ts_env.client)
    async with Worker(
        ts_env.client,
        task_queue=task_queue,
        workflows=[CoordinatorWorkflow],
        activities=[fake.reconcile_sagas],
    ):
        handle = await ts_env.client.start_workflow(
            CoordinatorWorkflow.run,
            CoordinatorInput(
                CoordinatorConfig(
                    services=["payments"], reconcile_s=RECONCILE_S, saga_task_queue="orders-q"
                )
            ),
            id=f"coordinator-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        yield fake, handle
        await handle.terminate("test over")


def snapshot(order_id: str, status: str, at: datetime, terminal: bool = False) -> SagaSnapshot:
    return SagaSnapshot(order_id, status, None if terminal else "step", at, terminal)


async def report(handle: Coordinator, *sagas: SagaSnapshot) -> None:
    await handle.signal(REPORT_SIGNAL, WorkerReport("orders 1@a", sagas=list(sagas)))


async def state_when(
    handle: Coordinator, condition: Callable[[CoordinationState], bool]
) -> CoordinationState:
    deadline = time.monotonic() + 30
    while True:
        state = await handle.query(CoordinatorWorkflow.state)
        if condition(state):
            return state
        assert time.monotonic() < deadline, f"never met; last: {state}"
        await asyncio.sleep(0.1)


async def test_sagas_ended_unreported_stop_counting_and_news_wins(
    ts_env: WorkflowEnvironment, visibility: tuple[Visibility, Coordinator]
) -> None:
    fake, handle = visibility
    now = datetime.now(UTC)
    await report(
        handle,
        snapshot("o-1", "PENDING", now),
        snapshot("o-2", "COMPENSATING", now),
        snapshot("o-3", "AWAITING_APPROVAL", now),
    )
    await state_when(handle, lambda s: s.sagas.in_flight == 3)
    await ts_env.sleep(50)
    await report(handle, snapshot("o-4", "PENDING", now))  # news within the last interval
    await state_when(handle, lambda s: s.sagas.in_flight == 4)
    # Temporal ended o-1 (completed) and o-2 (FAILED: open for an operator, no longer in
    # flight); their last reports were lost. o-3 still waits for approval.
    closed_at = now + timedelta(seconds=2)
    fake.ended = {
        "o-1": EndedSaga("o-1", "COMPLETED", closed_at),
        "o-2": EndedSaga("o-2", "FAILED"),
    }
    fake.running = 3
    await ts_env.sleep(15)  # past the second check, 60 s in

    state = await state_when(handle, lambda s: s.reconciliation.corrected_total == 2)
    assert state.sagas.in_flight == 2
    assert state.sagas.by_status == {"AWAITING_APPROVAL": 1, "PENDING": 1}
    assert state.sagas.finished_total == {"COMPLETED": 1, "FAILED": 1}
    assert state.reconciliation.running == {"OrderWorkflow": 3}
    ended = {t.order_id: t for t in state.recent_terminals}
    assert ended["o-1"].finished_at == closed_at and ended["o-1"].status == "COMPLETED"
    # Only the sagas quiet for a whole interval were asked about, never a fresh one.
    assert len(fake.requests) == 2
    assert fake.requests[-1].candidates == ["o-1", "o-2", "o-3"]
    assert all("o-4" not in request.candidates for request in fake.requests)
    assert fake.requests[-1].saga_types == ["OrderWorkflow"]
    assert fake.requests[-1].task_queue == "orders-q"

    # Next check: o-4 has gone quiet too and goes first (never checked); o-3 was confirmed
    # running last time. While visibility is read, a report of o-3 arrives: it moved on,
    # so an answer calling it ended is older than that news and is ignored.
    fake.ended = {"o-3": EndedSaga("o-3", "COMPENSATED")}

    async def news() -> None:
        await report(handle, snapshot("o-3", "COMPENSATING", datetime.now(UTC)))
        await state_when(handle, lambda s: s.sagas.compensating == 1)

    fake.during = news
    second = state.reconciliation.at
    assert second is not None
    await ts_env.sleep(30)
    state = await state_when(
        handle, lambda s: s.reconciliation.at is not None and s.reconciliation.at > second
    )
    assert fake.requests[2].candidates == ["o-4", "o-3"]
    assert state.sagas.in_flight == 2
    assert state.sagas.by_status == {"COMPENSATING": 1, "PENDING": 1}
    assert state.reconciliation.corrected_total == 2


async def test_reports_that_cross_never_undo_an_end(
    visibility: tuple[Visibility, Coordinator],
) -> None:
    _, handle = visibility
    t = datetime.now(UTC)
    # Two orders workers: the saga moved from one to the other, and the first one's report
    # of an earlier step arrives after the second one's report of its end.
    await report(handle, snapshot("o-9", "COMPLETED", t + timedelta(seconds=2), terminal=True))
    await report(handle, snapshot("o-9", "PENDING", t + timedelta(seconds=1)))
    # And a newer step, then an older one, for a saga still running.
    await report(handle, snapshot("o-8", "COMPENSATING", t + timedelta(seconds=3)))
    await report(handle, snapshot("o-8", "PENDING", t + timedelta(seconds=1)))
    state = await state_when(handle, lambda s: s.reports == 4)
    assert state.sagas.in_flight == 1
    assert state.sagas.by_status == {"COMPENSATING": 1}
    assert state.sagas.finished_total == {"COMPLETED": 1}
    # The same end reported twice (a report sent again after a timeout) counts once.
    await report(handle, snapshot("o-9", "COMPLETED", t + timedelta(seconds=2), terminal=True))
    state = await state_when(handle, lambda s: s.reports == 5)
    assert state.sagas.finished_total == {"COMPLETED": 1}


async def test_dead_letters_of_sagas_terminated_in_temporal_are_dropped(
    ts_env: WorkflowEnvironment, visibility: tuple[Visibility, Coordinator]
) -> None:
    fake, handle = visibility
    now = datetime.now(UTC)
    failed = [
        SagaSnapshot(
            saga_id,
            "FAILED",
            None,
            now,
            terminal=True,
            stuck=[
                StuckCompensation(saga_id, "void_payment", CompensationStatus.FAILED, 3, 30, "x")
            ],
        )
        for saga_id in ("o-t", "o-w")
    ]
    await report(handle, *failed)
    await state_when(handle, lambda s: len(s.dead_letters) == 2)
    # An operator terminates o-t in the Web UI instead of retrying it: no report ever
    # comes again, so only visibility can tell. o-w still waits for its retry.
    fake.gone = {"o-t"}
    await ts_env.sleep(RECONCILE_S + 5)
    state = await state_when(handle, lambda s: len(s.dead_letters) == 1)
    assert [d.order_id for d in state.dead_letters] == ["o-w"]
    assert ["o-t", "o-w"] in [request.waiting for request in fake.requests]
    assert state.sagas.parked_by_type == {"OrderWorkflow": 1}
