"""`python -m bench.baseline_worker {workflows|activities} --task-queue Q`: a baseline worker.

Two processes, like the real system's split between the orders worker and the service
workers, and run by the same runner (signals, graceful drain, os._exit), so the baseline
differs from the real system in the work done, not in how its workers are hosted.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from bench.baseline import BaselineWorkflow, noop_step
from common.settings import Settings
from workers.runner import WorkerFactory, main

ROLES = ("workflows", "activities")


def factory(role: str, task_queue: str) -> WorkerFactory:
    def build(client: Client, settings: Settings) -> Worker:
        if role == "workflows":
            # Worker defaults, as in workers/orders.py.
            return Worker(client, task_queue=task_queue, workflows=[BaselineWorkflow])
        # The same bulkhead and executor as workers/service.py gives each real service.
        return Worker(
            client,
            task_queue=task_queue,
            activities=[noop_step],
            activity_executor=ThreadPoolExecutor(max_workers=settings.max_concurrent_activities),
            max_concurrent_activities=settings.max_concurrent_activities,
            graceful_shutdown_timeout=timedelta(seconds=10),
        )

    return build


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    main(f"baseline-{args.role}", factory(args.role, args.task_queue))
