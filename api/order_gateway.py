"""The order gateway: the Temporal side of the order endpoints (start, read, change).

Every call goes through `bounded` (api/temporal_calls.py): a worker that does not answer
is a 503, never a hang; a validator's refusal is a 409 in its own words.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

from temporalio.client import (
    Client,
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
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import (
    Forbidden,
    OrderConflict,
    OrderNotFound,
    UnprocessableRequest,
)
from api.idempotency import REQUEST_HASH_MEMO, KeyedRequest
from api.principals import Principal
from api.schemas import OrderIn
from api.temporal_calls import bounded, describe, keyed_id, refusal
from common.metrics import SAGAS_STARTED
from common.services import BUSINESS_NAMES
from common.settings import Settings
from common.tracing import current_trace_id
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
from workflows.order import OrderWorkflow
from workflows.search_attributes import CUSTOMER_ID, ORDER_STATUS
from workflows.steps import escape_markdown

ORDER_ID_RE = re.compile(r"^order-[0-9a-f]{32}$")
# The trace of the POST that started the saga, so GET /orders/{id} can point at it.
TRACE_ID_MEMO = "trace_id"


# --- starting ----------------------------------------------------------------------------------


def order_id_for(secret: bytes, scope: str, idempotency_key: str | None) -> str:
    """The order an Idempotency-Key names, for one principal's scope.

    Keyed (HMAC with the gateway's secret), so nobody can compute another caller's order
    ID from a key, and scoped, so two callers using the same key get two orders.
    """
    message = None if idempotency_key is None else f"{scope}\0{idempotency_key}"
    return keyed_id("order", secret, message)


def customer_for(principal: Principal, order: OrderIn) -> str:
    """The customer an order is placed for: a customer's own; an operator names one."""
    if principal.customer_id is not None:
        if order.customer_id not in (None, principal.customer_id):
            raise Forbidden("a customer places orders only for themselves")
        return principal.customer_id
    if order.customer_id is None:
        raise UnprocessableRequest("an operator placing an order must name its customer_id")
    return order.customer_id


def request_hash(order: OrderIn, customer_id: str) -> str:
    body = {**order.model_dump(mode="json"), "customer_id": customer_id}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def order_input(order_id: str, order: OrderIn, customer_id: str, settings: Settings) -> OrderInput:
    return OrderInput(
        order_id=order_id,
        customer_id=customer_id,
        items=[OrderItem(sku=i.sku, quantity=i.quantity) for i in order.items],
        card_token=order.payment.card_token,
        shipping_address=Address(**order.shipping_address.model_dump()),
        approval_threshold_cents=settings.approval_threshold_cents,
        approval_timeout_s=settings.approval_timeout_s,
        step_timeout_s=settings.step_timeout_s,
        notification_timeout_s=settings.notification_timeout_s,
        task_queues=task_queues(settings),
        step_max_attempts=settings.step_max_attempts,
        step_heartbeat_timeout_s=settings.step_heartbeat_timeout_s,
        max_held_orders=settings.max_held_orders_per_customer,
        max_held_cents=settings.max_held_cents_per_customer,
        # Part of every step key: a later order reusing this ID shares none
        # (ARCHITECTURE.md, "Saga rules", rule 2).
        nonce=secrets.token_hex(16),
    )


def task_queues(settings: Settings) -> TaskQueues:
    """The sagas' map of service task queues, one entry per business service."""
    return TaskQueues(**{name: settings.task_queue(name) for name in BUSINESS_NAMES})


def _details_markdown(order: OrderIn) -> str:
    # Customer text rendered as Markdown in the Web UI: escaped, so it stays text.
    rows = "\n".join(f"| {escape_markdown(i.sku)} | {i.quantity} |" for i in order.items)
    country = escape_markdown(order.shipping_address.country)
    return f"| sku | quantity |\n|---|---|\n{rows}\n\nship to {country}"


def _api_link(settings: Settings, order_id: str) -> str:
    # Back from the Web UI to the order's live status (an operator key answers it).
    return f"[this order in the API]({settings.public_api_url.rstrip('/')}/orders/{order_id})"


async def start_order(
    client: Client,
    settings: Settings,
    order: OrderIn,
    customer_id: str,
    order_id: str,
    keyed: KeyedRequest | None,
) -> tuple[str, OrderState, bool]:
    """Start the saga, or answer a repeat of its Idempotency-Key without starting anything.

    Args:
        client: The Temporal client.
        settings: The gateway's settings.
        order: The request body.
        customer_id: Whom the order is for (`customer_for`).
        order_id: The saga ID (`order_id_for`).
        keyed: The request's Idempotency-Key and its earlier start, or None without one.

    Returns:
        (order_id, status, replayed).

    Raises:
        UnprocessableRequest: The key was used with another body (422).
        SagaForgotten: The key's order is no longer in Temporal (409).
    """
    fingerprint = request_hash(order, customer_id)
    if keyed is not None and keyed.earlier is not None:
        # Within the key's TTL a repeat is only ever answered, never started again: even
        # when retention deleted the first order and the ID would be free to start.
        return order_id, await _replayed(client, settings, order_id, fingerprint, keyed), True
    count = sum(i.quantity for i in order.items)
    try:
        await bounded(
            settings,
            lambda timeout: client.start_workflow(
                OrderWorkflow.run,
                order_input(order_id, order, customer_id, settings),
                id=order_id,
                task_queue=settings.orders_task_queue,
                # The server's ID uniqueness is the idempotency lock, even for concurrent POSTs.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={REQUEST_HASH_MEMO: fingerprint, TRACE_ID_MEMO: current_trace_id()},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(CUSTOMER_ID, customer_id),
                        SearchAttributePair(ORDER_STATUS, OrderState.PENDING.value),
                    ]
                ),
                static_summary=f"Checkout for {escape_markdown(customer_id)}: {count} items",
                static_details=f"{_details_markdown(order)}\n\n{_api_link(settings, order_id)}",
                rpc_timeout=timeout,
            ),
        )
    except WorkflowAlreadyStartedError:
        if keyed is None:
            raise
        # A concurrent POST with the same key started it, or it predates the ledger.
        state = await _replayed(client, settings, order_id, fingerprint, keyed)
        await keyed.record(fingerprint)
        return order_id, state, True
    SAGAS_STARTED.labels("OrderWorkflow").inc()
    if keyed is not None:
        # Only once started: a start that failed leaves the key free for a retry.
        await keyed.record(fingerprint)
    return order_id, OrderState.PENDING, False


async def _replayed(
    client: Client, settings: Settings, order_id: str, fingerprint: str, keyed: KeyedRequest
) -> OrderState:
    """The state of the order an earlier request with the same key and body started."""
    existing = await keyed.replayed(
        lambda: describe_order(client, settings, order_id), fingerprint, "order"
    )
    state = existing.typed_search_attributes.get(ORDER_STATUS) or OrderState.PENDING.value
    return OrderState(state)


# --- reading -----------------------------------------------------------------------------------


async def describe_order(
    client: Client, settings: Settings, order_id: str, principal: Principal | None = None
) -> WorkflowExecutionDescription:
    """The order's execution; `OrderNotFound` when unknown or, for a customer, not theirs."""
    if not ORDER_ID_RE.match(order_id):
        raise OrderNotFound(order_id)
    description = await describe(client, settings, order_id)
    if description is None or description.workflow_type != "OrderWorkflow":
        raise OrderNotFound(order_id)
    if principal is not None and not owns(principal, description):
        # Exactly the answer for an unknown order: a customer learns nothing of others'.
        raise OrderNotFound(order_id)
    return description


async def order_exists(client: Client, settings: Settings, order_id: str) -> bool:
    try:
        await describe_order(client, settings, order_id)
    except OrderNotFound:
        return False
    return True


def owns(principal: Principal, description: WorkflowExecutionDescription) -> bool:
    if principal.customer_id is None:
        return True  # operators see every order
    return description.typed_search_attributes.get(CUSTOMER_ID) == principal.customer_id


async def load_status(
    client: Client, settings: Settings, order_id: str, principal: Principal | None = None
) -> OrderStatus:
    status, _ = await load_order(client, settings, order_id, principal)
    return status


async def load_order(
    client: Client, settings: Settings, order_id: str, principal: Principal | None = None
) -> tuple[OrderStatus, str | None]:
    """The status, and the trace ID recorded at the start (None if tracing was off then).

    A completed saga's result comes from history (no worker needed); others answer a query.
    """
    description = await describe_order(client, settings, order_id, principal)
    trace_id: str | None = await description.memo_value(TRACE_ID_MEMO, None, type_hint=str)
    handle: WorkflowHandle[OrderWorkflow, OrderStatus] = client.get_workflow_handle_for(
        OrderWorkflow.run, order_id, run_id=description.run_id
    )
    if description.status == WorkflowExecutionStatus.COMPLETED:
        return await bounded(settings, lambda t: handle.result(rpc_timeout=t)), trace_id
    status = await bounded(settings, lambda t: handle.query(OrderWorkflow.status, rpc_timeout=t))
    return status, trace_id


# --- changing ----------------------------------------------------------------------------------


async def cancel_order(
    client: Client, settings: Settings, order_id: str, reason: str, principal: Principal
) -> OrderStatus:
    await describe_order(client, settings, order_id, principal)  # 404 when not theirs
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
    current = await load_status(client, settings, order_id, principal)
    # A repeated cancel is harmless: answer it as the first one was answered.
    if current.failure_reason == FailureReason.CANCELLED_BY_CUSTOMER:
        return current
    raise OrderConflict(refused or f"order is already {current.status.value}")


async def decide_order(
    client: Client, settings: Settings, order_id: str, decision: ApprovalDecision
) -> OrderStatus:
    closed = "order is not awaiting approval (it is {state})"
    return await _update(client, settings, order_id, "decide", decision, closed)


async def retry_order(
    client: Client,
    settings: Settings,
    order_id: str,
    operator: str,
    *,
    compensations_only: bool = False,
) -> OrderStatus:
    """Run again what of the order failed for good (a 409 when nothing did).

    Args:
        client: The Temporal client.
        settings: The gateway's settings.
        order_id: The order.
        operator: Who asks, on record in the saga.
        compensations_only: Only failed compensations (`/retry-compensations`); else also
            a step past the pivot (`/retry`).

    Returns:
        The order's status as the retry begins.
    """
    request = RetryCompensationsRequest(operator=operator)
    update = "retry_compensations" if compensations_only else "retry"
    closed = "order is {state}, not FAILED"
    return await _update(client, settings, order_id, update, request, closed)


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
