"""CoordinatorWorkflow on the time-skipping server: aggregation, circuits, operator actions,
and continue-as-new that loses nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows.coordination_models import (
    LATENCY_BOUNDS_MS,
    CircuitPhase,
    CircuitPolicy,
    CircuitView,
    CoordinationState,
    CoordinatorConfig,
    OperateRequest,
    ReconcileRequest,
    ReconcileResult,
    SagaSnapshot,
    ServiceSample,
    StuckCompensation,
    WorkerReport,
)
from workflows.coordinator import (
    CIRCUITS_MEMO,
    RECONCILE_ACTIVITY,
    REPORT_SIGNAL,
    CoordinatorInput,
    CoordinatorWorkflow,
)
from workflows.saga import CompensationStatus

SERVICES = ["inventory", "payments", "shipping"]
POLICY = CircuitPolicy(min_calls=4, error_ratio=0.5, window_s=30, open_s=10)

Coordinator = WorkflowHandle[CoordinatorWorkflow, None]


@pytest_asyncio.fixture(loop_scope="session")
async def start_coordinator(
    ts_env: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[Callable[..., asyncio.Future[Coordinator]]]:
    started: list[str] = []
    async with Worker(
        ts_env.client,
        task_queue=task_queue,
        workflows=[CoordinatorWorkflow],
        # Its drift check, as if visibility listed nothing ended (test_coordinator_drift.py
        # tests the check itself): without a worker for it, time could not skip.
        activities=[nothing_ended],
    ):

        def start(**config: object) -> asyncio.Future[Coordinator]:
            started.append(f"coordinator-{uuid.uuid4()}")
            return asyncio.ensure_future(
                ts_env.client.start_workflow(
                    CoordinatorWorkflow.run,
                    CoordinatorInput(
                        CoordinatorConfig(services=SERVICES, circuit=POLICY, **config)  # type: ignore[arg-type]
                    ),
                    id=started[-1],
                    task_queue=task_queue,
                )
            )

        yield start
        # The coordinator never ends on its own; leave no timers behind for later tests.
        for workflow_id in started:
            await ts_env.client.get_workflow_handle(workflow_id).terminate("test over")


@activity.defn(name=RECONCILE_ACTIVITY)
async def nothing_ended(request: ReconcileRequest) -> ReconcileResult:
    return ReconcileResult(running={t: 0 for t in request.saga_types})


def sample(
    service: str, calls: int, errors: int = 0, latency_ms: float = 20, in_flight: int = 0
) -> ServiceSample:
    buckets = [0] * len(LATENCY_BOUNDS_MS)
    buckets[next(i for i, bound in enumerate(LATENCY_BOUNDS_MS) if latency_ms <= bound)] = calls
    return ServiceSample(
        service, calls=calls, errors=errors, latency_buckets=buckets, in_flight=in_flight
    )


def saga(
    order_id: str,
    status: str,
    step: str | None,
    terminal: bool = False,
    stuck: list[StuckCompensation] | None = None,
) -> SagaSnapshot:
    return SagaSnapshot(order_id, status, step, datetime.now(UTC), terminal, stuck or [])


async def report(handle: Coordinator, worker: str, **parts: object) -> None:
    await handle.signal(REPORT_SIGNAL, WorkerReport(worker, **parts))  # type: ignore[arg-type]


async def state_after(handle: Coordinator, reports: int) -> CoordinationState:
    """The state once the coordinator has applied `reports` reports (signals are async)."""
    deadline = time.monotonic() + 30
    applied = 0
    while time.monotonic() < deadline:
        try:
            state = await handle.query(CoordinatorWorkflow.state, rpc_timeout=timedelta(seconds=5))
        except RPCError:
            # No answer while a workflow task retries (a continue-as-new that raced a
            # signal is retried by the server): ask again.
            continue
        if state.reports >= reports:
            return state
        applied = state.reports
        await asyncio.sleep(0.05)
    raise AssertionError(f"coordinator applied {applied} of {reports} reports")


async def test_reports_aggregate_per_service_and_saga(
    start_coordinator: Callable[..., asyncio.Future[Coordinator]],
) -> None:
    handle = await start_coordinator()
    stuck = StuckCompensation(
        "o-3", "authorize_payment", CompensationStatus.STUCK, rounds=2, attempts=10, error="boom"
    )
    await report(
        handle,
        "payments 1@a",
        services=[sample("payments", calls=8, errors=2, latency_ms=40, in_flight=3)],
    )
    await report(
        handle,
        "payments 2@b",
        services=[sample("payments", calls=2, latency_ms=400, in_flight=1), sample("inventory", 5)],
    )
    await report(
        handle,
        "orders 3@c",
        sagas=[
            saga("o-1", "PENDING", "reserve_stock"),
            saga("o-2", "AWAITING_APPROVAL", "await_approval"),
            saga("o-3", "COMPENSATING", "compensating", stuck=[stuck]),
            saga("o-4", "COMPLETED", None, terminal=True),
        ],
    )
    await report(
        handle,
        "orders 3@c",
        sagas=[
            saga("o-1", "PENDING", "authorize_payment"),
            saga("o-5", "COMPENSATED", None, terminal=True),
        ],
    )
    state = await state_after(handle, 4)

    payments = state.services["payments"]
    assert (payments.calls, payments.errors, payments.error_ratio) == (10, 2, 0.2)
    assert payments.in_flight == 4  # the two worker processes' latest counts, summed
    assert payments.p50_ms is not None and 25 < payments.p50_ms <= 50  # 8 of 10 in (25, 50]
    assert payments.p95_ms is not None and 250 < payments.p95_ms <= 500  # the slow two
    assert payments.calls_per_s == round(10 / state.throughput.window_s, 3)
    assert state.services["inventory"].calls == 5
    assert state.services["shipping"].calls == 0  # configured services are always listed
    assert {s: v.circuit.state for s, v in state.services.items()} == dict.fromkeys(
        SERVICES, CircuitPhase.CLOSED
    )

    assert state.sagas.in_flight == 3
    assert state.sagas.compensating == 1
    assert state.sagas.by_status == {"PENDING": 1, "AWAITING_APPROVAL": 1, "COMPENSATING": 1}
    assert state.sagas.by_step == {
        "authorize_payment": 1,
        "await_approval": 1,
        "compensating": 1,
    }
    assert state.sagas.finished_total == {"COMPLETED": 1, "COMPENSATED": 1}
    assert (state.throughput.started, state.throughput.finished) == (3, 2)
    assert [d.order_id for d in state.dead_letters] == ["o-3"]
    assert state.dead_letters[0].attempts == 10
    assert {t.order_id for t in state.recent_terminals} == {"o-4", "o-5"}
    assert {w.worker: w.reports for w in state.workers} == {
        "payments 1@a": 1,
        "payments 2@b": 1,
        "orders 3@c": 2,
    }

    # The stuck compensation goes off the dead-letter list once its saga reports it cleared.
    await report(handle, "orders 3@c", sagas=[saga("o-3", "COMPENSATED", None, terminal=True)])
    state = await state_after(handle, 5)
    assert state.dead_letters == []
    assert state.sagas.in_flight == 2
    assert state.sagas.finished_total == {"COMPLETED": 1, "COMPENSATED": 2}


async def test_circuit_opens_half_opens_and_closes_on_a_probe(
    ts_env: WorkflowEnvironment, start_coordinator: Callable[..., asyncio.Future[Coordinator]]
) -> None:
    handle = await start_coordinator()
    # Below the minimum number of calls nothing trips, however bad the ratio.
    await report(handle, "w", services=[sample("payments", calls=3, errors=3)])
    assert (await state_after(handle, 1)).services["payments"].circuit.state == CircuitPhase.CLOSED
    # 5 calls, 4 failed: at least 4 calls and 80% >= 50%.
    await report(handle, "w", services=[sample("payments", calls=2, errors=1)])
    circuit = (await state_after(handle, 2)).services["payments"].circuit
    assert circuit.state == CircuitPhase.OPEN
    assert circuit.reason.startswith("4 of 5 calls failed")
    assert circuit.since is not None and circuit.retry_at == circuit.since + timedelta(seconds=10)
    # Service workers read the circuits from the memo, with no query to the coordinator.
    memo = await (await handle.describe()).memo_value(
        CIRCUITS_MEMO, type_hint=dict[str, CircuitView]
    )
    assert memo["payments"].state == CircuitPhase.OPEN

    await ts_env.sleep(11)  # the open window passes: the coordinator's timer half-opens it
    circuit = (await handle.query(CoordinatorWorkflow.state)).services["payments"].circuit
    assert circuit.state == CircuitPhase.HALF_OPEN

    # A failed probe opens it again, for another window.
    await report(handle, "w", services=[sample("payments", calls=1, errors=1)])
    circuit = (await state_after(handle, 3)).services["payments"].circuit
    assert (circuit.state, circuit.reason, circuit.opened_count) == (
        CircuitPhase.OPEN,
        "the half-open probe failed",
        2,
    )
    await ts_env.sleep(11)
    assert (await handle.query(CoordinatorWorkflow.state)).services[
        "payments"
    ].circuit.state == CircuitPhase.HALF_OPEN

    # A successful probe closes it, and the old failures no longer count.
    await report(handle, "w", services=[sample("payments", calls=1)])
    state = await state_after(handle, 4)
    circuit = state.services["payments"].circuit
    assert (circuit.state, circuit.reason) == (CircuitPhase.CLOSED, "a half-open probe succeeded")
    assert state.services["payments"].errors == 0
    # Other services were never affected.
    assert state.services["inventory"].circuit.state == CircuitPhase.CLOSED


async def test_error_ratio_below_threshold_keeps_the_circuit_closed(
    start_coordinator: Callable[..., asyncio.Future[Coordinator]],
) -> None:
    handle = await start_coordinator()
    await report(handle, "w", services=[sample("shipping", calls=10, errors=4)])
    state = await state_after(handle, 1)
    assert state.services["shipping"].error_ratio == 0.4
    assert state.services["shipping"].circuit.state == CircuitPhase.CLOSED


@pytest.mark.parametrize(
    ("request_", "refusal"),
    [
        (OperateRequest("explode", "payments"), "unknown action 'explode'"),
        (OperateRequest("trip", None), "trip needs a service"),
        (OperateRequest("trip", "billing"), "got 'billing'"),
        (OperateRequest("reset", "PAYMENTS"), "got 'PAYMENTS'"),
        (OperateRequest("pause_intake", "payments"), "applies to the whole system"),
    ],
)
async def test_operate_validator_rejects_bad_input_and_records_nothing(
    start_coordinator: Callable[..., asyncio.Future[Coordinator]],
    request_: OperateRequest,
    refusal: str,
) -> None:
    handle = await start_coordinator()
    before = await handle.query(CoordinatorWorkflow.state)
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(CoordinatorWorkflow.operate, request_)
    assert refusal in str(failed.value.cause)
    after = await handle.query(CoordinatorWorkflow.state)
    assert after.revision == before.revision
    events = [e async for e in handle.fetch_history_events()]
    update_events = {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    }
    assert not [e for e in events if e.event_type in update_events]


async def test_operator_trips_resets_and_pauses(
    ts_env: WorkflowEnvironment, start_coordinator: Callable[..., asyncio.Future[Coordinator]]
) -> None:
    handle = await start_coordinator()
    state = await handle.execute_update(
        CoordinatorWorkflow.operate, OperateRequest("trip", "payments", "for a drill")
    )
    circuit = state.services["payments"].circuit
    assert (circuit.state, circuit.manual, circuit.reason) == (
        CircuitPhase.OPEN,
        True,
        "tripped for a drill",
    )
    await ts_env.sleep(60)  # a hand-tripped circuit stays open until reset
    state = await handle.query(CoordinatorWorkflow.state)
    assert state.services["payments"].circuit.state == CircuitPhase.OPEN
    state = await handle.execute_update(
        CoordinatorWorkflow.operate, OperateRequest("reset", "payments")
    )
    assert state.services["payments"].circuit.state == CircuitPhase.CLOSED

    state = await handle.execute_update(CoordinatorWorkflow.operate, OperateRequest("pause_intake"))
    assert state.intake.paused and state.intake.reason == "paused by operator"
    state = await handle.execute_update(
        CoordinatorWorkflow.operate, OperateRequest("resume_intake")
    )
    assert not state.intake.paused


async def test_continue_as_new_carries_every_report(
    ts_env: WorkflowEnvironment, start_coordinator: Callable[..., asyncio.Future[Coordinator]]
) -> None:
    limit = 80
    handle = await start_coordinator(max_history_events=limit)
    sent, together = 0, 3
    # How many reports fill a run depends on how the server batches signals into
    # workflow tasks, so keep reporting until the coordinator has moved on three times.
    while sent < 1000 and len(await run_lengths(ts_env.client, handle)) < 4:
        for _ in range(10):
            # A few at a time, so some land while a continue-as-new is being committed.
            await asyncio.gather(
                *(
                    report(
                        handle,
                        f"w{i % 3}",
                        services=[sample("inventory", calls=1)],
                        sagas=[saga(f"o-{i}", "COMPLETED", None, terminal=True)],
                    )
                    for i in range(sent, sent + together)
                )
            )
            sent += together
            # Six signals a second, as six worker processes reporting once a second each.
            # A continue-as-new commits only in a moment without new signals (the server
            # refuses it while undelivered ones wait): at this rate it always finds one.
            await asyncio.sleep(0.5)
    state = await state_after(handle, sent)
    runs = await run_lengths(ts_env.client, handle)
    while state.run != len(runs) - 1:  # a continue-as-new was committing: look again
        state = await state_after(handle, sent)
        runs = await run_lengths(ts_env.client, handle)

    assert state.reports == sent
    assert state.sagas.finished_total == {"COMPLETED": sent}
    assert state.services["inventory"].calls == sent
    assert sum(w.reports for w in state.workers) == sent
    assert state.run >= 3
    # Each run continues as new in the workflow task that crosses the limit: a few events
    # over it. (A flood of signals could push it further, since the server refuses a
    # continue-as-new while undelivered signals wait; workers' pacing prevents that.)
    assert all(limit <= length <= limit + 10 for length in runs[:-1]), runs


async def run_lengths(client: Client, handle: Coordinator) -> list[int]:
    """History length of every run, following the chain of continue-as-new events."""
    lengths = []
    run_id = handle.first_execution_run_id or handle.result_run_id
    while run_id:
        run = client.get_workflow_handle(handle.id, run_id=run_id)
        events = [e async for e in run.fetch_history_events()]
        lengths.append(len(events))
        last = events[-1]
        continued = last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if continued
            else None
        )
    return lengths


async def test_a_newer_worker_process_brings_its_configuration(
    ts_env: WorkflowEnvironment, start_coordinator: Callable[..., asyncio.Future[Coordinator]]
) -> None:
    """Signal-with-start ignores its input once the coordinator runs: reports carry it."""
    deployed = datetime(2030, 1, 1, tzinfo=UTC)
    handle = await start_coordinator(issued_at=deployed)

    def config(issued_at: datetime, services: list[str], min_calls: int) -> CoordinatorConfig:
        policy = CircuitPolicy(min_calls=min_calls, error_ratio=0.5, window_s=30, open_s=10)
        return CoordinatorConfig(services=services, circuit=policy, issued_at=issued_at)

    # A process started after a deploy that added a service and tightened the breaker.
    newer = config(deployed + timedelta(hours=1), [*SERVICES, "warehouse"], min_calls=2)
    await report(handle, "payments 2@b", config=newer)
    state = await state_after(handle, 1)
    assert "warehouse" in state.services
    # An old process, started before that deploy, reports later: it does not undo it.
    older = config(deployed + timedelta(minutes=1), ["inventory"], min_calls=50)
    await report(handle, "payments 1@a", config=older)
    await report(handle, "payments 1@a", services=[sample("payments", calls=2, errors=2)])
    state = await state_after(handle, 3)
    assert set(state.services) == {*SERVICES, "warehouse"}
    # The adopted breaker policy acts: two failed calls of two open the circuit.
    assert state.services["payments"].circuit.state == CircuitPhase.OPEN
