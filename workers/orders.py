"""`python -m workers.orders`: runs the saga workflows on the `orders` task queue."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from common.settings import Settings
from workers.runner import main
from workflows.order import OrderWorkflow


def build(client: Client, settings: Settings) -> Worker:
    return Worker(client, task_queue=settings.orders_task_queue, workflows=[OrderWorkflow])


if __name__ == "__main__":
    main("orders", build)
