"""Driving a batch of sagas at a fixed concurrency and timing each one end to end."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from temporalio.client import Client

from bench.baseline import BaselineInput, BaselineWorkflow
from workflows.models import OrderState
from workflows.order import OrderWorkflow

# The happy path (README, Test fixtures): SKU-1 has 10,000 in stock and costs 1,800 cents,
# below the approval threshold, so no order waits for an operator.
ORDER_SKU = "SKU-1"
ORDER_BODY = {
    "customer_id": "bench",
    "items": [{"sku": ORDER_SKU, "quantity": 1}],
    "payment": {"card_token": "tok_visa"},
    "shipping_address": {
        "name": "Bench",
        "line1": "Load Street 1",
        "city": "Berlin",
        "postal_code": "10115",
        "country": "DE",
    },
}


class OrderWatcher(Protocol):
    """Told of each order's ID when it is placed and when the bench sees it end."""

    def placed(self, order_id: str) -> None: ...

    def finished(self, order_id: str) -> None: ...


class SagaFailed(Exception):
    """One saga did not reach the expected end; the message is its failure class."""


@dataclass
class Batch:
    latencies_s: list[float] = field(default_factory=list)  # completed sagas only
    failures: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_s)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def absorb(self, other: Batch) -> None:
        """Pool another round of the same kind: latencies, failures and busy time."""
        self.latencies_s.extend(other.latencies_s)
        self.failures.update(other.failures)
        self.wall_s += other.wall_s


async def run_batch(
    count: int, concurrency: int, one: Callable[[], Awaitable[None]], timeout_s: float
) -> Batch:
    """Keep `concurrency` sagas in flight until `count` have finished (closed-loop load)."""
    batch = Batch()
    tickets = iter(range(count))

    async def lane() -> None:
        # Lanes share one iterator, so each takes the next ticket as soon as it is free.
        for _ in tickets:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    await one()
            except Exception as err:  # counted and reported, never allowed to stop the run
                batch.failures[_failure_class(err)] += 1
            else:
                batch.latencies_s.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    batch.wall_s = time.perf_counter() - started
    return batch


def _failure_class(err: Exception) -> str:
    if isinstance(err, SagaFailed):
        return str(err)
    if isinstance(err, TimeoutError):
        return "timed out"
    # The type, not the message: messages carry IDs and would never aggregate.
    return type(err).__name__


def order_saga(
    http: httpx.AsyncClient, client: Client, watcher: OrderWatcher | None = None
) -> Callable[[], Awaitable[None]]:
    """One order through the HTTP API, awaited to its end through Temporal, not by polling."""

    async def one() -> None:
        response = await http.post("/orders", json=ORDER_BODY)
        if response.status_code != 202:
            raise SagaFailed(f"POST /orders answered {response.status_code}")
        order_id = response.json()["order_id"]
        if watcher is not None:
            watcher.placed(order_id)
        result = await client.get_workflow_handle_for(OrderWorkflow.run, order_id).result()
        if watcher is not None:
            # Before the status check: a failed order has ended too.
            watcher.finished(order_id)
        if result.status != OrderState.COMPLETED:
            reason = f" ({result.failure_reason})" if result.failure_reason else ""
            raise SagaFailed(f"order ended {result.status}{reason}")

    return one


def baseline_saga(
    client: Client,
    workflow_queue: str,
    activity_queue: str,
    steps: tuple[str, ...],
    *,
    patches: int = 0,
    upserts: int = 0,
) -> Callable[[], Awaitable[None]]:
    async def one() -> None:
        result = await client.execute_workflow(
            BaselineWorkflow.run,
            BaselineInput(activity_queue, steps, patches=patches, upserts=upserts),
            id=f"bench-baseline-{uuid.uuid4()}",
            task_queue=workflow_queue,
        )
        if result.steps_run != len(steps):
            raise SagaFailed(f"baseline ran {result.steps_run} steps")

    return one
