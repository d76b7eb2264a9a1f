"""Record one history per saga path: `python -m tests.histories.record` (or `make histories`).

The replay test (tests/workflows/test_replay.py) replays every file here against the current
workflow code, so a change that would break running sagas fails CI. Re-record only when the
change is deliberately incompatible *and* no saga recorded the old way can still be running;
otherwise guard the change with `workflow.patched` and keep the old histories
(`before_patches/` holds the ones recorded before the confirmation step existed, and
`before_patches/saga_safety/` the ones recorded before the pivot, the nonce keys and the
step limits).

Recorded here: every order path on the time-skipping server, a poison pill and a step
giving up at its retry ceiling among them; on a dev server, the operator retry of a failed
compensation (it needs an update) and a Temporal cancel ignored past the pivot (a cancel
with an activity outstanding); and the coordinator across several continue-as-new runs
(one file per run).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError

from activities.payments import PaymentActivities
from tests.histories.operator_record import record_operator_paths
from tests.histories.return_record import record_returns
from tests.support.api_client import poll
from tests.support.temporal import dev_server_env, time_skipping_env
from tests.workflows.helpers import (
    RefusingVoids,
    Services,
    build_services,
    order_input,
    running_worker,
    start_order,
    wait_for_status,
)
from workflows.coordination_models import (
    CoordinatorConfig,
    SagaSnapshot,
    ServiceSample,
    WorkerReport,
)
from workflows.coordinator import REPORT_SIGNAL, CoordinatorInput, CoordinatorWorkflow
from workflows.models import (
    CancelRequest,
    CapturePaymentInput,
    CapturePaymentResult,
    OrderInput,
    OrderStatus,
    ReserveStockInput,
    ReserveStockResult,
    RetryCompensationsRequest,
)
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
        # A quantity the database refuses: one attempt, then the roll back (INVALID_INPUT).
        "poison_pill": (order_input(queue, items=(("SKU-1", 2**63),)), None),
    }


async def _record_one(client: Client, queue: str, input: OrderInput, act: Action | None) -> str:
    handle = await start_order(client, input, queue)
    if act is not None:
        # Act once the saga waits for approval: no activity is then in flight, which the
        # time-skipping server needs for a clean cancel (sdk-java#2391).
        await wait_for_status(handle, lambda status: status.status == "AWAITING_APPROVAL")
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
            path = target / "order_step_exhausted.json"
            path.write_text(await _record_step_exhausted(env.client, services))
            written.append(path)
        async with dev_server_env() as env:
            path = target / "order_operator_retry.json"
            path.write_text(await _record_operator_retry(env.client, services))
            written.append(path)
            path = target / "order_cancel_past_pivot.json"
            path.write_text(await _record_cancel_past_pivot(env.client, services))
            written.append(path)
            for run, history in enumerate(await _record_coordinator(env.client)):
                path = target / f"coordinator_run{run}.json"
                path.write_text(history)
                written.append(path)
        for engine in services.engines:
            engine.dispose()
    return written + await record_returns(target) + await record_operator_paths(target)


async def _record_operator_retry(client: Client, services: Services) -> str:
    """A void refused for good, so the order waits FAILED; then an operator retries it."""
    gateway = RefusingVoids(services)
    queue = f"record-{uuid.uuid4()}"
    activities = services.activities(replace={"void_payment": gateway.void_payment})
    async with running_worker(client, queue, activities):
        handle = await start_order(client, order_input(queue, country="XX"), queue)
        await wait_for_status(handle, lambda status: status.status == "FAILED")
        gateway.fixed = True
        await handle.execute_update(
            OrderWorkflow.retry_compensations, RetryCompensationsRequest("recorder")
        )
        await asyncio.wait_for(handle.result(), 60)
        return (await handle.fetch_history()).to_json()


async def _record_step_exhausted(client: Client, services: Services) -> str:
    """Stock that never answers: the reserve step gives up at its ceiling, the saga rolls back."""

    @activity.defn(name="reserve_stock")
    def unavailable(input: ReserveStockInput) -> ReserveStockResult:
        raise ApplicationError("inventory unavailable", type="Unavailable")

    queue = f"record-{uuid.uuid4()}"
    activities = services.activities(replace={"reserve_stock": unavailable})
    async with running_worker(client, queue, activities):
        handle = await start_order(client, order_input(queue, step_max_attempts=3), queue)
        await asyncio.wait_for(handle.result(), 120)
        return (await handle.fetch_history()).to_json()


async def _record_cancel_past_pivot(client: Client, services: Services) -> str:
    """A Temporal cancel while capture runs: ignored, and the order completes."""
    started, release = threading.Event(), threading.Event()
    payments = PaymentActivities(services.payments)

    @activity.defn(name="capture_payment")
    def held_capture(input: CapturePaymentInput) -> CapturePaymentResult:
        started.set()
        release.wait(60)
        return payments.capture_payment(input)

    queue = f"record-{uuid.uuid4()}"
    activities = services.activities(replace={"capture_payment": held_capture})
    try:
        async with running_worker(client, queue, activities):
            handle = await start_order(client, order_input(queue), queue)
            await asyncio.to_thread(started.wait, 60)
            await handle.cancel()
            await wait_for_status(handle, lambda status: status.cancel_ignored)
            release.set()
            await asyncio.wait_for(handle.result(), 60)
            return (await handle.fetch_history()).to_json()
    finally:
        release.set()


async def _record_coordinator(client: Client) -> list[str]:
    """Reports into a coordinator with a short history limit: several runs, one per file."""
    queue = f"record-{uuid.uuid4()}"
    config = CoordinatorConfig(services=["inventory", "payments"], max_history_events=60)
    async with running_worker(client, queue, workflows=[CoordinatorWorkflow]):
        handle = await client.start_workflow(
            CoordinatorWorkflow.run,
            CoordinatorInput(config),
            id=f"coordinator-{uuid.uuid4()}",
            task_queue=queue,
        )
        for i in range(60):
            at = datetime.now(UTC)
            report = WorkerReport(
                f"worker-{i % 3}",
                services=[ServiceSample("payments", calls=2, errors=i % 2)],
                sagas=[SagaSnapshot(f"o-{i}", "COMPLETED", None, at, terminal=True)],
            )
            await handle.signal(REPORT_SIGNAL, report)
            await asyncio.sleep(0.05)
        await poll(lambda: handle.query(CoordinatorWorkflow.state), lambda s: s.reports >= 60)
        histories = []
        run_id = handle.first_execution_run_id
        while run_id:
            run = client.get_workflow_handle(handle.id, run_id=run_id)
            history = await run.fetch_history()
            last = history.events[-1]
            if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                # The run still going: end it so its history is complete too.
                await run.terminate("recorded")
                history = await run.fetch_history()
                run_id = None
            else:
                attributes = last.workflow_execution_continued_as_new_event_attributes
                run_id = attributes.new_execution_run_id
            histories.append(history.to_json())
        return histories


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
