"""`python -m workers.orders`: runs the sagas and the coordinator on the `orders` queue."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from common.settings import Settings
from workers.agent import CoordinationAgent
from workers.reporting import ReportBuffer
from workers.runner import Runtime, main
from workflows import lifecycle
from workflows.coordinator import CoordinatorWorkflow
from workflows.faults import FaultConfigWorkflow
from workflows.order import OrderWorkflow

# The sandbox must share the process's copy of the lifecycle hook, or the sink installed
# below would be invisible to workflow code.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(lifecycle.__name__)
)


def build(client: Client, settings: Settings) -> Runtime:
    worker = Worker(
        client,
        task_queue=settings.orders_task_queue,
        workflows=[OrderWorkflow, FaultConfigWorkflow],
        workflow_runner=SANDBOX,
        max_cached_workflows=settings.max_cached_workflows,
    )
    if not settings.coordination_enabled:
        return Runtime(worker)
    coordinator = Worker(
        client,
        task_queue=settings.coordinator_task_queue,
        workflows=[CoordinatorWorkflow],
        max_cached_workflows=10,
    )
    buffer = ReportBuffer(f"orders {client.identity}")
    lifecycle.install(buffer.saga_changed)
    # The agent also starts the coordinator on its first (announcing) report.
    return Runtime(worker, CoordinationAgent(client, settings, buffer), [coordinator])


if __name__ == "__main__":
    main("orders", build)
