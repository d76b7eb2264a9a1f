"""HTTP bodies of the returns endpoints, apart from the workflow dataclasses (like schemas.py).

The same rules as an order's: unknown fields refused, sizes bounded, no control characters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from api.schemas import CompensationOut, OrderItemIn, Schema, StepOut, text
from workflows.return_models import ReturnFailure, ReturnState


class ReturnIn(Schema):
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=20)]
    reason: Annotated[str, text(1, 200, examples=["damaged"])]


class ReceiveIn(Schema):
    # The operator on record is the authenticated principal, never a body field.
    note: Annotated[str, text(0, 500)] = ""


class ReturnAccepted(Schema):
    return_id: str
    order_id: str
    status: ReturnState
    replayed: bool = Field(
        default=False,
        description="true when an earlier request with the same Idempotency-Key started it",
    )


class ReturnItemOut(Schema):
    sku: str
    quantity: int


class ReturnStatusOut(Schema):
    return_id: str
    order_id: str
    customer_id: str
    items: list[ReturnItemOut]
    reason: str
    status: ReturnState
    failure_reason: ReturnFailure | None
    current_step: str | None
    refund_cents: int | None = Field(
        description="the returned items' share of the order's captured amount, once claimed"
    )
    tracking_number: str | None = Field(description="the return label's tracking number")
    received: bool
    cancel_requested: bool
    cancel_ignored: bool
    steps: list[StepOut]
    compensations: list[CompensationOut]
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, status: Any) -> ReturnStatusOut:
        return cls.model_validate(status, from_attributes=True)


class ReturnSummary(Schema):
    return_id: str
    order_id: str | None
    customer_id: str | None
    status: ReturnState | None
    failure_reason: ReturnFailure | None
    started_at: datetime
    closed_at: datetime | None


class ReturnList(Schema):
    returns: list[ReturnSummary]
    next_page_token: str | None = Field(
        description="pass back as page_token for the next page; null on the last page"
    )
