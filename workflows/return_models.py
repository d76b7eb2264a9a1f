"""Dataclasses of the returns saga: its input and status, and its steps' ins and outs.

Pure data, like workflows/models.py, so workflow code, services and the API share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from workflows.models import OrderItem, TaskQueues
from workflows.saga import CompensationRecord
from workflows.steps import StepRecord


class ReturnState(StrEnum):
    # Running: the label is issued (or being issued) and the warehouse waits for the parcel.
    AWAITING_PARCEL = "AWAITING_PARCEL"
    # Running: the parcel is in; restocking and refunding, forward only.
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"
    # No parcel within the parcel timeout: the label is cancelled, the claim released.
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    # Needs an operator when a refund or a compensation failed for good (the saga then
    # stays open for `retry`); else refused (see `failure_reason`) and closed.
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (
            ReturnState.REFUNDED,
            ReturnState.EXPIRED,
            ReturnState.CANCELLED,
            ReturnState.FAILED,
        )


class ReturnFailure(StrEnum):
    # More than the order has left to return: bought minus what other returns claim.
    EXCEEDS_ORDER = "EXCEEDS_ORDER"
    # The order has nothing a return could undo (no reservation, parcel or capture).
    NOT_RETURNABLE = "NOT_RETURNABLE"
    PARCEL_TIMEOUT = "PARCEL_TIMEOUT"
    CANCELLED_BY_CUSTOMER = "CANCELLED_BY_CUSTOMER"
    INVALID_INPUT = "INVALID_INPUT"
    STEP_EXHAUSTED = "STEP_EXHAUSTED"
    # The refund (or the restock) failed for good past the pivot: an operator retries it.
    REFUND_FAILED = "REFUND_FAILED"


class ReturnError:
    """Stable `ApplicationError.type` values the services raise for returns."""

    EXCEEDS_ORDER = "ReturnExceedsOrder"
    NOT_RETURNABLE = "NotReturnable"
    REFUND_EXCEEDS_CAPTURE = "RefundExceedsCapture"


@dataclass(frozen=True)
class ReturnInput:
    return_id: str
    order_id: str
    customer_id: str
    items: list[OrderItem]
    reason: str
    # Part of every step key, like an order's (ARCHITECTURE.md, "Saga rules", rule 2).
    nonce: str
    # Carried in the input, not read from settings, so replays see the same values.
    parcel_timeout_s: int = 14 * 24 * 3600
    step_timeout_s: int = 30
    step_max_attempts: int = 20
    step_heartbeat_timeout_s: int = 5
    task_queues: TaskQueues = field(default_factory=TaskQueues)
    # The order's reservation (its `OrderStatus.reservation_id`): the purchase the claim
    # takes back of, so an order ID reused after retention never shares claims. Optional
    # and last, so inputs recorded before it existed still decode (they claim by order ID).
    reservation_id: str | None = None


@dataclass
class ReturnStatus:
    return_id: str
    order_id: str
    customer_id: str
    items: list[OrderItem] = field(default_factory=list)
    reason: str = ""
    status: ReturnState = ReturnState.AWAITING_PARCEL
    failure_reason: ReturnFailure | None = None
    current_step: str | None = None
    # The order's captured amount the returned items account for, known once claimed.
    refund_cents: int | None = None
    tracking_number: str | None = None
    received: bool = False
    cancel_requested: bool = False
    cancel_ignored: bool = False
    steps: list[StepRecord] = field(default_factory=list)
    compensations: list[CompensationRecord] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ReceiveRequest:
    operator: str = "operator"
    note: str = ""


# --- inventory: the claim ledger and the restock -------------------------------------------


class ClaimStatus(StrEnum):
    CLAIMED = "claimed"
    # Cancelled or expired before receipt: its quantities are returnable again.
    RELEASED = "released"
    RESTOCKED = "restocked"


@dataclass(frozen=True)
class ClaimReturnInput:
    idempotency_key: str
    order_id: str
    return_id: str
    items: list[OrderItem]
    # The purchase to take back of; None (a return started before it was carried) claims
    # against the order's latest reservation. Last, so recorded inputs still decode.
    reservation_id: str | None = None


@dataclass(frozen=True)
class ClaimReturnResult:
    claim_id: str
    refund_cents: int
    attempt: int = 1


@dataclass(frozen=True)
class ReleaseReturnClaimInput:
    idempotency_key: str
    claim_key: str
    order_id: str
    return_id: str


@dataclass(frozen=True)
class ReleaseReturnClaimResult:
    released: bool


@dataclass(frozen=True)
class RestockItemsInput:
    idempotency_key: str
    claim_key: str
    return_id: str


@dataclass(frozen=True)
class RestockItemsResult:
    restocked: int
    attempt: int = 1


# --- shipping: the return label -----------------------------------------------------------


class LabelStatus(StrEnum):
    ISSUED = "issued"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class IssueReturnLabelInput:
    idempotency_key: str
    order_id: str
    return_id: str


@dataclass(frozen=True)
class IssueReturnLabelResult:
    label_id: str
    tracking_number: str
    attempt: int = 1


@dataclass(frozen=True)
class CancelReturnLabelInput:
    idempotency_key: str
    label_key: str
    order_id: str
    return_id: str


@dataclass(frozen=True)
class CancelReturnLabelResult:
    cancelled: bool


# --- payments: the partial refund ---------------------------------------------------------


@dataclass(frozen=True)
class RefundReturnInput:
    idempotency_key: str
    order_id: str
    return_id: str
    amount_cents: int


@dataclass(frozen=True)
class RefundReturnResult:
    refund_id: str
    amount_cents: int
    attempt: int = 1
