"""The benchmark's floor: a bare workflow with as many no-op activities as a happy checkout.

It measures what Temporal itself costs on this machine (task round trips, history writes,
worker polling), so the order figures can be read as a ratio against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

# The happy path runs these four activities in this order; the baseline mirrors the count
# and the sequencing, nothing else (no database, no search attributes, no queries).
STEPS = ("reserve_stock", "authorize_payment", "create_shipment", "capture_payment")


@dataclass(frozen=True)
class BaselineInput:
    activity_task_queue: str
    steps: tuple[str, ...] = STEPS


@dataclass(frozen=True)
class NoopStepInput:
    step: str


@dataclass(frozen=True)
class NoopStepResult:
    step: str


@dataclass(frozen=True)
class BaselineResult:
    steps_run: int


# Sync on purpose, like the services' activities: it runs in the worker's thread pool, so
# the baseline pays the same executor hand-off the real activities do.
@activity.defn(name="noop_step")
def noop_step(input: NoopStepInput) -> NoopStepResult:
    return NoopStepResult(step=input.step)


@workflow.defn
class BaselineWorkflow:
    @workflow.run
    async def run(self, input: BaselineInput) -> BaselineResult:
        for step in input.steps:
            await workflow.execute_activity(
                noop_step,
                NoopStepInput(step),
                task_queue=input.activity_task_queue,
                start_to_close_timeout=timedelta(seconds=30),
            )
        return BaselineResult(steps_run=len(input.steps))
