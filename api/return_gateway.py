"""The return gateway: the Temporal side of the returns endpoints.

A return is started for a COMPLETED order of the caller's (or any, for an operator) within
the return window. The answer waits for the saga's claim (the `admission` update): the
ledger in inventory decides whether the quantities are still returnable, so two returns
racing for the same items get one 202 and one 409, never two claims.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowExecution,
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

from api.errors import ApiError
from api.idempotency import REQUEST_HASH_MEMO, KeyedRequest
from api.order_gateway import describe_order, owns, task_queues
from api.principals import Principal
from api.return_schemas import ReturnIn, ReturnSummary
from api.temporal_calls import bounded, describe, keyed_id, refusal
from api.visibility import SagaIndex, enum_or_none, list_page
from common.metrics import SAGAS_STARTED
from common.settings import Settings
from workflows.models import (
    CancelRequest,
    OrderItem,
    OrderState,
    OrderStatus,
    RetryCompensationsRequest,
)
from workflows.return_models import (
    ReceiveRequest,
    ReturnFailure,
    ReturnInput,
    ReturnState,
    ReturnStatus,
)
from workflows.returns import ReturnWorkflow
from workflows.search_attributes import (
    CUSTOMER_ID,
    FAILURE_REASON,
    ORDER_ID,
    ORDER_STATUS,
    RETURN_STATUS,
)
from workflows.steps import escape_markdown

RETURN_ID_RE = re.compile(r"^return-[0-9a-f]{32}$")
RETURNS = SagaIndex(ReturnWorkflow.__name__, RETURN_STATUS)
# Claims the ledger refused: the return ends at once, and the request answers 409.
REFUSED = {
    ReturnFailure.EXCEEDS_ORDER: "the quantities exceed what the order bought minus what "
    "its other returns already claim",
    ReturnFailure.NOT_RETURNABLE: "the order has nothing a return could take back",
}

ReturnHandle = WorkflowHandle[ReturnWorkflow, ReturnStatus]


class ReturnNotFound(ApiError):
    status_code = 404

    def __init__(self, return_id: str) -> None:
        super().__init__(f"return {return_id} not found")


class ReturnConflict(ApiError):
    status_code = 409


def return_id_for(secret: bytes, scope: str, order_id: str, idempotency_key: str | None) -> str:
    """The return an Idempotency-Key names for one caller and one order (keyed, scoped)."""
    message = None if idempotency_key is None else f"{scope}\0{order_id}\0{idempotency_key}"
    return keyed_id("return", secret, message)


def request_hash(order_id: str, body: ReturnIn) -> str:
    canonical = json.dumps(
        {"order_id": order_id, **body.model_dump(mode="json")},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- starting ----------------------------------------------------------------------------------


async def returnable_order(
    client: Client, settings: Settings, order_id: str, principal: Principal
) -> WorkflowExecutionDescription:
    """The order, if the caller may return it now: 404 unknown or foreign, else 409."""
    order = await describe_order(client, settings, order_id, principal)
    state = order.typed_search_attributes.get(ORDER_STATUS)
    if order.status != WorkflowExecutionStatus.COMPLETED or state != OrderState.COMPLETED:
        raise ReturnConflict(
            f"order {order_id} is {state or order.status}; only a COMPLETED order can be returned"
        )
    window = timedelta(seconds=settings.return_window_s)
    if order.close_time is not None and datetime.now(UTC) > order.close_time + window:
        raise ReturnConflict(
            f"order {order_id} completed more than {settings.return_window_s} s ago, "
            "outside the return window"
        )
    return order


async def start_return(
    client: Client,
    settings: Settings,
    order: WorkflowExecutionDescription,
    body: ReturnIn,
    return_id: str,
    keyed: KeyedRequest | None,
) -> tuple[ReturnStatus, bool]:
    """Start the saga and wait for its claim; returns (status, replayed). 409 when refused.

    A repeat of an Idempotency-Key the ledger remembers is only answered, never started
    again (409 when Temporal no longer has its return); see api/idempotency.py.
    """
    customer_id = order.typed_search_attributes.get(CUSTOMER_ID) or ""
    fingerprint = request_hash(order.id, body)
    if keyed is not None and keyed.earlier is not None:
        await _replayed(client, settings, return_id, fingerprint, keyed)
        return await _claimed(client, settings, return_id), True
    input = ReturnInput(
        return_id=return_id,
        order_id=order.id,
        customer_id=customer_id,
        items=[OrderItem(sku=i.sku, quantity=i.quantity) for i in body.items],
        reason=body.reason,
        # Part of every step key: a later return reusing this ID shares none.
        nonce=secrets.token_hex(16),
        parcel_timeout_s=settings.return_parcel_timeout_s,
        step_timeout_s=settings.step_timeout_s,
        step_max_attempts=settings.step_max_attempts,
        step_heartbeat_timeout_s=settings.step_heartbeat_timeout_s,
        task_queues=task_queues(settings),
        reservation_id=await _reservation_of(client, settings, order),
    )
    count = sum(i.quantity for i in body.items)
    replayed = False
    try:
        await bounded(
            settings,
            lambda t: client.start_workflow(
                ReturnWorkflow.run,
                input,
                id=return_id,
                task_queue=settings.orders_task_queue,
                # The server's ID uniqueness is the idempotency lock, as for orders.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={REQUEST_HASH_MEMO: fingerprint},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(CUSTOMER_ID, customer_id),
                        SearchAttributePair(ORDER_ID, order.id),
                        SearchAttributePair(RETURN_STATUS, ReturnState.AWAITING_PARCEL.value),
                    ]
                ),
                static_summary=(
                    f"Return for {escape_markdown(customer_id)}: {count} items of "
                    f"{escape_markdown(order.id)}"
                ),
                static_details=_details(settings, order.id, return_id, body),
                rpc_timeout=t,
            ),
        )
        SAGAS_STARTED.labels(ReturnWorkflow.__name__).inc()
    except WorkflowAlreadyStartedError:
        if keyed is None:
            raise
        # A concurrent request with the same key started it, or it predates the ledger.
        await _replayed(client, settings, return_id, fingerprint, keyed)
        replayed = True
    if keyed is not None:
        # Recorded once started, before the claim is decided (a refused return is a start
        # too); a start that failed leaves the key free for a retry.
        await keyed.record(fingerprint)
    return await _claimed(client, settings, return_id), replayed


async def _replayed(
    client: Client, settings: Settings, return_id: str, fingerprint: str, keyed: KeyedRequest
) -> None:
    """Check that the return this key started had the same body, and is still known."""
    await keyed.replayed(
        lambda: describe_return(client, settings, return_id), fingerprint, "return"
    )


async def _claimed(client: Client, settings: Settings, return_id: str) -> ReturnStatus:
    """The return once its claim is decided; 409 when inventory's claim ledger refused it."""
    status = await _admission(client, settings, return_id)
    if status.failure_reason in REFUSED:
        raise ReturnConflict(f"return {return_id} refused: {REFUSED[status.failure_reason]}")
    return status


async def _reservation_of(
    client: Client, settings: Settings, order: WorkflowExecutionDescription
) -> str | None:
    """The reservation the completed order bought with, from its result in history.

    None for an order completed before its status carried one: its returns then claim
    by order ID, as they always did.
    """
    handle = client.get_workflow_handle(order.id, run_id=order.run_id, result_type=OrderStatus)
    status: OrderStatus = await bounded(settings, lambda t: handle.result(rpc_timeout=t))
    return status.reservation_id


async def _admission(client: Client, settings: Settings, return_id: str) -> ReturnStatus:
    handle = _handle(client, return_id)
    try:
        return await bounded(
            settings, lambda t: handle.execute_update(ReturnWorkflow.admission, rpc_timeout=t)
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:  # closed already (refused): read its end
            raise
    return await load_return(client, settings, return_id)


def _details(settings: Settings, order_id: str, return_id: str, body: ReturnIn) -> str:
    # Customer text rendered as Markdown in the Web UI: escaped, so it stays text.
    rows = "\n".join(f"| {escape_markdown(i.sku)} | {i.quantity} |" for i in body.items)
    api = settings.public_api_url.rstrip("/")
    return (
        f"| sku | quantity |\n|---|---|\n{rows}\n\nreason: {escape_markdown(body.reason)}\n\n"
        f"[this return in the API]({api}/returns/{return_id}) · "
        f"[the order]({api}/orders/{order_id})"
    )


# --- reading -----------------------------------------------------------------------------------


async def describe_return(
    client: Client, settings: Settings, return_id: str, principal: Principal | None = None
) -> WorkflowExecutionDescription:
    """The return's execution; 404 when unknown or, for a customer, not theirs."""
    if not RETURN_ID_RE.match(return_id):
        raise ReturnNotFound(return_id)
    description = await describe(client, settings, return_id)
    if description is None or description.workflow_type != RETURNS.workflow_type:
        raise ReturnNotFound(return_id)
    if principal is not None and not owns(principal, description):
        raise ReturnNotFound(return_id)  # exactly the answer for an unknown return
    return description


async def load_return(
    client: Client, settings: Settings, return_id: str, principal: Principal | None = None
) -> ReturnStatus:
    """A finished return's result from history (no worker needed); a running one's query."""
    description = await describe_return(client, settings, return_id, principal)
    handle: ReturnHandle = client.get_workflow_handle_for(
        ReturnWorkflow.run, return_id, run_id=description.run_id
    )
    if description.status == WorkflowExecutionStatus.COMPLETED:
        return await bounded(settings, lambda t: handle.result(rpc_timeout=t))
    return await bounded(settings, lambda t: handle.query(ReturnWorkflow.status, rpc_timeout=t))


async def list_returns(
    client: Client,
    settings: Settings,
    *,
    order_id: str | None,
    status: ReturnState | None,
    owner: str | None,
    page_size: int,
    page_token: str | None,
) -> tuple[list[ReturnSummary], str | None]:
    keywords = {ORDER_ID.name: order_id} if order_id is not None else {}
    query = RETURNS.query(status, owner=owner, **keywords)
    return await list_page(
        client, settings, query, _summary, page_size=page_size, page_token=page_token
    )


def _summary(execution: WorkflowExecution) -> ReturnSummary:
    attributes = execution.typed_search_attributes
    return ReturnSummary(
        return_id=execution.id,
        order_id=attributes.get(ORDER_ID),
        customer_id=attributes.get(CUSTOMER_ID),
        status=enum_or_none(ReturnState, attributes.get(RETURN_STATUS)),
        failure_reason=enum_or_none(ReturnFailure, attributes.get(FAILURE_REASON)),
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


# --- changing ----------------------------------------------------------------------------------


async def receive_return(
    client: Client, settings: Settings, return_id: str, operator: Principal, note: str
) -> ReturnStatus:
    """The warehouse has the parcel. A repeat is answered like the first one."""
    request = ReceiveRequest(operator=operator.name, note=note)
    refused = await _update(client, settings, return_id, "receive", request)
    if isinstance(refused, ReturnStatus):
        return refused
    current = await load_return(client, settings, return_id)
    if current.received:
        return current
    raise ReturnConflict(refused or f"return is {current.status.value}, not awaiting its parcel")


async def cancel_return(
    client: Client, settings: Settings, return_id: str, reason: str, principal: Principal
) -> ReturnStatus:
    """The owner's cancel, before the parcel is in. A repeat is answered like the first."""
    await describe_return(client, settings, return_id, principal)  # 404 when not theirs
    refused = await _update(client, settings, return_id, "cancel", CancelRequest(reason=reason))
    if isinstance(refused, ReturnStatus):
        return refused
    current = await load_return(client, settings, return_id)
    if current.cancel_requested:
        return current
    raise ReturnConflict(refused or f"return is already {current.status.value}")


async def retry_return(
    client: Client, settings: Settings, return_id: str, operator: Principal
) -> ReturnStatus:
    """Run again what failed for good (the refund, or a compensation)."""
    request = RetryCompensationsRequest(operator=operator.name)
    refused = await _update(client, settings, return_id, "retry", request)
    if isinstance(refused, ReturnStatus):
        return refused
    current = await load_return(client, settings, return_id)
    raise ReturnConflict(refused or f"return is {current.status.value}, not FAILED")


async def _update(
    client: Client, settings: Settings, return_id: str, update: str, argument: object
) -> ReturnStatus | str | None:
    """The update's answer; else the validator's refusal, or None when already closed."""
    await describe_return(client, settings, return_id)  # 404 for an unknown return
    handle = _handle(client, return_id)
    try:
        return await bounded(
            settings,
            lambda t: handle.execute_update(
                update, argument, result_type=ReturnStatus, rpc_timeout=t
            ),
        )
    except WorkflowUpdateFailedError as err:
        return refusal(err)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    return None


def _handle(client: Client, return_id: str) -> ReturnHandle:
    if not RETURN_ID_RE.match(return_id):
        raise ReturnNotFound(return_id)
    return client.get_workflow_handle_for(ReturnWorkflow.run, return_id)
