"""`python -m workers.orders`: runs the sagas on the `orders` queue and the coordinator."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.visibility import CoordinationActivities
from common.metrics import SAGA_FINISHES
from common.settings import Settings
from workers.agent import CoordinationAgent
from workers.identity import report_key
from workers.reporting import ReportBuffer
from workers.runner import Runtime, main
from workflows import lifecycle
from workflows.coordination_shard import CoordinatorShardWorkflow
from workflows.coordinator import CoordinatorWorkflow
from workflows.faults import FaultConfigWorkflow
from workflows.registry import SAGA_WORKFLOWS

# The sandbox must share the process's copy of the lifecycle hook, or the sink installed
# below would be invisible to workflow code.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(lifecycle.__name__)
)


def build(client: Client, settings: Settings) -> Runtime:
    worker = Worker(
        client,
        task_queue=settings.orders_task_queue,
        # Every saga (workflows/registry.py) and the fault-configuration helper.
        workflows=[*SAGA_WORKFLOWS, FaultConfigWorkflow],
        workflow_runner=SANDBOX,
        max_cached_workflows=settings.max_cached_workflows,
    )
    if not settings.coordination_enabled:
        lifecycle.install(SAGA_FINISHES.observe)  # no reports, but still the metrics
        return Runtime(worker)
    coordinator = coordination_worker(client, settings)
    buffer = ReportBuffer(report_key("orders", client))
    lifecycle.install(buffer.saga_changed)
    # The agent also starts the coordinator on its first (announcing) report.
    return Runtime(worker, CoordinationAgent(client, settings, buffer), [coordinator])


def coordination_worker(client: Client, settings: Settings) -> Worker:
    """The coordinator, its shards, and the activities they run (visibility, starting)."""
    activities = CoordinationActivities(client)
    return Worker(
        client,
        task_queue=settings.coordinator_task_queue,
        workflows=[CoordinatorWorkflow, CoordinatorShardWorkflow],
        activities=[activities.reconcile_sagas, activities.start_coordinator],
        # The root and every shard stay cached: each takes a task every second or so.
        max_cached_workflows=10 + settings.coordinator_shards,
    )


if __name__ == "__main__":
    main("orders", build)
