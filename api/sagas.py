"""The Temporal side of the order endpoints: every call bounded, every refusal typed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import FailureError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import (
    OrderConflict,
    OrderNotFound,
    TemporalUnavailable,
    UnprocessableRequest,
    means_unavailable,
)
from api.schemas import OrderIn
from common.settings import Settings
from workflows.models import (
    Address,
    ApprovalDecision,
    CancelRequest,
    FailureReason,
    OrderInput,
    OrderItem,
    OrderState,
    OrderStatus,
    RetryCompensationsRequest,
    TaskQueues,
)
from workflows.order import CUSTOMER_ID, ORDER_STATUS, OrderWorkflow

T = TypeVar("T")

ORDER_ID_RE = re.compile(r"^order-[0-9a-f]{32}$")
# Fixed forever: it maps an Idempotency-Key to its order ID, across processes and deploys.
IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0c6c1e-9f0e-4a55-8d57-4a3c2f6f7c11")
REQUEST_HASH_MEMO = "request_sha256"


async def bounded(settings: Settings, call: Callable[[timedelta], Awaitable[T]]) -> T:
    """Run one Temporal call under the gateway's deadline, both on the RPC and around it."""
    seconds = settings.api_temporal_timeout_s
    try:
        return await asyncio.wait_for(call(timedelta(seconds=seconds)), seconds)
    except (TimeoutError, RPCTimeoutOrCancelledError) as err:
        raise TemporalUnavailable(
            f"no answer from Temporal or the order worker within {seconds:g}s"
        ) from err
    except RPCError as err:
        if means_unavailable(err):
            raise TemporalUnavailable(f"Temporal is unavailable: {err.message}") from err
        raise
    except RuntimeError as err:
        # A lazy client that cannot reach the server raises this on each call.
        if str(err).startswith("Failed client connect"):
            raise TemporalUnavailable("Temporal is unreachable") from err
        raise


# --- starting ----------------------------------------------------------------------------------


def order_id_for(idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return f"order-{uuid.uuid4().hex}"
    return f"order-{uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key).hex}"


def request_hash(order: OrderIn) -> str:
    canonical = json.dumps(order.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def order_input(order_id: str, order: OrderIn, settings: Settings) -> OrderInput:
    return OrderInput(
        order_id=order_id,
        customer_id=order.customer_id,
        items=[OrderItem(sku=i.sku, quantity=i.quantity) for i in order.items],
        card_token=order.payment.card_token,
        shipping_address=Address(**order.shipping_address.model_dump()),
        approval_threshold_cents=settings.approval_threshold_cents,
        approval_timeout_s=settings.approval_timeout_s,
        step_timeout_s=settings.step_timeout_s,
        notification_timeout_s=settings.notification_timeout_s,
        task_queues=TaskQueues(
            inventory=settings.inventory_task_queue,
            payments=settings.payments_task_queue,
            shipping=settings.shipping_task_queue,
            notifications=settings.notifications_task_queue,
        ),
    )


def _details_markdown(order: OrderIn) -> str:
    rows = "\n".join(f"| `{i.sku}` | {i.quantity} |" for i in order.items)
    return f"| sku | quantity |\n|---|---|\n{rows}\n\nship to {order.shipping_address.country}"


async def start_order(
    client: Client, settings: Settings, order: OrderIn, idempotency_key: str | None
) -> tuple[str, OrderState, bool]:
    """Start the saga; returns (order_id, status, replayed)."""
    order_id = order_id_for(idempotency_key)
    fingerprint = request_hash(order)
    count = sum(i.quantity for i in order.items)
    try:
        await bounded(
            settings,
            lambda timeout: client.start_workflow(
                OrderWorkflow.run,
                order_input(order_id, order, settings),
                id=order_id,
                task_queue=settings.orders_task_queue,
                # The server's ID uniqueness is the idempotency lock, even for concurrent POSTs.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={REQUEST_HASH_MEMO: fingerprint},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(CUSTOMER_ID, order.customer_id),
                        SearchAttributePair(ORDER_STATUS, OrderState.PENDING.value),
                    ]
                ),
                static_summary=f"Checkout for {order.customer_id}: {count} items",
                static_details=_details_markdown(order),
                rpc_timeout=timeout,
            ),
        )
        return order_id, OrderState.PENDING, False
    except WorkflowAlreadyStartedError:
        if idempotency_key is None:
            raise
    existing = await describe_order(client, settings, order_id)
    if await existing.memo_value(REQUEST_HASH_MEMO, None) != fingerprint:
        raise UnprocessableRequest(
            "Idempotency-Key was already used with a different request body; "
            "use a new key for a new order"
        )
    state = existing.typed_search_attributes.get(ORDER_STATUS) or OrderState.PENDING.value
    return order_id, OrderState(state), True


# --- reading -----------------------------------------------------------------------------------


async def describe_order(
    client: Client, settings: Settings, order_id: str
) -> WorkflowExecutionDescription:
    if not ORDER_ID_RE.match(order_id):
        raise OrderNotFound(order_id)
    handle = client.get_workflow_handle(order_id)
    try:
        description = await bounded(settings, lambda t: handle.describe(rpc_timeout=t))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise OrderNotFound(order_id) from err
        raise
    if description.workflow_type != "OrderWorkflow":
        raise OrderNotFound(order_id)
    return description


async def load_status(client: Client, settings: Settings, order_id: str) -> OrderStatus:
    """A completed saga's result comes from history (no worker needed); others answer a query."""
    description = await describe_order(client, settings, order_id)
    handle: WorkflowHandle[OrderWorkflow, OrderStatus] = client.get_workflow_handle_for(
        OrderWorkflow.run, order_id, run_id=description.run_id
    )
    if description.status == WorkflowExecutionStatus.COMPLETED:
        return await bounded(settings, lambda t: handle.result(rpc_timeout=t))
    return await bounded(settings, lambda t: handle.query(OrderWorkflow.status, rpc_timeout=t))


# --- changing ----------------------------------------------------------------------------------


async def cancel_order(
    client: Client, settings: Settings, order_id: str, reason: str
) -> OrderStatus:
    handle = _handle(client, order_id)
    refused: str | None = None
    try:
        return await bounded(
            settings,
            lambda t: handle.execute_update(
                OrderWorkflow.cancel, CancelRequest(reason=reason), rpc_timeout=t
            ),
        )
    except WorkflowUpdateFailedError as err:
        refused = refusal(err)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:  # unknown, or already closed: look below
            raise
    current = await load_status(client, settings, order_id)
    # A repeated cancel is harmless: answer it as the first one was answered.
    if current.failure_reason == FailureReason.CANCELLED_BY_CUSTOMER:
        return current
    raise OrderConflict(refused or f"order is already {current.status.value}")


async def decide_order(
    client: Client, settings: Settings, order_id: str, decision: ApprovalDecision
) -> OrderStatus:
    closed = "order is not awaiting approval (it is {state})"
    return await _update(client, settings, order_id, "decide", decision, closed)


async def retry_order_compensations(
    client: Client, settings: Settings, order_id: str, operator: str
) -> OrderStatus:
    request = RetryCompensationsRequest(operator=operator)
    closed = "order is {state}, not FAILED"
    return await _update(client, settings, order_id, "retry_compensations", request, closed)


async def _update(
    client: Client,
    settings: Settings,
    order_id: str,
    update: str,
    argument: Any,
    closed: str,
) -> OrderStatus:
    """Run an operator update; a refusal, or a saga already closed, answers 409."""
    handle = _handle(client, order_id)
    try:
        return await bounded(
            settings,
            lambda t: handle.execute_update(
                update, argument, result_type=OrderStatus, rpc_timeout=t
            ),
        )
    except WorkflowUpdateFailedError as err:
        raise OrderConflict(refusal(err)) from err
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    current = await load_status(client, settings, order_id)
    raise OrderConflict(closed.format(state=current.status.value))


def _handle(client: Client, order_id: str) -> WorkflowHandle[OrderWorkflow, OrderStatus]:
    if not ORDER_ID_RE.match(order_id):
        raise OrderNotFound(order_id)
    return client.get_workflow_handle_for(OrderWorkflow.run, order_id)


def refusal(err: WorkflowUpdateFailedError) -> str:
    """The validator's own words, without the exception type Temporal prefixes."""
    cause = err.cause
    return cause.message if isinstance(cause, FailureError) else str(cause)
