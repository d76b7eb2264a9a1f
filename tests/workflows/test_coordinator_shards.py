"""The sharded coordinator on the time-skipping server: real agents report through shard
workflows; the root lists every worker, counts every report once, and the shards forward
at most once a second each, across continue-as-new, starting the root when it is missing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.visibility import CoordinationActivities
from common.settings import Settings
from tests.support.temporal import time_skipping_env
from workers.agent import CoordinationAgent, coordinator_input
from workers.reporting import ReportBuffer
from workflows.coordination_fanin import (
    MIN_FORWARD_S,
    member_key,
    shard_for,
    shard_workflow_id,
)
from workflows.coordination_models import CoordinationState, SagaSnapshot, ShardPace
from workflows.coordination_shard import (
    PACE_MEMO,
    CoordinatorShardWorkflow,
    ShardInput,
)
from workflows.coordinator import HOLD_SIGNAL, CoordinatorWorkflow

SHARDS = 3
SIGNALED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: its long-running coordinators keep the
    server's clock busy, which must not hold up the timers other modules' tests skip."""
    async with time_skipping_env() as env:
        yield env


@pytest_asyncio.fixture(loop_scope="session")
async def settings(ts_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Settings]:
    activities = CoordinationActivities(ts_env.client)
    async with Worker(
        ts_env.client,
        task_queue=task_queue,
        workflows=[CoordinatorWorkflow, CoordinatorShardWorkflow],
        activities=[activities.reconcile_sagas, activities.start_coordinator],
    ):
        settings = Settings(
            coordinator_workflow_id=f"coordinator-{uuid.uuid4()}",
            coordinator_task_queue=task_queue,
            coordinator_shards=SHARDS,
        )
        yield settings
        # Nothing ends on its own: leave no timers behind for later tests.
        ids = [settings.coordinator_workflow_id]
        ids += [shard_workflow_id(ids[0], n) for n in range(SHARDS)]
        for workflow_id in ids:
            # A shard nobody hashed to was never started.
            with contextlib.suppress(RPCError):
                await ts_env.client.get_workflow_handle(workflow_id).terminate("test over")


def agents_for(client: Client, settings: Settings, count: int) -> list[CoordinationAgent]:
    roles = ["inventory", "payments", "shipping", "notifications", "orders"]
    return [
        CoordinationAgent(client, settings, ReportBuffer(f"{roles[i % 5]} {4000 + i}@host-{i}"))
        for i in range(count)
    ]


async def deliver(agent: CoordinationAgent, *, announce: bool = False) -> None:
    """One report, sent again if the server refused it (the agent keeps what it held).

    The time-skipping server sometimes answers a signal-with-start that meets a shard's
    continue-as-new with "already started"; the counts below are of reports delivered.
    """
    for _ in range(5):
        if await agent.flush(announce=announce):
            return
        announce = True  # a retry sends what was kept, or the announcement again
        await asyncio.sleep(0.2)  # past the continue-as-new it met
    raise AssertionError("the server refused five reports in a row")


def record_work(agent: CoordinationAgent, index: int) -> None:
    buffer = agent._buffer
    assert buffer is not None
    role = buffer.worker.split(" ")[0]
    if role == "orders":
        buffer.saga_changed(
            SagaSnapshot(f"o-{index}", "PENDING", "reserve_stock", datetime.now(UTC))
        )
        return
    for _ in range(3):
        buffer.call_started(role)
        buffer.call_finished(role, latency_ms=30, error=None)
    buffer.call_started(role)  # one left in flight


async def root_state(client: Client, settings: Settings, reports: int) -> CoordinationState:
    handle = client.get_workflow_handle_for(
        CoordinatorWorkflow.run, settings.coordinator_workflow_id
    )
    deadline, seen = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        try:
            state = await handle.query(CoordinatorWorkflow.state)
        except RPCError:  # not started yet, or a task being retried
            await asyncio.sleep(0.2)
            continue
        if state.reports >= reports:
            return state
        seen = state.reports
        await asyncio.sleep(0.2)
    raise AssertionError(f"the root applied {seen} of {reports} reports")


async def events_of(client: Client, workflow_id: str) -> list[list[HistoryEvent]]:
    """The events of every run of `workflow_id`, following continue-as-new."""
    runs: list[list[HistoryEvent]] = []
    run_id: str | None = (await client.get_workflow_handle(workflow_id).describe()).run_id
    # Walk back from the latest run to the first through each run's predecessor.
    while run_id:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        events = [e async for e in handle.fetch_history_events()]
        runs.insert(0, events)
        started = events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
    return runs


async def test_every_worker_is_listed_by_the_root_through_the_shards(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    client = ts_env.client
    agents = agents_for(client, settings, 12)
    assert {agent.shard for agent in agents} == set(range(SHARDS))  # every shard in use
    # Each announces (as at process start), then sends one report of real work.
    await asyncio.gather(*(deliver(agent, announce=True) for agent in agents))
    for index, agent in enumerate(agents):
        record_work(agent, index)
    await asyncio.gather(*(deliver(agent) for agent in agents))

    state = await root_state(client, settings, reports=24)
    assert state.reports == 24  # each report counted once, none twice
    seen = {w.worker: w for w in state.workers}
    assert set(seen) == {agent._buffer.worker for agent in agents if agent._buffer}
    for agent in agents:
        assert agent._buffer is not None
        worker = seen[agent._buffer.worker]
        assert (worker.reports, worker.shard) == (2, shard_for(agent._buffer.worker, SHARDS))
    # The shards' merged samples add up to what the workers measured.
    for service in ("inventory", "payments", "shipping", "notifications"):
        view = state.services[service]
        reporters = sum(1 for a in agents if a._buffer and a._buffer.worker.startswith(service))
        assert (view.calls, view.in_flight) == (3 * reporters, reporters), service
    orders = sum(1 for a in agents if a._buffer and a._buffer.worker.startswith("orders"))
    assert state.sagas.in_flight == orders and state.sagas.by_status == {"PENDING": orders}

    # Each shard publishes its members' schedule, which the agents then follow.
    for shard in range(SHARDS):
        handle = client.get_workflow_handle_for(
            CoordinatorShardWorkflow.run, shard_workflow_id(settings.coordinator_workflow_id, shard)
        )
        pace = await (await handle.describe()).memo_value(PACE_MEMO, type_hint=ShardPace)
        members = [a._buffer.worker for a in agents if a.shard == shard and a._buffer]
        assert set(pace.phases) == {member_key(worker) for worker in members}
        shard_view = await handle.query(CoordinatorShardWorkflow.view)
        assert shard_view.members == len(members) and shard_view.forwards >= 1


async def test_a_shard_starts_a_missing_root_and_forwards_at_most_once_a_second(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    client = ts_env.client
    root_id = settings.coordinator_workflow_id
    [agent] = [a for a in agents_for(client, settings, 12) if a.shard == 0][:1]
    assert agent._buffer is not None
    sent = 0
    for round_ in range(12):
        record_work(agent, round_)
        await deliver(agent, announce=True)
        sent += 1
        await asyncio.sleep(0.3)  # faster than the shard forwards: several per delta
        if round_ == 5:
            # An operator terminates the root (to apply new settings, say): the shard's
            # next forward fails, it starts a new root and forwards what it holds there.
            await root_state(client, settings, reports=1)
            await client.get_workflow_handle(root_id).terminate("new settings")
    state = await root_state(client, settings, reports=1)
    deadline = time.monotonic() + 30
    # The new root holds every report sent after the terminate, at least.
    while state.reports < sent - 6 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        state = await root_state(client, settings, reports=1)
    assert sent - 6 <= state.reports <= sent

    shard_id = shard_workflow_id(root_id, 0)
    [events] = await events_of(client, shard_id)
    starts = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]
    assert len(starts) >= 2  # the root started twice: at first, and after the terminate
    failed = EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED
    assert [e for e in events if e.event_type == failed]
    assert_forwards_spaced(events)


def assert_forwards_spaced(events: list[HistoryEvent]) -> None:
    """Every forward is issued at least MIN_FORWARD_S of workflow time after the last."""
    forwards = forward_times(events)
    assert len(forwards) >= 3
    gaps = [(b - a).total_seconds() for a, b in zip(forwards, forwards[1:], strict=False)]
    assert min(gaps) >= MIN_FORWARD_S, gaps


async def test_shards_and_root_continue_as_new_and_lose_no_report(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    client = ts_env.client
    root_id = settings.coordinator_workflow_id
    everyone = agents_for(client, settings, 30)
    # Three in shard 1 (started below with a short history), two in each other shard.
    agents = [a for a in everyone if a.shard == 1][:3]
    agents += [a for a in everyone if a.shard == 0][:2] + [a for a in everyone if a.shard == 2][:2]
    root_input = coordinator_input(settings)
    # Issued after the agents' own (they bring theirs in their reports): this one stays.
    short = dataclasses.replace(
        root_input.config, max_history_events=70, issued_at=datetime(2100, 1, 1, tzinfo=UTC)
    )
    root_input = dataclasses.replace(root_input, config=short)
    # Short histories: a shard and the root continue-as-new every few dozen events. The
    # root is started here, so no shard starts it first with the default history limit.
    await client.start_workflow(
        CoordinatorWorkflow.run, root_input, id=root_id, task_queue=settings.coordinator_task_queue
    )
    handle = await client.start_workflow(
        CoordinatorShardWorkflow.run,
        ShardInput(root_id=root_id, shard=1, shards=SHARDS, root=root_input, max_history_events=50),
        id=shard_workflow_id(root_id, 1),
        task_queue=settings.coordinator_task_queue,
    )
    sent, root_runs = 0, 0
    # Until the shard and the root have both moved on twice, each carrying what it holds.
    while (len(await events_of(client, handle.id)) < 3 or root_runs < 2) and sent < 900:
        for index, agent in enumerate(agents):
            record_work(agent, sent + index)
        await asyncio.gather(*(deliver(agent, announce=True) for agent in agents))
        sent += len(agents)
        await asyncio.sleep(0.4)
        root_runs = (await root_state(client, settings, reports=1)).run
    state = await root_state(client, settings, reports=sent)
    assert state.reports == sent
    assert sum(w.reports for w in state.workers) == sent
    assert state.run >= 2
    runs = await events_of(client, handle.id)
    assert len(runs) >= 3
    view = await handle.query(CoordinatorShardWorkflow.view)
    assert view.run == len(runs) - 1 and view.members == 3
    for events in runs[:-1]:
        last = events[-1].event_type
        assert last == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert_forwards_spaced([e for events in runs for e in events])
    # Before each of its continue-as-new, the root asked every shard to hold its forwards,
    # and none forwarded inside a hold (the other shards' slots fall in those windows).
    for shard in range(SHARDS):
        shard_id = shard_workflow_id(root_id, shard)
        shard_events = [e for events in await events_of(client, shard_id) for e in events]
        holds = await holds_received(client, shard_events)
        assert len(holds) >= state.run - 1, shard  # each held, then released
        forwards = forward_times(shard_events)
        for asked_at, until in holds:
            assert not [t for t in forwards if asked_at <= t < until], (shard, asked_at)


async def holds_received(
    client: Client, events: list[HistoryEvent]
) -> list[tuple[datetime, datetime]]:
    """Each hold the root sent: from when the shard got it to its release or its bound,
    whichever came first (a busy root may release after the bound ran out, and from the
    bound on the shard rightly forwards again)."""
    windows: list[tuple[datetime, datetime]] = []
    held: tuple[datetime, datetime] | None = None
    for event in events:
        attributes = event.workflow_execution_signaled_event_attributes
        if event.event_type != SIGNALED or attributes.signal_name != HOLD_SIGNAL:
            continue
        [until] = await client.data_converter.decode(attributes.input.payloads, [float])
        at = event.event_time.ToDatetime(tzinfo=UTC)
        if until > 0:
            held = (at, datetime.fromtimestamp(until, UTC))
        elif held is not None:  # released by the next run
            windows.append((held[0], min(at, held[1])))
            held = None
    return windows


def forward_times(events: list[HistoryEvent]) -> list[datetime]:
    """The workflow time of each forward: the start of the task that issued it."""
    task_started, times = None, []
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            task_started = event.event_time.ToDatetime(tzinfo=UTC)
        if event.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            assert task_started is not None
            times.append(task_started)
    return times
