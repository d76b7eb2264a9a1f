"""Return endpoints: request, read, list, receive, cancel and retry returns of orders.

Ownership as for orders: a customer returns and sees their own orders' returns only
(another's answers 404, like an unknown one); operators act on every return and alone say
a parcel arrived or retry what failed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.auth import OperatorDep, PrincipalDep
from api.coordination import RETURN
from api.deps import ClientDep, CoordinationDep, IdempotencyDep, SettingsDep
from api.errors import OPERATOR_ANSWERS, error_responses
from api.idempotency import FORGOTTEN, KeyedRequest, idempotency_secret
from api.return_gateway import (
    cancel_return,
    list_returns,
    load_return,
    receive_return,
    retry_return,
    return_id_for,
    returnable_order,
    start_return,
)
from api.return_schemas import ReceiveIn, ReturnAccepted, ReturnIn, ReturnList, ReturnStatusOut
from api.routes.orders import IdempotencyKey
from api.schemas import CancelIn
from workflows.return_models import ReturnState

router = APIRouter(tags=["returns"])

UNAVAILABLE = "Temporal or the order worker did not answer in time; retry after Retry-After"
UNKNOWN = "unknown return, or not yours"
ORDER_ID_PATTERN = r"^order-[0-9a-f]{32}$"

# OpenAPI links from the answers that hand out a return to what can be done with it.
_RETURN_OPERATIONS = {
    "GetReturn": "get_return_returns__return_id__get",
    "ReceiveReturn": "receive_returns__return_id__receive_post",
    "CancelReturn": "cancel_returns__return_id__cancel_post",
    "RetryReturn": "retry_returns__return_id__retry_post",
}
RETURN_LINKS = {
    "links": {
        name: {
            "operationId": operation_id,
            "parameters": {"return_id": "$response.body#/return_id"},
        }
        for name, operation_id in _RETURN_OPERATIONS.items()
    }
}


@router.post(
    "/orders/{order_id}/returns",
    status_code=202,
    summary="Start a return of a completed order's items",
    description=(
        "For a COMPLETED order within the return window. Answers once the return's claim "
        "is decided: 202 with the return (AWAITING_PARCEL), or 409 when the quantities "
        "exceed what the order bought minus what its other returns claim."
    ),
    responses=error_responses(
        {
            404: "unknown order, or not yours",
            409: "the order is not COMPLETED, is outside the return window, or the "
            f"quantities exceed what is left to return; or {FORGOTTEN}",
            422: "invalid body, or an Idempotency-Key reused with another body",
            503: f"{UNAVAILABLE}; or load shedding: SAGAWORKS_MAX_ACTIVE_RETURNS returns "
            "actively running (returns waiting for their parcel do not count)",
        },
        body=True,
    )
    | {202: RETURN_LINKS},
)
async def create_return(
    order_id: str,
    body: ReturnIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    client: ClientDep,
    settings: SettingsDep,
    coordination: CoordinationDep,
    ledger: IdempotencyDep,
    idempotency_key: IdempotencyKey = None,
) -> ReturnAccepted:
    order = await returnable_order(client, settings, order_id, principal)
    await coordination.check_intake(RETURN)
    secret = await idempotency_secret(request)
    return_id = return_id_for(secret, principal.scope, order_id, idempotency_key)
    keyed = await KeyedRequest.of(ledger, return_id, principal.scope, idempotency_key)
    status, replayed = await start_return(client, settings, order, body, return_id, keyed)
    response.headers["Location"] = f"/returns/{return_id}"
    return ReturnAccepted(
        return_id=return_id, order_id=order_id, status=status.status, replayed=replayed
    )


@router.get(
    "/returns",
    summary="List returns from Temporal visibility (eventually consistent)",
    description="A customer sees only their own returns. `order_id` lists one order's.",
    responses=error_responses({422: "invalid filter or page_token", 503: UNAVAILABLE}),
)
async def get_returns(
    principal: PrincipalDep,
    client: ClientDep,
    settings: SettingsDep,
    order_id: Annotated[str | None, Query(pattern=ORDER_ID_PATTERN)] = None,
    status: ReturnState | None = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
) -> ReturnList:
    returns, next_token = await list_returns(
        client,
        settings,
        order_id=order_id,
        status=status,
        owner=principal.customer_id,
        page_size=page_size,
        page_token=page_token,
    )
    return ReturnList(returns=returns, next_page_token=next_token)


@router.get(
    "/returns/{return_id}",
    summary="Live return status, with its steps and compensations",
    responses=error_responses({404: UNKNOWN, 503: UNAVAILABLE}) | {200: RETURN_LINKS},
)
async def get_return(
    return_id: str, principal: PrincipalDep, client: ClientDep, settings: SettingsDep
) -> ReturnStatusOut:
    return ReturnStatusOut.of(await load_return(client, settings, return_id, principal))


@router.post(
    "/returns/{return_id}/receive",
    summary="Operator: the warehouse has the parcel; restock and refund follow",
    description="A repeat, once received, answers the return as it is now.",
    responses=error_responses(
        {404: "unknown return", 409: "not awaiting its parcel", 503: UNAVAILABLE},
        auth=OPERATOR_ANSWERS,
        body=True,
    ),
)
async def receive(
    return_id: str,
    operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
    body: ReceiveIn | None = None,
) -> ReturnStatusOut:
    note = (body or ReceiveIn()).note
    return ReturnStatusOut.of(await receive_return(client, settings, return_id, operator, note))


@router.post(
    "/returns/{return_id}/cancel",
    status_code=202,
    summary="Cancel a return before its parcel is received; its label is cancelled",
    responses=error_responses(
        {404: UNKNOWN, 409: "the parcel was received, or the return is over", 503: UNAVAILABLE},
        body=True,
    ),
)
async def cancel(
    return_id: str,
    principal: PrincipalDep,
    client: ClientDep,
    settings: SettingsDep,
    body: CancelIn | None = None,
) -> ReturnStatusOut:
    reason = (body or CancelIn()).reason
    return ReturnStatusOut.of(await cancel_return(client, settings, return_id, reason, principal))


@router.post(
    "/returns/{return_id}/retry",
    status_code=202,
    summary="Operator: run again what failed for good (the refund, or a compensation)",
    description=(
        "For a FAILED return (listed under `dead_letters` in GET /coordination). Answers "
        "as the retry begins; the return ends REFUNDED (or rolled back), or FAILED again."
    ),
    responses=error_responses(
        {404: "unknown return", 409: "not FAILED, or nothing failed for good", 503: UNAVAILABLE},
        auth=OPERATOR_ANSWERS,
        body=True,
    ),
)
async def retry(
    return_id: str,
    operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
    body: ReceiveIn | None = None,
) -> ReturnStatusOut:
    return ReturnStatusOut.of(await retry_return(client, settings, return_id, operator))
