"""The coordinator's runs stay short enough to replay within one workflow task timeout.

A full replay of a run happens whenever its worker loses the cached workflow: the orders
process restarted, or a continue-as-new refused because a signal arrived meanwhile (the
SDK then evicts the run, and with reports every second one nearly always does). It costs
about 1 ms of CPU per event in the sandbox (4,088 events: 4.3 s on the 2-core machine), and
the retried task must finish within the 10 s workflow task timeout. In the 10,000-order
soak the first run reached Temporal's suggestion (about 4,100 events) under load: its
replay took 14 s, timed out, and every retry had a longer history to replay, so the
coordinator never answered again (RELIABILITY.md, "10,000-order soak"). The production
input therefore continues-as-new at 1,000 events: a replay needs a tenth of a core.

The same soak showed that 1,000 events are not enough on their own: the orders process
that hosts the coordinator also runs every saga, so on loaded cores a replay of 1,000
events still took 8 to 16 s, and each continue-as-new needed several timed-out attempts.
So every run of the coordinator and of its shards also gets a workflow task timeout of
`TASK_TIMEOUT` (30 s) instead of Temporal's 10 s.

On a real dev server, since the server's handling of a continue-as-new racing signals
(refused, retried, newer signals refused meanwhile) is what the coordinator lives with.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    HandleSignalInput,
    Interceptor,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from common.settings import Settings
from tests.workflows.test_coordinator import report, run_lengths, saga, sample, state_after
from workers.agent import CoordinationAgent, coordinator_input
from workers.reporting import ReportBuffer
from workflows.coordination_models import ReconcileRequest, ReconcileResult
from workflows.coordination_shard import ShardInput
from workflows.coordinator import RECONCILE_ACTIVITY, CoordinatorWorkflow

# The longest run whose full replay fits the workflow task timeout with room to spare.
REPLAY_BUDGET_EVENTS = 1_000
# Filling most of the budget quickly: bursts of reports, far faster than production.
BURST = 20
FAST_UNTIL_EVENTS = REPLAY_BUDGET_EVENTS - 150
# Then the pace of five worker processes reporting once a second each.
PRODUCTION_PAUSE_S = 0.2
# A run continues-as-new in the task that crosses its limit, or soon after when signals
# race the command: a little over the limit, never far.
SLACK_EVENTS = 100


@activity.defn(name=RECONCILE_ACTIVITY)
async def nothing_ended(request: ReconcileRequest) -> ReconcileResult:
    return ReconcileResult(running={t: 0 for t in request.saga_types})


async def test_the_production_coordinator_continues_as_new_within_its_replay_budget(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    workflow_id = f"coordinator-{uuid.uuid4()}"
    async with Worker(
        client, task_queue=task_queue, workflows=[CoordinatorWorkflow], activities=[nothing_ended]
    ):
        started = await client.start_workflow(
            CoordinatorWorkflow.run,
            coordinator_input(Settings()),
            id=workflow_id,
            task_queue=task_queue,
        )
        # Not pinned to the first run, as the workers' signal-with-start is not.
        latest = client.get_workflow_handle_for(CoordinatorWorkflow.run, workflow_id)
        try:
            sent = 0
            while (run := await _current_run(client, workflow_id))[0] == started.result_run_id:
                # Past twice the budget, the old 10,000-event default (or Temporal's
                # suggestion at about 4,000) would still be going: stop there.
                if run[1] > 2 * REPLAY_BUDGET_EVENTS:
                    break
                fast = run[1] < FAST_UNTIL_EVENTS
                await asyncio.gather(
                    *(
                        report(
                            latest,
                            f"w{i % 5}",
                            services=[sample("inventory", calls=1)],
                            sagas=[saga(f"o-{i}", "COMPLETED", None, terminal=True)],
                        )
                        for i in range(sent, sent + (BURST if fast else 1))
                    )
                )
                sent += BURST if fast else 1
                await asyncio.sleep(0.05 if fast else PRODUCTION_PAUSE_S)
            state = await state_after(latest, sent)
            runs = await run_lengths(client, started)
        finally:
            await latest.terminate("test over")

    assert len(runs) >= 2, f"one run of {runs[0]} events and counting"
    assert runs[0] <= REPLAY_BUDGET_EVENTS + SLACK_EVENTS, runs
    assert state.reports == sent  # the new run carried everything across


async def _current_run(client: Client, workflow_id: str) -> tuple[str, int]:
    """The latest run's ID and history length, from the server alone."""
    description = await client.get_workflow_handle(workflow_id).describe()
    return description.run_id, description.raw_description.workflow_execution_info.history_length


def test_a_shard_continues_as_new_within_the_same_budget() -> None:
    # Shards take the same reports on the same worker, and are replayed the same way.
    root = coordinator_input(Settings())
    shard = ShardInput(root_id="root", shard=0, shards=2, root=root)
    assert root.config.max_history_events <= REPLAY_BUDGET_EVENTS
    assert shard.max_history_events <= REPLAY_BUDGET_EVENTS


# A replayed report costs this much more than it does live: the slow replay of a starved
# process, made deterministic. Enough reports that a full replay outlasts Temporal's
# default 10 s workflow task timeout, yet fits TASK_TIMEOUT.
REPLAY_DELAY_S = 0.05
FILLER_REPORTS = 300  # 15 s of replay


class _SlowReplay(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _SlowReplayInbound


class _SlowReplayInbound(WorkflowInboundInterceptor):
    async def handle_signal(self, input: HandleSignalInput) -> None:
        if workflow.unsafe.is_replaying():
            with workflow.unsafe.sandbox_unrestricted():
                # Blocking on purpose: a starved process holds the workflow thread too.
                time.sleep(REPLAY_DELAY_S)  # noqa: ASYNC251
        await super().handle_signal(input)


async def test_a_coordinator_whose_full_replay_outlasts_ten_seconds_still_gets_through_it(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    settings = Settings(
        coordinator_workflow_id=f"coordinator-{uuid.uuid4()}", coordinator_task_queue=task_queue
    )
    latest = client.get_workflow_handle_for(
        CoordinatorWorkflow.run, settings.coordinator_workflow_id
    )
    try:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[CoordinatorWorkflow],
            activities=[nothing_ended],
        ):
            # Started the way every worker process starts it: its agent's first report.
            await CoordinationAgent(client, settings, ReportBuffer("orders test")).flush(
                announce=True
            )
            for i in range(FILLER_REPORTS):
                await report(latest, f"w{i % 5}", services=[sample("inventory", calls=1)])
            await state_after(latest, FILLER_REPORTS + 1)
        # A new process, nothing cached: its first task replays the whole run, slowly.
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[CoordinatorWorkflow],
            activities=[nothing_ended],
            interceptors=[_SlowReplay()],
        ):
            await report(latest, "w0", services=[sample("inventory", calls=1)])
            applied = await _applied_within(latest, FILLER_REPORTS + 2, within_s=90)
    finally:
        await latest.terminate("test over")

    assert applied == FILLER_REPORTS + 2, f"applied {applied}: the replay never got through"


async def _applied_within(
    handle: WorkflowHandle[CoordinatorWorkflow, None], reports: int, within_s: float
) -> int:
    """Reports applied once `reports` are, or when `within_s` ran out; -1 if never known."""
    deadline = time.monotonic() + within_s
    applied = -1
    while time.monotonic() < deadline:
        try:
            state = await handle.query(CoordinatorWorkflow.state, rpc_timeout=timedelta(seconds=5))
            applied = state.reports
            if applied >= reports:
                break
        except RPCError:
            pass  # no answer while the replay runs (or times out)
        await asyncio.sleep(0.5)
    return applied
