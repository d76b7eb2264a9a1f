"""Order endpoints (DESIGN §5): start, read, list, cancel, approve and reject checkout sagas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from temporalio.client import Client

from api.deps import ClientDep, CoordinationDep, SettingsDep
from api.errors import error_responses
from api.sagas import (
    cancel_order,
    decide_order,
    load_status,
    retry_order_compensations,
    start_order,
)
from api.schemas import (
    CUSTOMER_ID_PATTERN,
    CancelIn,
    DecisionIn,
    OrderAccepted,
    OrderIn,
    OrderList,
    OrderStatusOut,
)
from api.visibility import list_orders
from common.settings import Settings
from workflows.models import ApprovalDecision, OrderState

router = APIRouter(prefix="/orders", tags=["orders"])

UNAVAILABLE = "Temporal or the order worker did not answer in time; retry after Retry-After"
UNKNOWN = "unknown order"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x20-\x7e]+$",
        description="printable ASCII; the same key always names the same order",
    ),
]


@router.post(
    "",
    status_code=202,
    summary="Start a checkout saga",
    responses=error_responses(
        {
            422: "invalid body, or an Idempotency-Key reused with another body",
            503: f"{UNAVAILABLE}; or load shedding: intake paused or too many sagas in flight",
        }
    ),
)
async def create_order(
    order: OrderIn,
    response: Response,
    client: ClientDep,
    settings: SettingsDep,
    coordination: CoordinationDep,
    idempotency_key: IdempotencyKey = None,
) -> OrderAccepted:
    await coordination.check_intake()
    order_id, state, replayed = await start_order(client, settings, order, idempotency_key)
    response.headers["Location"] = f"/orders/{order_id}"
    return OrderAccepted(order_id=order_id, status=state, replayed=replayed)


@router.get(
    "",
    summary="List orders from Temporal visibility (eventually consistent)",
    responses=error_responses({422: "invalid filter or page_token", 503: UNAVAILABLE}),
)
async def get_orders(
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
        page_size=page_size,
        page_token=page_token,
    )
    return OrderList(orders=orders, next_page_token=next_token)


@router.get(
    "/{order_id}",
    summary="Live saga status",
    responses=error_responses({404: UNKNOWN, 503: UNAVAILABLE}),
)
async def get_order(order_id: str, client: ClientDep, settings: SettingsDep) -> OrderStatusOut:
    return OrderStatusOut.of(await load_status(client, settings, order_id))


@router.post(
    "/{order_id}/cancel",
    status_code=202,
    summary="Customer cancel; the saga rolls back what it did",
    responses=error_responses({404: UNKNOWN, 409: "already shipped or finished", 503: UNAVAILABLE}),
)
async def cancel(
    order_id: str, client: ClientDep, settings: SettingsDep, body: CancelIn | None = None
) -> OrderStatusOut:
    reason = (body or CancelIn()).reason
    return OrderStatusOut.of(await cancel_order(client, settings, order_id, reason))


DECISION_RESPONSES = error_responses({404: UNKNOWN, 409: "not awaiting approval", 503: UNAVAILABLE})


@router.post("/{order_id}/approve", summary="Operator approval", responses=DECISION_RESPONSES)
async def approve(
    order_id: str, client: ClientDep, settings: SettingsDep, body: DecisionIn | None = None
) -> OrderStatusOut:
    return await _decide(client, settings, order_id, body or DecisionIn(), approved=True)


@router.post("/{order_id}/reject", summary="Operator rejection", responses=DECISION_RESPONSES)
async def reject(
    order_id: str, client: ClientDep, settings: SettingsDep, body: DecisionIn | None = None
) -> OrderStatusOut:
    return await _decide(client, settings, order_id, body or DecisionIn(), approved=False)


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
        {404: UNKNOWN, 409: "not FAILED, or no compensation failed", 503: UNAVAILABLE}
    ),
)
async def retry_compensations(
    order_id: str, client: ClientDep, settings: SettingsDep, body: DecisionIn | None = None
) -> OrderStatusOut:
    operator = (body or DecisionIn()).operator
    return OrderStatusOut.of(await retry_order_compensations(client, settings, order_id, operator))


async def _decide(
    client: Client, settings: Settings, order_id: str, body: DecisionIn, *, approved: bool
) -> OrderStatusOut:
    decision = ApprovalDecision(approved=approved, operator=body.operator, note=body.note)
    return OrderStatusOut.of(await decide_order(client, settings, order_id, decision))
