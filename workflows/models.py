"""Dataclasses that cross the workflow/activity boundary: one in and one out per call.

Pure data, no I/O, so both workflow code (sandboxed) and service code can import them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# Their home is the saga toolkit; re-exported because the statuses below carry them.
from workflows.saga import CompensationRecord as CompensationRecord
from workflows.steps import StepRecord as StepRecord


class OrderState(StrEnum):
    PENDING = "PENDING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (OrderState.COMPLETED, OrderState.COMPENSATED, OrderState.FAILED)


class FailureReason(StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    UNDELIVERABLE = "UNDELIVERABLE"
    CANCELLED_BY_CUSTOMER = "CANCELLED_BY_CUSTOMER"
    APPROVAL_TIMEOUT = "APPROVAL_TIMEOUT"
    REJECTED_BY_OPERATOR = "REJECTED_BY_OPERATOR"
    # A poison pill: a service refused a value of this order, which no retry can fix.
    INVALID_INPUT = "INVALID_INPUT"
    # A step kept failing until its retry ceiling (OrderInput.step_max_attempts).
    STEP_EXHAUSTED = "STEP_EXHAUSTED"
    # The customer already holds the most orders (or value) waiting for approval at once.
    HOLD_LIMIT_REACHED = "HOLD_LIMIT_REACHED"
    # The capture, past the pivot, failed for good: the order waits FAILED for an operator.
    CAPTURE_FAILED = "CAPTURE_FAILED"


class BusinessError:
    """Stable `ApplicationError.type` values for non-retryable business failures."""

    OUT_OF_STOCK = "OutOfStock"
    PAYMENT_DECLINED = "PaymentDeclined"
    UNDELIVERABLE = "Undeliverable"
    # The service's database (or its decoder) refused a value: retrying cannot help.
    INVALID_INPUT = "InvalidInput"
    # The customer's orders waiting for approval are at their cap (count or value).
    HOLD_LIMIT = "HoldLimitReached"


# --- order input -------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderItem:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str


@dataclass(frozen=True)
class TaskQueues:
    inventory: str = "inventory"
    payments: str = "payments"
    shipping: str = "shipping"
    notifications: str = "notifications"


@dataclass(frozen=True)
class OrderInput:
    order_id: str
    customer_id: str
    items: list[OrderItem]
    card_token: str
    shipping_address: Address
    # Carried in the input, not read from settings, so replays see the same values.
    approval_threshold_cents: int = 100_000
    approval_timeout_s: int = 3600
    step_timeout_s: int = 30
    # The optional confirmation step gives up after this long; the order completes anyway.
    notification_timeout_s: int = 10
    task_queues: TaskQueues = field(default_factory=TaskQueues)
    # Steps before the pivot give up after this many attempts and the saga rolls back.
    step_max_attempts: int = 20
    # A step whose worker stops heartbeating this long is retried elsewhere (0: off).
    step_heartbeat_timeout_s: int = 5
    # Chosen by the API per order and part of every step's idempotency key, so a later
    # order reusing this workflow ID (after retention deleted this history) shares no key.
    # Last, and optional, so inputs recorded before it existed still decode.
    nonce: str | None = None
    # The caps on what one customer may have waiting for approval at once, enforced by the
    # payments service's hold ledger (serialized per customer), not by visibility.
    max_held_orders: int = 3
    max_held_cents: int = 1_000_000


# --- order status (the `status` query and the workflow result) ----------------------------


@dataclass
class OrderStatus:
    order_id: str
    customer_id: str
    status: OrderState = OrderState.PENDING
    failure_reason: FailureReason | None = None
    current_step: str | None = None
    total_cents: int | None = None
    tracking_number: str | None = None
    cancel_requested: bool = False
    steps: list[StepRecord] = field(default_factory=list)
    compensations: list[CompensationRecord] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # A Temporal cancel request arrived once the shipment existed: recorded, not obeyed.
    cancel_ignored: bool = False
    # The inventory reservation this order bought: its returns claim against it, never
    # against the order ID, which a later order may reuse once retention deleted this one.
    reservation_id: str | None = None


@dataclass(frozen=True)
class CancelRequest:
    reason: str = "customer request"


@dataclass(frozen=True)
class RetryCompensationsRequest:
    operator: str = "operator"


@dataclass(frozen=True)
class ApprovalDecision:
    approved: bool
    operator: str = "operator"
    note: str = ""


# --- what the services' rows and answers say (their wire and column values) -------------


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    RELEASED = "released"


class PaymentStatus(StrEnum):
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"


class ShipmentStatus(StrEnum):
    CREATED = "created"
    CANCELLED = "cancelled"


class VoidOutcome(StrEnum):
    VOIDED = "voided"
    REFUNDED = "refunded"
    NOTHING_TO_UNDO = "nothing_to_undo"
    ALREADY_UNDONE = "already_undone"


class RefundOutcome(StrEnum):
    REFUNDED = "refunded"
    NOTHING_TO_REFUND = "nothing_to_refund"
    ALREADY_REFUNDED = "already_refunded"


# --- inventory -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReserveStockInput:
    idempotency_key: str
    order_id: str
    items: list[OrderItem]


@dataclass(frozen=True)
class ReserveStockResult:
    reservation_id: str
    total_cents: int
    attempt: int = 1


@dataclass(frozen=True)
class ReleaseStockInput:
    idempotency_key: str
    reservation_key: str
    order_id: str


@dataclass(frozen=True)
class ReleaseStockResult:
    released: bool


# --- payments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizePaymentInput:
    idempotency_key: str
    order_id: str
    card_token: str
    amount_cents: int


@dataclass(frozen=True)
class AuthorizePaymentResult:
    payment_id: str
    status: PaymentStatus
    attempt: int = 1


@dataclass(frozen=True)
class CapturePaymentInput:
    idempotency_key: str
    authorization_key: str
    order_id: str


@dataclass(frozen=True)
class CapturePaymentResult:
    payment_id: str
    status: PaymentStatus
    attempt: int = 1


@dataclass(frozen=True)
class VoidPaymentInput:
    """Undo an authorization: void it, or refund it if it was already captured."""

    idempotency_key: str
    authorization_key: str
    order_id: str


@dataclass(frozen=True)
class VoidPaymentResult:
    outcome: VoidOutcome


@dataclass(frozen=True)
class RefundPaymentInput:
    idempotency_key: str
    authorization_key: str
    order_id: str


@dataclass(frozen=True)
class RefundPaymentResult:
    outcome: RefundOutcome


class HoldStatus(StrEnum):
    """An approval hold's row value (payments_approval_hold.status)."""

    HELD = "held"
    RELEASED = "released"


@dataclass(frozen=True)
class HoldForApprovalInput:
    """Hold an authorization for an operator's decision, within the customer's caps."""

    idempotency_key: str
    order_id: str
    customer_id: str
    # The authorize step's key: the authorization being held.
    authorization_key: str
    amount_cents: int
    # This customer's holds at once, this one included.
    max_held_orders: int
    # Their total value held at once, this one included.
    max_held_cents: int


@dataclass(frozen=True)
class HoldForApprovalResult:
    # The customer's holds now, this one included.
    held_orders: int
    held_cents: int
    attempt: int = 1


@dataclass(frozen=True)
class ReleaseApprovalHoldInput:
    idempotency_key: str
    # The hold_for_approval call's idempotency key.
    hold_key: str
    order_id: str


@dataclass(frozen=True)
class ReleaseApprovalHoldResult:
    released: bool


# --- shipping ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateShipmentInput:
    idempotency_key: str
    order_id: str
    address: Address
    items: list[OrderItem]


@dataclass(frozen=True)
class CreateShipmentResult:
    shipment_id: str
    tracking_number: str
    attempt: int = 1


@dataclass(frozen=True)
class CancelShipmentInput:
    idempotency_key: str
    shipment_key: str
    order_id: str


@dataclass(frozen=True)
class CancelShipmentResult:
    cancelled: bool


# --- notifications (an optional step: its failure never fails the saga) --------------------


@dataclass(frozen=True)
class SendConfirmationInput:
    idempotency_key: str
    order_id: str
    customer_id: str
    tracking_number: str | None


@dataclass(frozen=True)
class SendConfirmationResult:
    notification_id: str
    attempt: int = 1


# --- operator: fault injection for chaos drills --------------------------------------------


@dataclass(frozen=True)
class ConfigureFaultInput:
    service: str
    error_ratio: float = 0.0
    latency_ms: int = 0
    # Only this activity type (e.g. "void_payment"); None: every call into the service.
    activity: str | None = None
    # Fail for good, as a provider refusing an operation would; else retryable.
    non_retryable: bool = False
    clear: bool = False


@dataclass(frozen=True)
class FaultState:
    service: str
    error_ratio: float = 0.0
    latency_ms: int = 0
    activity: str | None = None
    non_retryable: bool = False
    # Calls this fault has failed so far: they reached the service and were refused by it.
    injected_errors: int = 0
    updated_at: datetime | None = None

    def applies_to(self, activity_type: str) -> bool:
        return self.activity is None or self.activity == activity_type
