"""HTTP request and response bodies, kept apart from the workflow dataclasses.

ARCHITECTURE.md, HTTP contract.

Inputs are strict about shape and size: the saga input lands in Temporal history, so an
unbounded field would be an unbounded history event.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from common.settings import SERVICES
from workflows.models import FailureReason, OrderState
from workflows.saga import CompensationStatus
from workflows.steps import StepStatus

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# No control characters (C0, DEL, C1; U+0000 among them) in any free-text field: a
# database would refuse some of them, and none belong in a name or an address.
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"

CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN, examples=["c-1"])]


def text(min_length: int, max_length: int, **extra: Any) -> Any:
    """A bounded free-text field that refuses control characters."""
    return Field(min_length=min_length, max_length=max_length, pattern=NO_CONTROL, **extra)


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" includes 2.0 (a number with no fraction), and clients and
    # generators send it so: take it as 2. A "2" or true stays a client bug (strict below).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# After `Field(strict=True, ...)` on an int (after, or the bounds leave the JSON schema):
# 2 and 2.0 are accepted; "2", true and 2.5 refused.
INTEGRAL = BeforeValidator(_integral)


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- requests -------------------------------------------------------------------------------


class OrderItemIn(Schema):
    sku: Annotated[str, text(1, 64, examples=["SKU-1"])]
    quantity: Annotated[int, Field(ge=1, le=1000, strict=True), INTEGRAL]


class PaymentIn(Schema):
    card_token: Annotated[str, text(1, 64, examples=["tok_visa"])]


class AddressIn(Schema):
    name: Annotated[str, text(1, 100)]
    line1: Annotated[str, text(1, 200)]
    city: Annotated[str, text(1, 100)]
    postal_code: Annotated[str, text(1, 20)]
    country: Annotated[
        str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2", examples=["DE"])
    ]


class OrderIn(Schema):
    customer_id: Annotated[
        str | None,
        Field(
            pattern=CUSTOMER_ID_PATTERN,
            examples=["c-1"],
            description="a customer's key places orders for its own customer (the default); "
            "an operator must name one",
        ),
    ] = None
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=20)]
    payment: PaymentIn
    shipping_address: AddressIn


class CancelIn(Schema):
    reason: Annotated[str, text(1, 200)] = "customer request"


class DecisionIn(Schema):
    # The operator on record is the authenticated principal, never a body field.
    note: Annotated[str, text(0, 500)] = ""


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
    status: StepStatus
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="`<code>: <short safe message>`, never raw text")
    error_code: str | None = None
    note: str | None = Field(default=None, examples=["cancel ignored past the pivot"])


class CompensationOut(Schema):
    name: str
    status: CompensationStatus
    rounds: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_code: str | None = None


class OrderStatusOut(Schema):
    order_id: str
    customer_id: str
    status: OrderState
    failure_reason: FailureReason | None
    current_step: str | None
    total_cents: int | None
    tracking_number: str | None
    cancel_requested: bool
    cancel_ignored: bool = Field(
        default=False, description="a Temporal cancel request came past the pivot: ignored"
    )
    steps: list[StepOut]
    compensations: list[CompensationOut]
    created_at: datetime | None
    updated_at: datetime | None
    trace_id: str | None = Field(
        default=None,
        description=(
            "the saga's OpenTelemetry trace (32 hex digits), begun by the POST that started "
            "it; null when tracing was off then. Filled in by GET /orders/{id} only"
        ),
        examples=["4bf92f3577b34da6a3ce929d0e0e4736"],
    )

    @classmethod
    def of(cls, status: Any, trace_id: str | None = None) -> OrderStatusOut:
        out = cls.model_validate(status, from_attributes=True)
        return out.model_copy(update={"trace_id": trace_id})


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
    status: Literal["ok"] = "ok"


class ErrorBody(Schema):
    detail: str


class FieldError(Schema):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(Schema):
    detail: str
    # Empty when the refusal is about the request as a whole (an Idempotency-Key reused
    # with another body, a page_token this API did not issue), not about one field.
    errors: list[FieldError] = Field(default_factory=list)


# --- coordination and chaos drills -----------------------------------------------------------


# One model per action, told apart by `action`: the schema itself says that trip and reset
# name one of the services and that intake actions name none. Not one model per kind: a
# discriminator mapping two tags to one schema is read as its last tag alone by some
# OpenAPI tools (schemathesis 4.32 among them, which then called "trip" invalid).
ServiceName = StrEnum("ServiceName", {name: name for name in SERVICES})  # type: ignore[misc]


class CircuitActionIn(Schema):
    service: Annotated[ServiceName, Field(examples=["payments"])]
    reason: Annotated[str | None, text(0, 200)] = None


class TripIn(CircuitActionIn):
    action: Annotated[Literal["trip"], Field(description="open one service's circuit")]


class ResetIn(CircuitActionIn):
    action: Annotated[Literal["reset"], Field(description="close one service's circuit")]


class IntakeActionIn(Schema):
    reason: Annotated[str | None, text(0, 200)] = None


class PauseIntakeIn(IntakeActionIn):
    action: Annotated[Literal["pause_intake"], Field(description="refuse new orders (503)")]


class ResumeIntakeIn(IntakeActionIn):
    action: Annotated[Literal["resume_intake"], Field(description="accept new orders again")]


OperateIn = Annotated[
    TripIn | ResetIn | PauseIntakeIn | ResumeIntakeIn, Field(discriminator="action")
]


class FaultIn(Schema):
    error_ratio: Annotated[
        float,  # strict: a JSON 1 is 1.0, but a false is no share at all
        Field(ge=0.0, le=1.0, strict=True, description="share of calls that fail (0.0 to 1.0)"),
    ]
    latency_ms: Annotated[
        int, Field(ge=0, le=60_000, strict=True, description="added to every call"), INTEGRAL
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
