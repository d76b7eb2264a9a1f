"""Record one history per returns path: `python -m tests.histories.return_record`.

`make histories` (tests/histories/record.py) records these too. Each return starts from a
checkout run to COMPLETED on the same server. On the time-skipping server: a return that
expires, and one refused by the claim ledger; on a dev server (they need updates): one
refunded, one cancelled before receipt, and one whose refund failed for good until an
operator retried it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

from temporalio.client import Client

from tests.workflows.helpers import build_services, running_worker
from tests.workflows.test_returns import (
    RefusingRefunds,
    awaiting_parcel,
    completed_order,
    return_input,
    start_return,
    until,
)
from tooling.temporal import dev_server_env, time_skipping_env
from workflows.models import CancelRequest, RetryCompensationsRequest
from workflows.registry import SAGA_WORKFLOWS
from workflows.return_models import ReceiveRequest, ReturnState
from workflows.returns import ReturnWorkflow

HERE = Path(__file__).parent
PATHS = ("expired", "over_claim", "refunded", "cancelled", "refund_retry")


async def record_returns(target: Path = HERE) -> list[Path]:
    histories: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as directory:
        services = build_services(lambda name: f"sqlite:///{directory}/{name}.db")
        queue = f"record-{uuid.uuid4()}"
        async with (
            time_skipping_env() as env,
            running_worker(env.client, queue, services.activities(), workflows=SAGA_WORKFLOWS),
        ):
            histories["expired"] = await _expired(env.client, queue)
            histories["over_claim"] = await _over_claim(env.client, queue)
        async with dev_server_env() as env:
            async with running_worker(
                env.client, queue, services.activities(), workflows=SAGA_WORKFLOWS
            ):
                histories["refunded"] = await _refunded(env.client, queue)
                histories["cancelled"] = await _cancelled(env.client, queue)
            refusing = RefusingRefunds(services)
            activities = services.activities(replace={"refund_return": refusing.refund_return})
            async with running_worker(env.client, queue, activities, workflows=SAGA_WORKFLOWS):
                histories["refund_retry"] = await _refund_retry(env.client, queue, refusing)
        for engine in services.engines:
            engine.dispose()
    written = []
    for name, history in histories.items():
        path = target / f"return_{name}.json"
        path.write_text(history)
        written.append(path)
    return written


async def _history(client: Client, return_id: str) -> str:
    return (await client.get_workflow_handle(return_id).fetch_history()).to_json()


async def _expired(client: Client, queue: str) -> str:
    order_id = await completed_order(client, queue, ("SKU-1", 2))
    handle = await start_return(client, return_input(queue, order_id, ("SKU-1", 1)), queue)
    assert (await asyncio.wait_for(handle.result(), 60)).status == ReturnState.EXPIRED
    return await _history(client, handle.id)


async def _over_claim(client: Client, queue: str) -> str:
    order_id = await completed_order(client, queue, ("SKU-1", 1))
    handle = await start_return(client, return_input(queue, order_id, ("SKU-1", 2)), queue)
    assert (await asyncio.wait_for(handle.result(), 60)).status == ReturnState.FAILED
    return await _history(client, handle.id)


async def _refunded(client: Client, queue: str) -> str:
    order_id = await completed_order(client, queue, ("SKU-1", 2))
    handle = await start_return(client, return_input(queue, order_id, ("SKU-1", 1)), queue)
    await handle.execute_update(ReturnWorkflow.admission)
    await until(handle, awaiting_parcel)
    await handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("recorder"))
    assert (await asyncio.wait_for(handle.result(), 60)).status == ReturnState.REFUNDED
    return await _history(client, handle.id)


async def _cancelled(client: Client, queue: str) -> str:
    order_id = await completed_order(client, queue, ("SKU-1", 1))
    handle = await start_return(client, return_input(queue, order_id, ("SKU-1", 1)), queue)
    await until(handle, awaiting_parcel)
    await handle.execute_update(ReturnWorkflow.cancel, CancelRequest("recorded"))
    assert (await asyncio.wait_for(handle.result(), 60)).status == ReturnState.CANCELLED
    return await _history(client, handle.id)


async def _refund_retry(client: Client, queue: str, refusing: RefusingRefunds) -> str:
    order_id = await completed_order(client, queue, ("SKU-1", 1))
    handle = await start_return(client, return_input(queue, order_id, ("SKU-1", 1)), queue)
    await until(handle, awaiting_parcel)
    await handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("recorder"))
    await until(handle, lambda status: status.status == ReturnState.FAILED)
    refusing.fixed = True
    await handle.execute_update(ReturnWorkflow.retry, RetryCompensationsRequest("recorder"))
    assert (await asyncio.wait_for(handle.result(), 60)).status == ReturnState.REFUNDED
    return await _history(client, handle.id)


def main() -> None:
    code = 0
    try:
        for path in asyncio.run(record_returns()):
            print(f"recorded {path}")
    except Exception as err:
        print(f"recording failed: {err!r}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    os._exit(code)  # the Temporal core can abort at interpreter exit (sdk-python#300)


if __name__ == "__main__":
    main()
