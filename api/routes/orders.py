"""Order endpoints: start, read, list, cancel, approve and reject checkout sagas.

Customers act on their own orders only (another customer's answers 404, exactly like an
unknown one); operators act on every order and alone decide approvals and retries.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from temporalio.client import Client

from api.auth import OperatorDep, PrincipalDep
from api.deps import ClientDep, CoordinationDep, IdempotencyDep, SettingsDep
from api.errors import OPERATOR_ANSWERS, error_responses
from api.idempotency import FORGOTTEN, KeyedRequest, idempotency_secret
from api.order_gateway import (
    cancel_order,
    customer_for,
    decide_order,
    load_order,
    order_exists,
    order_id_for,
    retry_order,
    start_order,
)
from api.principals import Principal
from api.schemas import (
    CUSTOMER_ID_PATTERN,
    CancelIn,
    DecisionIn,
    OrderAccepted,
    OrderIn,
    OrderList,
    OrderStatusOut,
)
from api.visibility import check_hold_cap, list_orders
from common.settings import Settings
from workflows.models import ApprovalDecision, OrderState

router = APIRouter(prefix="/orders", tags=["orders"])

UNAVAILABLE = "Temporal or the order worker did not answer in time; retry after Retry-After"
UNKNOWN = "unknown order, or not yours"

# OpenAPI links from the answers that hand out an order (its creation, its status) to what
# can be done with it: clients, and the contract test's stateful phase, follow them. The
# actions themselves carry none, or the stateful phase would start chains with them.
_ORDER_OPERATIONS = {
    "GetOrder": "get_order_orders__order_id__get",
    "CancelOrder": "cancel_orders__order_id__cancel_post",
    "ApproveOrder": "approve_orders__order_id__approve_post",
    "RejectOrder": "reject_orders__order_id__reject_post",
    "RetryCompensations": "retry_compensations_orders__order_id__retry_compensations_post",
    "RetryOrder": "retry_orders__order_id__retry_post",
}
ORDER_LINKS = {
    "links": {
        name: {"operationId": operation_id, "parameters": {"order_id": "$response.body#/order_id"}}
        for name, operation_id in _ORDER_OPERATIONS.items()
    }
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x20-\x7e]+$",
        description="printable ASCII; the same caller and key always name the same order",
    ),
]


@router.post(
    "",
    status_code=202,
    summary="Start a checkout saga",
    responses=error_responses(
        {
            403: "a customer's body names another customer",
            409: "this customer already has the most orders waiting for approval at once; "
            f"or {FORGOTTEN}",
            422: "invalid body, an Idempotency-Key reused with another body, or an operator "
            "naming no customer_id",
            503: f"{UNAVAILABLE}; or load shedding: intake paused, or "
            "SAGAWORKS_MAX_IN_FLIGHT_SAGAS checkouts actively running (sagas parked for "
            "approval, a parcel or an operator do not count)",
        },
        body=True,
    )
    | {202: ORDER_LINKS},
)
async def create_order(
    order: OrderIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    client: ClientDep,
    settings: SettingsDep,
    coordination: CoordinationDep,
    ledger: IdempotencyDep,
    idempotency_key: IdempotencyKey = None,
) -> OrderAccepted:
    customer_id = customer_for(principal, order)
    await coordination.check_intake()
    secret = await idempotency_secret(request)
    order_id = order_id_for(secret, principal.scope, idempotency_key)
    keyed = await KeyedRequest.of(ledger, order_id, principal.scope, idempotency_key)
    # A repeat of a key that started an order is answered whatever the cap says now.
    if keyed is None or not (keyed.earlier or await _replay_exists(client, settings, order_id)):
        await check_hold_cap(client, settings, customer_id)
    order_id, state, replayed = await start_order(
        client, settings, order, customer_id, order_id, keyed
    )
    response.headers["Location"] = f"/orders/{order_id}"
    return OrderAccepted(order_id=order_id, status=state, replayed=replayed)


async def _replay_exists(client: Client, settings: Settings, order_id: str) -> bool:
    # A replay of an order already started is answered whatever the cap says now.
    return await order_exists(client, settings, order_id)


@router.get(
    "",
    summary="List orders from Temporal visibility (eventually consistent)",
    description="A customer sees only their own orders, whatever `customer_id` says.",
    responses=error_responses({422: "invalid filter or page_token", 503: UNAVAILABLE}),
)
async def get_orders(
    principal: PrincipalDep,
    client: ClientDep,
    settings: SettingsDep,
    status: OrderState | None = None,
    customer_id: Annotated[str | None, Query(pattern=CUSTOMER_ID_PATTERN)] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
) -> OrderList:
    orders, next_token = await list_orders(
        client,
        settings,
        status=status,
        customer_id=customer_id,
        owner=principal.customer_id,
        page_size=page_size,
        page_token=page_token,
    )
    return OrderList(orders=orders, next_page_token=next_token)


@router.get(
    "/{order_id}",
    summary="Live saga status",
    responses=error_responses({404: UNKNOWN, 503: UNAVAILABLE}) | {200: ORDER_LINKS},
)
async def get_order(
    order_id: str, principal: PrincipalDep, client: ClientDep, settings: SettingsDep
) -> OrderStatusOut:
    status, trace_id = await load_order(client, settings, order_id, principal)
    return OrderStatusOut.of(status, trace_id)


@router.post(
    "/{order_id}/cancel",
    status_code=202,
    summary="Customer cancel; the saga rolls back what it did",
    responses=error_responses(
        {404: UNKNOWN, 409: "already shipped or finished", 503: UNAVAILABLE}, body=True
    ),
)
async def cancel(
    order_id: str,
    principal: PrincipalDep,
    client: ClientDep,
    settings: SettingsDep,
    body: CancelIn | None = None,
) -> OrderStatusOut:
    reason = (body or CancelIn()).reason
    return OrderStatusOut.of(await cancel_order(client, settings, order_id, reason, principal))


DECISION_RESPONSES = error_responses(
    {404: "unknown order", 409: "not awaiting approval", 503: UNAVAILABLE},
    auth=OPERATOR_ANSWERS,
    body=True,
)


@router.post("/{order_id}/approve", summary="Operator approval", responses=DECISION_RESPONSES)
async def approve(
    order_id: str,
    operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
    body: DecisionIn | None = None,
) -> OrderStatusOut:
    return await _decide(client, settings, order_id, operator, body, approved=True)


@router.post("/{order_id}/reject", summary="Operator rejection", responses=DECISION_RESPONSES)
async def reject(
    order_id: str,
    operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
    body: DecisionIn | None = None,
) -> OrderStatusOut:
    return await _decide(client, settings, order_id, operator, body, approved=False)


@router.post(
    "/{order_id}/retry-compensations",
    status_code=202,
    summary="Operator: run the compensations that failed for good again, once fixed",
    description=(
        "For a FAILED order whose compensation failed permanently (listed under "
        "`dead_letters` in GET /coordination). Answers as the retry begins "
        "(COMPENSATING); the order ends COMPENSATED, or FAILED again if it still fails."
    ),
    responses=error_responses(
        {404: "unknown order", 409: "not FAILED, or no compensation failed", 503: UNAVAILABLE},
        auth=OPERATOR_ANSWERS,
        body=True,
    ),
)
async def retry_compensations(
    order_id: str,
    operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
    body: DecisionIn | None = None,
) -> OrderStatusOut:
    return OrderStatusOut.of(
        await retry_order(client, settings, order_id, operator.name, compensations_only=True)
    )


@router.post(
    "/{order_id}/retry",
    status_code=202,
    summary="Operator: run again whatever failed for good, once the cause is fixed",
    description=(
        "For a FAILED order: a step past the pivot that failed for good (the capture; the "
        "order is shipped, so it only goes forward) runs again and the order goes on to "
        "COMPLETED; failed compensations run again as with `/retry-compensations`. Answers "
        "as the retry begins."
    ),
    responses=error_responses(
        {404: "unknown order", 409: "not FAILED, or nothing failed for good", 503: UNAVAILABLE},
        auth=OPERATOR_ANSWERS,
        body=True,
    ),
)
async def retry(
    order_id: str,
    operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
    body: DecisionIn | None = None,
) -> OrderStatusOut:
    return OrderStatusOut.of(await retry_order(client, settings, order_id, operator.name))


async def _decide(
    client: Client,
    settings: Settings,
    order_id: str,
    operator: Principal,
    body: DecisionIn | None,
    *,
    approved: bool,
) -> OrderStatusOut:
    note = (body or DecisionIn()).note
    decision = ApprovalDecision(approved=approved, operator=operator.name, note=note)
    return OrderStatusOut.of(await decide_order(client, settings, order_id, decision))
