"""Record the paths where a saga waits for a person (issue 17), for the replay test.

`python -m tests.histories.operator_record` writes, next to the other histories:

- `order_capture_failed_retry`: past the pivot the capture fails for good; the order waits
  FAILED until an operator's `retry` runs it again, and completes;
- `order_cancel_while_failed`: a void fails for good, a Temporal cancel arrives while the
  order waits FAILED (recorded, ignored), and the operator's retry compensates it;
- `order_early_signal`: an `approve` signal sent with the start decides nothing; the hold
  times out (time-skipping server);
- `order_hold_limit`: the hold ledger refuses the hold (value cap), and the order rolls
  back with HOLD_LIMIT_REACHED;
- `return_cancel_while_failed`: a return whose label cancel failed for good survives a
  Temporal cancel and expires after the operator's retry.

`--before DIR` records the same paths as the code *before* those changes ran them (the
capture rolled back, the cancel closed the order, the early signal approved it), from a
checkout of that code, into `tests/histories/before_patches/operator_paths/`: the histories
that fail to replay if a patch guard is ever removed. They are never re-recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from tests.support.api_client import poll
from tests.support.temporal import dev_server_env, time_skipping_env
from tests.workflows.helpers import (
    RefusingCaptures,
    RefusingLabelCancels,
    RefusingVoids,
    Services,
    build_services,
    order_input,
    running_worker,
    start_order,
    wait_for_status,
)
from workflows.models import OrderItem, RetryCompensationsRequest
from workflows.order import OrderWorkflow
from workflows.registry import SAGA_WORKFLOWS
from workflows.return_models import ReturnInput
from workflows.returns import ReturnWorkflow

HERE = Path(__file__).parent
HIGH_VALUE = (("SKU-3", 1),)
Recorder = Callable[[Client, Services, bool], Awaitable[str]]


async def _history(handle: WorkflowHandle[Any, Any]) -> str:
    # A cancelled saga ends in this error; its history is what counts.
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 60)
    return (await handle.fetch_history()).to_json()


async def _retry(handle: WorkflowHandle[Any, Any]) -> None:
    await handle.execute_update("retry", RetryCompensationsRequest("recorder"))


async def capture_failed_retry(client: Client, services: Services, before: bool) -> str:
    gateway = RefusingCaptures(services)
    queue = f"record-{uuid.uuid4()}"
    activities = services.activities(replace={"capture_payment": gateway.capture_payment})
    async with running_worker(client, queue, activities):
        handle = await start_order(client, order_input(queue), queue)
        await wait_for_status(handle, lambda status: status.status == "FAILED")
        if not before:
            gateway.fixed = True
            await _retry(handle)
        return await _history(handle)


async def cancel_while_failed(client: Client, services: Services, before: bool) -> str:
    gateway = RefusingVoids(services)
    queue = f"record-{uuid.uuid4()}"
    activities = services.activities(replace={"void_payment": gateway.void_payment})
    async with running_worker(client, queue, activities):
        handle = await start_order(client, order_input(queue, country="XX"), queue)
        await wait_for_status(handle, lambda status: status.status == "FAILED")
        await handle.cancel()
        if not before:
            await wait_for_status(handle, lambda status: status.cancel_ignored)
            gateway.fixed = True
            await _retry(handle)
        return await _history(handle)


async def early_signal(client: Client, services: Services, before: bool) -> str:
    queue = f"record-{uuid.uuid4()}"
    input = order_input(queue, items=HIGH_VALUE, approval_timeout_s=600)
    async with running_worker(client, queue, services.activities()):
        handle = await client.start_workflow(
            OrderWorkflow.run, input, id=input.order_id, task_queue=queue, start_signal="approve"
        )
        return await _history(handle)


async def hold_limit(client: Client, services: Services, before: bool) -> str:
    queue = f"record-{uuid.uuid4()}"
    input = order_input(queue, items=HIGH_VALUE)
    input = dataclasses.replace(input, max_held_cents=1)
    async with running_worker(client, queue, services.activities()):
        return await _history(await start_order(client, input, queue))


async def return_cancel_while_failed(client: Client, services: Services, before: bool) -> str:
    carrier = RefusingLabelCancels(services)
    queue = f"record-{uuid.uuid4()}"
    activities = services.activities(replace={"cancel_return_label": carrier.cancel_return_label})
    async with running_worker(client, queue, activities, workflows=SAGA_WORKFLOWS):
        order = await start_order(client, order_input(queue), queue)
        await wait_for_status(order, lambda status: status.status == "COMPLETED")
        input = ReturnInput(
            return_id=f"return-{uuid.uuid4().hex}",
            order_id=order.id,
            customer_id="c-1",
            items=[OrderItem("SKU-1", 1)],
            reason="recorded",
            nonce=uuid.uuid4().hex,
            task_queues=order_input(queue).task_queues,
            parcel_timeout_s=1,
        )
        handle = await client.start_workflow(
            ReturnWorkflow.run, input, id=input.return_id, task_queue=queue
        )
        await _until_return(handle, lambda status: status.status == "FAILED")
        await handle.cancel()
        if not before:
            await _until_return(handle, lambda status: status.cancel_ignored)
            carrier.fixed = True
            await _retry(handle)
        return await _history(handle)


async def _until_return(handle: WorkflowHandle[Any, Any], condition: Callable[[Any], bool]) -> None:
    await poll(lambda: handle.query(ReturnWorkflow.status), condition, within=30)


ON_DEV_SERVER: dict[str, Recorder] = {
    "order_capture_failed_retry": capture_failed_retry,
    "order_cancel_while_failed": cancel_while_failed,
    "order_hold_limit": hold_limit,
    "return_cancel_while_failed": return_cancel_while_failed,
}
ON_TIME_SKIPPING: dict[str, Recorder] = {"order_early_signal": early_signal}
PATHS = [*ON_DEV_SERVER, *ON_TIME_SKIPPING]
# The old code had no hold ledger: its held orders are in the older histories already.
NOT_BEFORE = {"order_hold_limit"}


async def record_operator_paths(target: Path = HERE, *, before: bool = False) -> list[Path]:
    written = []
    with tempfile.TemporaryDirectory() as directory:
        services = build_services(lambda name: f"sqlite:///{directory}/{name}.db")
        for environment, recorders in (
            (dev_server_env, ON_DEV_SERVER),
            (time_skipping_env, ON_TIME_SKIPPING),
        ):
            async with environment() as env:
                for name, recorder in recorders.items():
                    if before and name in NOT_BEFORE:
                        continue
                    path = target / f"{name}.json"
                    path.write_text(await recorder(env.client, services, before))
                    written.append(path)
        for engine in services.engines:
            engine.dispose()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="record the old code's paths into DIR")
    args = parser.parse_args()
    target = args.before or HERE
    target.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(record_operator_paths(target, before=args.before is not None)):
        print(path)


if __name__ == "__main__":
    main()
