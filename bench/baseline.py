"""The benchmark's floor: a bare workflow with as many no-op activities as a happy checkout.

It measures what Temporal itself costs on this machine (task round trips, history writes,
worker polling), so the order figures can be read as a ratio against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey

# A keyword the tuned server registers (temporal-dev/start.sh); the levers register it too.
BENCH_STATUS = SearchAttributeKey.for_keyword("OrderStatus")


@dataclass(frozen=True)
class BaselineInput:
    activity_task_queue: str
    # One no-op activity per name, in sequence. The bench passes the activities a happy
    # checkout of the current code ran (bench/run.py reads them from a warm-up order's
    # history), so the count and the sequencing match it, nothing else: no database, no
    # search attributes, no queries.
    steps: tuple[str, ...]
    # Only for `python -m bench.levers --commands`, which prices what a checkout adds:
    # `workflow.patched` checks (each a marker and a TemporalChangeVersion upsert) and
    # search-attribute upserts (each an event and a visibility write). 0 in `make bench`.
    patches: int = 0
    upserts: int = 0


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
        for i in range(input.patches):
            workflow.patched(f"bench-patch-{i}")
        for i in range(input.upserts):
            workflow.upsert_search_attributes([BENCH_STATUS.value_set(f"step-{i}")])
        for step in input.steps:
            await workflow.execute_activity(
                noop_step,
                NoopStepInput(step),
                task_queue=input.activity_task_queue,
                start_to_close_timeout=timedelta(seconds=30),
            )
        return BaselineResult(steps_run=len(input.steps))
