"""CoordinatorWorkflow: the live, system-wide Coordination State Layer (ARCHITECTURE.md).

One long-running workflow with a well-known ID. Worker processes feed it batched reports
by signal-with-start (at most one a second each), or, with the fan-in sharded, shard
workflows feed it merged deltas (`coordination_shard.py`); it keeps per-service statistics
and circuit states, saga counts, throughput and the dead-letter list of stuck
compensations; it answers the `state` query, takes operator actions through the validated
`operate` update, checks its in-flight sagas against Temporal visibility on a slow timer
(a saga whose end was never reported stops counting), and continues-as-new with its whole
book when its history grows long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.coordination_book import Book
    from workflows.coordination_fanin import shard_workflow_id
    from workflows.coordination_models import (
        CircuitView,
        CoordinationState,
        CoordinatorConfig,
        OperateRequest,
        ReconcileRequest,
        ReconcileResult,
        ShardDelta,
        WorkerReport,
    )

REPORT_SIGNAL = "report"
SHARD_SIGNAL = "shard_report"
# Sent by the root to its shards before it continues-as-new (a float: until when).
HOLD_SIGNAL = "hold_forwards"
# Held until the next run releases them; the bound is for a root that never comes back.
QUIET_FOR = timedelta(seconds=10)
QUIET_SETTLE = timedelta(seconds=0.3)
RECONCILE_ACTIVITY = "reconcile_sagas"
# Every run's workflow task timeout (the root's and its shards'), set where they start and
# carried by continue-as-new; Temporal's default is 10 s. A lost cache means replaying the
# whole run in one task, in the orders process beside every saga: in the 10,000-order soak
# such replays took 8 to 16 s on loaded cores, timed out and started over, again and again
# (tests/workflows/test_coordinator_run_length.py).
TASK_TIMEOUT = timedelta(seconds=30)
# Runs recorded before the reconciliation timer existed replay without it.
RECONCILE_PATCH = "coordinator-reconciles-with-visibility"
# Runs recorded before reports carried their process's configuration keep their first one.
CONFIG_PATCH = "coordinator-adopts-newer-config"
CIRCUITS_MEMO = "circuits"
MIN_TIMER = timedelta(milliseconds=100)
DETAILS_EVERY = timedelta(seconds=2)


@dataclass
class CoordinatorInput:
    config: CoordinatorConfig
    book: Book = field(default_factory=Book)
    run: int = 0
    # The operator's dashboard, linked from the Web UI summary (settings.public_api_url).
    dashboard_url: str | None = None


@workflow.defn
class CoordinatorWorkflow:
    @workflow.init
    def __init__(self, input: CoordinatorInput) -> None:
        self._config = input.config
        self._book = input.book
        self._run = input.run
        self._dashboard_url = input.dashboard_url
        # One durable timer at a time, for the next moment the state changes on its own
        # (a circuit half-opening, statistics ageing out). Re-armed only when that moment
        # moves earlier, so a busy coordinator does not add a timer per report.
        self._timer: asyncio.Task[None] | None = None
        self._timer_at: datetime | None = None
        self._timer_fired = False
        self._details_at: datetime | None = None
        self._circuits_published: dict[str, CircuitView] | None = None
        self._reconciler: asyncio.Task[None] | None = None

    @workflow.run
    async def run(self, input: CoordinatorInput) -> None:
        self._publish_details()
        self._publish_circuits(force=True)
        if self._config.reconcile_s > 0 and workflow.patched(RECONCILE_PATCH):
            self._reconciler = asyncio.create_task(self._reconcile_forever())
        if self._config.shards > 1 and self._run > 0:
            await self._hold_shards(until_s=0.0)  # the previous run held them: release
        while not self._history_too_long():
            self._arm_timer()
            await workflow.wait_condition(self._changed_since(self._book.revision))
            if self._timer_fired:
                self._timer_fired = False
                self._book.tick(workflow.now(), self._config)
                self._book.revision += 1
            self._publish_details()
            self._publish_circuits()
        if self._config.shards > 1:
            await self._quiet_shards()
        # Let an update that is mid-flight answer first; signals are applied synchronously,
        # and any that arrive with the continue-as-new command make the server retry the
        # task, so none is lost. A reconciliation in flight is abandoned: it only reads,
        # and the next run's first one comes an interval later.
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            CoordinatorInput(
                config=self._config,
                book=self._book,
                run=self._run + 1,
                dashboard_url=self._dashboard_url,
            ),
            task_timeout=TASK_TIMEOUT,
        )

    # --- input ---------------------------------------------------------------------------

    @workflow.signal(name=REPORT_SIGNAL)
    def report(self, report: WorkerReport) -> None:
        self._adopt(report.config)
        self._book.apply_report(report, workflow.now(), self._config)

    @workflow.signal(name=SHARD_SIGNAL)
    def shard_report(self, delta: ShardDelta) -> None:
        self._adopt(delta.config)
        self._book.apply_delta(delta, workflow.now(), self._config)

    def _adopt(self, brought: CoordinatorConfig | None) -> None:
        """Take the configuration a newer worker process brought (a deploy's new settings).

        Checked before the patch, so runs whose reports carry none record no marker.
        """
        if brought is None or not brought.supersedes(self._config):
            return
        if workflow.patched(CONFIG_PATCH):
            workflow.logger.info("configuration issued at %s adopted", brought.issued_at)
            self._config = brought

    @workflow.update
    def operate(self, request: OperateRequest) -> CoordinationState:
        self._book.operate(request, workflow.now(), self._config)
        workflow.logger.info("operator action %s %s", request.action, request.service or "")
        self._publish_details(now=True)
        self._publish_circuits()
        return self.state()

    @operate.validator
    def _validate_operate(self, request: OperateRequest) -> None:
        self._book.validate(request, self._config)

    # --- output --------------------------------------------------------------------------

    @workflow.query
    def state(self) -> CoordinationState:
        return self._book.view(workflow.now(), self._config, self._run)

    # --- internals -----------------------------------------------------------------------

    def _changed_since(self, revision: int) -> Callable[[], bool]:
        return lambda: (
            self._book.revision != revision or self._timer_fired or self._history_too_long()
        )

    def _arm_timer(self) -> None:
        now = workflow.now()
        deadline = self._book.next_deadline(now, self._config)
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = asyncio.create_task(self._fire_at(deadline - now))

    async def _fire_at(self, delay: timedelta) -> None:
        await workflow.sleep(max(delay, MIN_TIMER))
        self._timer_at = None
        self._timer_fired = True

    async def _quiet_shards(self) -> None:
        """Ask the shards to hold their forwards, so the continue-as-new is not refused.

        A signal arriving while the continue-as-new task runs makes the server refuse it;
        the SDK then evicts the run and replays it whole, and with forwards arriving every
        third of a second, under load the retry is refused again, and again: the view froze
        for 15 s in the bench. Held, each shard skips its slots until the next run releases
        it, then forwards at its next one; the forwards already on their way arrive while
        this run waits. (A hold of a fixed length was not enough: on a loaded server a
        timer of 0.4 s fired after 1 s, and the continue-as-new met the first forwards.)
        """
        await self._hold_shards(until_s=(workflow.now() + QUIET_FOR).timestamp())
        await workflow.sleep(QUIET_SETTLE)

    async def _hold_shards(self, until_s: float) -> None:
        root_id = workflow.info().workflow_id
        asks = [
            workflow.get_external_workflow_handle(shard_workflow_id(root_id, shard)).signal(
                HOLD_SIGNAL, until_s
            )
            for shard in range(self._config.shards)
        ]
        # A shard no worker hashed to does not exist: nothing to hold there.
        await asyncio.gather(*asks, return_exceptions=True)

    async def _reconcile_forever(self) -> None:
        """Take out of the in-flight count the sagas Temporal ended without our hearing.

        A report lost with a killed worker process would otherwise count its sagas in
        flight forever. Workflow code does no I/O, so an activity on this workflow's own
        task queue reads visibility; only sagas quiet for a whole interval are asked about.
        """
        # Read on every round: an adopted configuration may change it (0: stop).
        while self._config.reconcile_s > 0:
            every = timedelta(seconds=self._config.reconcile_s)
            await workflow.sleep(every)
            asked_at = workflow.now()
            candidates = self._book.reconcile_candidates(asked_at, self._config)
            try:
                result = await workflow.execute_activity(
                    RECONCILE_ACTIVITY,
                    ReconcileRequest(
                        self._config.saga_types,
                        candidates,
                        self._config.saga_task_queue,
                        waiting=self._book.waiting_candidates(),
                    ),
                    result_type=ReconcileResult,
                    start_to_close_timeout=min(every, timedelta(seconds=30)),
                    retry_policy=RetryPolicy(maximum_attempts=2),
                )
            except ActivityError as err:
                workflow.logger.warning("reconciliation with visibility failed: %s", err)
                self._book.reconciliation_failed(workflow.now())
                continue
            self._book.apply_reconciliation(
                candidates, result, asked_at, workflow.now(), self._config
            )

    def _history_too_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._config.max_history_events
        )

    def _publish_circuits(self, *, force: bool = False) -> None:
        """Keep the circuit states in the memo, where workers read them with `describe`.

        A describe is answered by the server alone, so the four service workers' refresh
        every second costs the coordinator nothing; a query would queue behind its tasks.
        The memo changes (one history event) only when a circuit moves.
        """
        circuits = {name: book.circuit for name, book in self._book.services.items()}
        if force or circuits != self._circuits_published:
            workflow.upsert_memo({CIRCUITS_MEMO: circuits})
            self._circuits_published = circuits

    def _publish_details(self, *, now: bool = False) -> None:
        # At most every DETAILS_EVERY: building the view on every report costs CPU that a
        # person glancing at the Web UI does not need; an operator action shows at once.
        at = workflow.now()
        if not now and self._details_at and at - self._details_at < DETAILS_EVERY:
            return
        self._details_at = at
        workflow.set_current_details(summary_markdown(self.state(), self._dashboard_url))


def summary_markdown(state: CoordinationState, dashboard_url: str | None = None) -> str:
    """A short Markdown summary for the Web UI's "current details" on this workflow."""
    intake = "**paused**" if state.intake.paused else "open"
    lines = [
        f"### sagaworks coordination (run {state.run}, revision {state.revision})",
        *([f"[open the live dashboard]({dashboard_url})", ""] if dashboard_url else []),
        f"intake {intake} · in flight **{state.sagas.in_flight}** · compensating "
        f"**{state.sagas.compensating}** · finished last {state.throughput.window_s}s "
        f"**{state.throughput.finished}**",
        "",
        "| service | circuit | calls/s | errors | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, service in state.services.items():
        lines.append(
            f"| {name} | {service.circuit.state.value} | {service.calls_per_s} | "
            f"{service.error_ratio:.0%} | {_ms(service.p50_ms)} | {_ms(service.p95_ms)} |"
        )
    if state.dead_letters:
        lines.append("")
        lines.append(f"**{len(state.dead_letters)} stuck compensation(s)**:")
        lines.extend(
            f"- `{d.order_id}` {d.compensation} ({d.status}, {d.attempts} attempts)"
            for d in state.dead_letters[:5]
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
