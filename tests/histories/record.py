"""Record one history per saga path: `python -m tests.histories.record` (or `make histories`).

The replay test (tests/workflows/test_replay.py) replays every file here against the current
workflow code, so a change that would break running sagas fails CI. Re-record only when the
change is deliberately incompatible *and* no saga recorded the old way can still be running;
otherwise guard the change with `workflow.patched` and keep the old histories.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client, WorkflowHandle

from tests.support.temporal import time_skipping_env
from tests.workflows.helpers import build_services, order_input, running_worker, start_order
from workflows.models import CancelRequest, OrderInput, OrderStatus
from workflows.order import OrderWorkflow

HERE = Path(__file__).parent
HIGH_VALUE = (("SKU-3", 1),)

Handle = WorkflowHandle[OrderWorkflow, OrderStatus]
Action = Callable[[Handle], Awaitable[None]]


async def _approve(handle: Handle) -> None:
    await handle.signal(OrderWorkflow.approve)


async def _reject(handle: Handle) -> None:
    await handle.signal(OrderWorkflow.reject)


async def _cancel(handle: Handle) -> None:
    await handle.signal(OrderWorkflow.request_cancel, CancelRequest("recorded"))


def _paths(queue: str) -> dict[str, tuple[OrderInput, Action | None]]:
    return {
        "happy_path": (order_input(queue), None),
        "out_of_stock": (order_input(queue, items=(("SKU-4", 6),)), None),
        "payment_declined": (order_input(queue, card="tok_decline"), None),
        "undeliverable": (order_input(queue, country="XX"), None),
        "flaky_card": (order_input(queue, card="tok_flaky"), None),
        "approved": (order_input(queue, items=HIGH_VALUE), _approve),
        "rejected": (order_input(queue, items=HIGH_VALUE), _reject),
        "cancelled_by_customer": (order_input(queue, items=HIGH_VALUE), _cancel),
        "approval_timeout": (order_input(queue, items=HIGH_VALUE, approval_timeout_s=600), None),
    }


async def _record_one(client: Client, queue: str, input: OrderInput, act: Action | None) -> str:
    handle = await start_order(client, input, queue)
    if act is not None:
        # Signals sent before the wait are kept by the workflow; the history shows the path.
        await act(handle)
    await asyncio.wait_for(handle.result(), 120)
    history = await handle.fetch_history()
    return history.to_json()


async def record(target: Path = HERE) -> list[Path]:
    written = []
    with tempfile.TemporaryDirectory() as directory:
        services = build_services(lambda name: f"sqlite:///{directory}/{name}.db")
        async with time_skipping_env() as env:
            queue = f"record-{uuid.uuid4()}"
            async with running_worker(env.client, queue, services.activities()):
                for name, (input, act) in _paths(queue).items():
                    path = target / f"order_{name}.json"
                    path.write_text(await _record_one(env.client, queue, input, act))
                    written.append(path)
        for engine in services.engines:
            engine.dispose()
    return written


def main() -> None:
    code = 0
    try:
        for path in asyncio.run(record()):
            print(f"recorded {path}")
    except Exception as err:
        print(f"recording failed: {err}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    os._exit(code)  # the Temporal core can abort at interpreter exit (sdk-python#300)


if __name__ == "__main__":
    main()
