"""FaultConfigWorkflow: carry an operator's fault setting to the service that owns it.

The API may not write a service's database (each service owns its own: ARCHITECTURE.md,
Processes and data flow), so it
asks Temporal to run `configure_fault` on that service's task queue. The schedule-to-close
timeout makes a request to a service that is down fail within the API's bound instead of
being applied later, when nobody expects it any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.models import ConfigureFaultInput, FaultState


@dataclass(frozen=True)
class FaultChange:
    change: ConfigureFaultInput
    task_queue: str
    timeout_s: float


@workflow.defn
class FaultConfigWorkflow:
    @workflow.run
    async def run(self, input: FaultChange) -> FaultState:
        return await workflow.execute_activity(
            "configure_fault",
            input.change,
            result_type=FaultState,
            task_queue=input.task_queue,
            schedule_to_close_timeout=timedelta(seconds=input.timeout_s),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=1)),
        )
