"""HTTP request and response bodies (DESIGN §5), kept apart from the workflow dataclasses.

Inputs are strict about shape and size: the saga input lands in Temporal history, so an
unbounded field would be an unbounded history event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.models import FailureReason, OrderState

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN, examples=["c-1"])]


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests -------------------------------------------------------------------------------


class OrderItemIn(Schema):
    sku: Annotated[str, Field(min_length=1, max_length=64, examples=["SKU-1"])]
    # Strict: a JSON 2.0 or "2" or true is a client bug, not a quantity.
    quantity: Annotated[int, Field(ge=1, le=1000, strict=True)]


class PaymentIn(Schema):
    card_token: Annotated[str, Field(min_length=1, max_length=64, examples=["tok_visa"])]


class AddressIn(Schema):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    line1: Annotated[str, Field(min_length=1, max_length=200)]
    city: Annotated[str, Field(min_length=1, max_length=100)]
    postal_code: Annotated[str, Field(min_length=1, max_length=20)]
    country: Annotated[
        str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2", examples=["DE"])
    ]


class OrderIn(Schema):
    customer_id: CustomerId
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=20)]
    payment: PaymentIn
    shipping_address: AddressIn


class CancelIn(Schema):
    reason: Annotated[str, Field(min_length=1, max_length=200)] = "customer request"


class DecisionIn(Schema):
    operator: Annotated[str, Field(min_length=1, max_length=64)] = "operator"
    note: Annotated[str, Field(max_length=500)] = ""


# --- responses ------------------------------------------------------------------------------


class OrderAccepted(Schema):
    order_id: str
    status: OrderState
    replayed: bool = Field(
        default=False,
        description="true when an earlier request with the same Idempotency-Key started it",
    )


class StepOut(Schema):
    name: str
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class CompensationOut(Schema):
    name: str
    status: str
    rounds: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class OrderStatusOut(Schema):
    order_id: str
    customer_id: str
    status: OrderState
    failure_reason: FailureReason | None
    current_step: str | None
    total_cents: int | None
    tracking_number: str | None
    cancel_requested: bool
    steps: list[StepOut]
    compensations: list[CompensationOut]
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, status: Any) -> OrderStatusOut:
        return cls.model_validate(status, from_attributes=True)


class OrderSummary(Schema):
    order_id: str
    customer_id: str | None
    status: OrderState | None
    failure_reason: FailureReason | None
    started_at: datetime
    closed_at: datetime | None


class OrderList(Schema):
    orders: list[OrderSummary]
    next_page_token: str | None = Field(
        description="pass back as page_token for the next page; null on the last page"
    )


class Health(Schema):
    status: str = "ok"


class ErrorBody(Schema):
    detail: str


class FieldError(Schema):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(Schema):
    detail: str
    errors: list[FieldError]


# --- coordination and chaos drills -----------------------------------------------------------


class OperateIn(Schema):
    action: Annotated[
        Literal["trip", "reset", "pause_intake", "resume_intake"],
        Field(description="trip/reset act on one service's circuit; the others on intake"),
    ]
    service: Annotated[
        str | None,
        Field(max_length=64, description="for trip and reset: the service", examples=["payments"]),
    ] = None
    reason: Annotated[str | None, Field(max_length=200)] = None


class FaultIn(Schema):
    error_ratio: Annotated[
        float, Field(ge=0.0, le=1.0, description="share of calls that fail (0.0 to 1.0)")
    ]
    latency_ms: Annotated[
        int, Field(ge=0, le=60_000, strict=True, description="added to every call")
    ] = 0
    activity: Annotated[
        str | None,
        Field(
            pattern=r"^[a-z_]{1,64}$",
            description="only this operation (e.g. void_payment); every call when omitted",
        ),
    ] = None
    non_retryable: Annotated[
        bool, Field(strict=True, description="fail for good instead of retryably")
    ] = False


class FaultOut(BaseModel):
    service: str
    error_ratio: float
    latency_ms: int
    activity: str | None
    non_retryable: bool
    injected_errors: int
    updated_at: datetime | None
