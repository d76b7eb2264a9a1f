"""CoordinatorWorkflow: the live, system-wide Coordination State Layer (DESIGN §3).

One long-running workflow with a well-known ID. Worker processes feed it batched reports
by signal-with-start (at most one a second each); it keeps per-service statistics and
circuit states, saga counts, throughput and the dead-letter list of stuck compensations;
it answers the `state` query, takes operator actions through the validated `operate`
update, and continues-as-new with its whole book when its history grows long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.coordination_book import Book
    from workflows.coordination_models import (
        CircuitView,
        CoordinationState,
        CoordinatorConfig,
        OperateRequest,
        WorkerReport,
    )

REPORT_SIGNAL = "report"
CIRCUITS_MEMO = "circuits"
MIN_TIMER = timedelta(milliseconds=100)
DETAILS_EVERY = timedelta(seconds=2)


@dataclass
class CoordinatorInput:
    config: CoordinatorConfig
    book: Book = field(default_factory=Book)
    run: int = 0


@workflow.defn
class CoordinatorWorkflow:
    @workflow.init
    def __init__(self, input: CoordinatorInput) -> None:
        self._config = input.config
        self._book = input.book
        self._run = input.run
        # One durable timer at a time, for the next moment the state changes on its own
        # (a circuit half-opening, statistics ageing out). Re-armed only when that moment
        # moves earlier, so a busy coordinator does not add a timer per report.
        self._timer: asyncio.Task[None] | None = None
        self._timer_at: datetime | None = None
        self._timer_fired = False
        self._details_at: datetime | None = None
        self._circuits_published: dict[str, CircuitView] | None = None

    @workflow.run
    async def run(self, input: CoordinatorInput) -> None:
        self._publish_details()
        self._publish_circuits(force=True)
        while not self._history_too_long():
            self._arm_timer()
            await workflow.wait_condition(self._changed_since(self._book.revision))
            if self._timer_fired:
                self._timer_fired = False
                self._book.tick(workflow.now(), self._config)
                self._book.revision += 1
            self._publish_details()
            self._publish_circuits()
        # Let an update that is mid-flight answer first; signals are applied synchronously,
        # and any that arrive with the continue-as-new command make the server retry the
        # task, so none is lost.
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            CoordinatorInput(config=self._config, book=self._book, run=self._run + 1)
        )

    # --- input ---------------------------------------------------------------------------

    @workflow.signal(name=REPORT_SIGNAL)
    def report(self, report: WorkerReport) -> None:
        self._book.apply_report(report, workflow.now(), self._config)

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
        workflow.set_current_details(summary_markdown(self.state()))


def summary_markdown(state: CoordinationState) -> str:
    """A short Markdown summary for the Web UI's "current details" on this workflow."""
    intake = "**paused**" if state.intake.paused else "open"
    lines = [
        f"### sagaworks coordination (run {state.run}, revision {state.revision})",
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
