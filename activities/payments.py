"""Payments service: authorize, capture, void and refund, in its own database.

Test cards (README, "Test fixtures"): `tok_visa` succeeds, `tok_decline` is declined
(non-retryable), `tok_flaky` fails transiently on its first two attempts, then succeeds.

Returns: partial refunds of a captured payment, one per return, never adding up to more
than was captured (the payment's row is locked while a refund is checked and recorded).

Approval holds: an order above the approval threshold holds its authorization for an
operator's decision. The hold ledger caps what one customer may hold at once, by count and
by value, checked and recorded in one transaction serialized per customer, so parallel
orders cannot all slip under the cap (a check against Temporal's visibility cannot see
the others in time). A held order is an authorization waiting for a decision, so its
ledger lives here, beside the authorization.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import Executable
from sqlmodel import AutoString, Field, Session, SQLModel, col, select
from temporalio.exceptions import ApplicationError

from activities.idempotency import (
    IdempotencyRecord,
    current_attempt,
    run_once,
    service_activity,
    utcnow,
)
from common.db import SessionFactory
from workflows.models import (
    AuthorizePaymentInput,
    AuthorizePaymentResult,
    BusinessError,
    CapturePaymentInput,
    CapturePaymentResult,
    HoldForApprovalInput,
    HoldForApprovalResult,
    HoldStatus,
    PaymentStatus,
    RefundOutcome,
    RefundPaymentInput,
    RefundPaymentResult,
    ReleaseApprovalHoldInput,
    ReleaseApprovalHoldResult,
    VoidOutcome,
    VoidPaymentInput,
    VoidPaymentResult,
)
from workflows.return_models import RefundReturnInput, RefundReturnResult, ReturnError

DECLINED_CARD = "tok_decline"
FLAKY_CARD = "tok_flaky"
FLAKY_FAILURES = 2


class Payment(SQLModel, table=True):
    __tablename__ = "payments_payment"

    id: str = Field(primary_key=True, default_factory=lambda: f"pay-{uuid.uuid4().hex[:12]}")
    # The authorize step's idempotency key: one authorization per saga, ever.
    authorization_key: str = Field(unique=True, max_length=300)
    order_id: str = Field(index=True, max_length=200)
    card_token: str = ""
    amount_cents: int = 0
    # A plain string column (the schema of the migrations); the values are PaymentStatus.
    status: PaymentStatus = Field(default=PaymentStatus.AUTHORIZED, sa_type=AutoString)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Refund(SQLModel, table=True):
    """A partial refund of a captured payment, for one return."""

    __tablename__ = "payments_refund"

    id: str = Field(primary_key=True, default_factory=lambda: f"ref-{uuid.uuid4().hex[:12]}")
    # The refund step's idempotency key: one refund per return, ever.
    refund_key: str = Field(unique=True, max_length=300)
    order_id: str = Field(index=True, max_length=200)
    return_id: str = Field(max_length=200)
    payment_id: str = Field(index=True, max_length=64)
    amount_cents: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class ApprovalHold(SQLModel, table=True):
    """An order held for an operator's decision: one slot of its customer's caps."""

    __tablename__ = "payments_approval_hold"

    id: str = Field(primary_key=True, default_factory=lambda: f"hld-{uuid.uuid4().hex[:12]}")
    # The hold step's idempotency key: one hold per saga, ever.
    hold_key: str = Field(unique=True, max_length=300)
    # Empty on a release's tombstone, which knows only the key (and counts for no one).
    customer_id: str = Field(index=True, max_length=200)
    order_id: str = Field(max_length=200)
    authorization_key: str = Field(default="", max_length=300)
    amount_cents: int = 0
    # A plain string column (the schema of the migrations); the values are HoldStatus.
    status: HoldStatus = Field(default=HoldStatus.HELD, sa_type=AutoString)
    created_at: datetime = Field(default_factory=utcnow)
    released_at: datetime | None = None


class CustomerHoldLock(SQLModel, table=True):
    """One row per customer who ever held an order: locked while a hold is checked.

    Counting a customer's holds and adding one must not interleave with another order's.
    SQLite transactions here are serialized anyway (common/db.py, BEGIN IMMEDIATE); on
    PostgreSQL this row, taken FOR UPDATE, serializes the holds of one customer only.
    """

    __tablename__ = "payments_customer_hold"

    customer_id: str = Field(primary_key=True, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


TABLES = [Payment, Refund, ApprovalHold, CustomerHoldLock, IdempotencyRecord]


class PaymentActivities:
    def __init__(self, open_session: SessionFactory) -> None:
        self._open_session = open_session

    @service_activity("authorize_payment")
    def authorize_payment(self, input: AuthorizePaymentInput) -> AuthorizePaymentResult:
        attempt = current_attempt()
        if input.card_token == FLAKY_CARD and attempt <= FLAKY_FAILURES:
            raise ApplicationError(
                f"payment gateway unavailable (attempt {attempt})", type="GatewayUnavailable"
            )
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "authorize_payment",
            AuthorizePaymentResult,
            lambda session: _authorize(session, input, attempt),
        )
        return dataclasses.replace(result, attempt=attempt)

    @service_activity("capture_payment")
    def capture_payment(self, input: CapturePaymentInput) -> CapturePaymentResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "capture_payment",
            CapturePaymentResult,
            lambda session: _capture(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @service_activity("void_payment")
    def void_payment(self, input: VoidPaymentInput) -> VoidPaymentResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "void_payment",
            VoidPaymentResult,
            lambda session: _void(session, input),
        )

    @service_activity("refund_return")
    def refund_return(self, input: RefundReturnInput) -> RefundReturnResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "refund_return",
            RefundReturnResult,
            lambda session: _refund_return(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @service_activity("hold_for_approval")
    def hold_for_approval(self, input: HoldForApprovalInput) -> HoldForApprovalResult:
        """Hold an authorization for approval, if the customer's caps leave room for it.

        Args:
            input: The order, its customer and authorization, its amount and the caps.

        Returns:
            The customer's holds and their value now, this one included (a repeat returns
            the first answer).

        Raises:
            ApplicationError: `BusinessError.HOLD_LIMIT`, non-retryable, when this hold
                would take the customer past either cap.
        """
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "hold_for_approval",
            HoldForApprovalResult,
            lambda session: _hold(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @service_activity("release_approval_hold")
    def release_approval_hold(self, input: ReleaseApprovalHoldInput) -> ReleaseApprovalHoldResult:
        """Give a hold's slot back: the order was decided, cancelled or rolled back.

        Args:
            input: The hold's key (the hold step's idempotency key) and its order.

        Returns:
            Whether this call released a hold; False when it was released before or never
            taken (then a tombstone keeps a late hold attempt from taking a slot).
        """
        return run_once(
            self._open_session,
            input.idempotency_key,
            "release_approval_hold",
            ReleaseApprovalHoldResult,
            lambda session: _release_hold(session, input),
        )

    @service_activity("refund_payment")
    def refund_payment(self, input: RefundPaymentInput) -> RefundPaymentResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "refund_payment",
            RefundPaymentResult,
            lambda session: _refund(session, input),
        )


def _authorize(
    session: Session, input: AuthorizePaymentInput, attempt: int
) -> AuthorizePaymentResult:
    existing = _payment(session, input.idempotency_key)
    if existing is not None:
        # A void already left a tombstone: the saga rolled back before this step ran.
        return AuthorizePaymentResult(payment_id=existing.id, status=existing.status)
    if input.card_token == DECLINED_CARD:
        raise ApplicationError(
            "card declined by issuer",
            {"attempt": attempt},
            type=BusinessError.PAYMENT_DECLINED,
            non_retryable=True,
        )
    payment = Payment(
        authorization_key=input.idempotency_key,
        order_id=input.order_id,
        card_token=input.card_token,
        amount_cents=input.amount_cents,
    )
    session.add(payment)
    return AuthorizePaymentResult(payment_id=payment.id, status=payment.status)


def _capture(session: Session, input: CapturePaymentInput) -> CapturePaymentResult:
    payment = _payment(session, input.authorization_key)
    if payment is None or payment.status not in (PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED):
        state = payment.status if payment else "missing"
        raise ApplicationError(
            f"authorization {input.authorization_key!r} is {state}; cannot capture",
            type="NotCapturable",
            non_retryable=True,
        )
    payment.status = PaymentStatus.CAPTURED
    payment.updated_at = utcnow()
    session.add(payment)
    return CapturePaymentResult(payment_id=payment.id, status=payment.status)


def _void(session: Session, input: VoidPaymentInput) -> VoidPaymentResult:
    payment = _payment(session, input.authorization_key)
    if payment is None:
        session.add(
            Payment(
                authorization_key=input.authorization_key,
                order_id=input.order_id,
                status=PaymentStatus.VOIDED,
            )
        )
        return VoidPaymentResult(outcome=VoidOutcome.NOTHING_TO_UNDO)
    if payment.status in (PaymentStatus.VOIDED, PaymentStatus.REFUNDED):
        return VoidPaymentResult(outcome=VoidOutcome.ALREADY_UNDONE)
    captured = payment.status == PaymentStatus.CAPTURED
    payment.status = PaymentStatus.REFUNDED if captured else PaymentStatus.VOIDED
    payment.updated_at = utcnow()
    session.add(payment)
    return VoidPaymentResult(outcome=VoidOutcome.REFUNDED if captured else VoidOutcome.VOIDED)


def _refund(session: Session, input: RefundPaymentInput) -> RefundPaymentResult:
    payment = _payment(session, input.authorization_key)
    if payment is None or payment.status != PaymentStatus.CAPTURED:
        already = payment is not None and payment.status == PaymentStatus.REFUNDED
        outcome = RefundOutcome.ALREADY_REFUNDED if already else RefundOutcome.NOTHING_TO_REFUND
        return RefundPaymentResult(outcome=outcome)
    payment.status = PaymentStatus.REFUNDED
    payment.updated_at = utcnow()
    session.add(payment)
    return RefundPaymentResult(outcome=RefundOutcome.REFUNDED)


def _refund_return(session: Session, input: RefundReturnInput) -> RefundReturnResult:
    # Locked, so two returns of one order refunding at once see each other's refunds.
    payment = session.exec(
        select(Payment)
        .where(Payment.order_id == input.order_id, Payment.status == PaymentStatus.CAPTURED)
        .order_by(col(Payment.created_at).desc())
        .with_for_update()
    ).first()
    if payment is None:
        raise ApplicationError(
            f"order {input.order_id} has no captured payment to refund",
            type=ReturnError.NOT_RETURNABLE,
            non_retryable=True,
        )
    refunded = session.exec(
        select(func.coalesce(func.sum(Refund.amount_cents), 0)).where(
            Refund.payment_id == payment.id
        )
    ).one()
    if refunded + input.amount_cents > payment.amount_cents:
        raise ApplicationError(
            f"refund of {input.amount_cents} after {refunded} refunded exceeds the capture",
            {"captured": payment.amount_cents, "refunded": refunded},
            type=ReturnError.REFUND_EXCEEDS_CAPTURE,
            non_retryable=True,
        )
    refund = Refund(
        refund_key=input.idempotency_key,
        order_id=input.order_id,
        return_id=input.return_id,
        payment_id=payment.id,
        amount_cents=input.amount_cents,
    )
    session.add(refund)
    return RefundReturnResult(refund_id=refund.id, amount_cents=refund.amount_cents)


# --- approval holds -------------------------------------------------------------------------


def _hold(session: Session, input: HoldForApprovalInput) -> HoldForApprovalResult:
    _lock_customer(session, input.customer_id)
    held_orders, held_cents = _held(session, input.customer_id)
    if _approval_hold(session, input.idempotency_key) is not None:
        # A release already left a tombstone: the saga gave up before this step ran, so
        # it takes no slot now.
        return HoldForApprovalResult(held_orders=held_orders, held_cents=held_cents)
    orders_after, cents_after = held_orders + 1, held_cents + input.amount_cents
    if orders_after > input.max_held_orders or cents_after > input.max_held_cents:
        raise ApplicationError(
            f"{held_orders} orders worth {held_cents} cents already wait for approval; "
            f"this one ({input.amount_cents} cents) would pass the cap of "
            f"{input.max_held_orders} orders or {input.max_held_cents} cents",
            {
                "held_orders": held_orders,
                "held_cents": held_cents,
                "amount_cents": input.amount_cents,
                "max_held_orders": input.max_held_orders,
                "max_held_cents": input.max_held_cents,
            },
            type=BusinessError.HOLD_LIMIT,
            non_retryable=True,
        )
    session.add(
        ApprovalHold(
            hold_key=input.idempotency_key,
            customer_id=input.customer_id,
            order_id=input.order_id,
            authorization_key=input.authorization_key,
            amount_cents=input.amount_cents,
        )
    )
    return HoldForApprovalResult(held_orders=orders_after, held_cents=cents_after)


def _release_hold(session: Session, input: ReleaseApprovalHoldInput) -> ReleaseApprovalHoldResult:
    hold = _approval_hold(session, input.hold_key)
    if hold is None:
        # Nothing held (yet). Leave a released tombstone so that a hold attempt still in
        # flight cannot take a slot after the saga gave up on it.
        session.add(
            ApprovalHold(
                hold_key=input.hold_key,
                customer_id="",
                order_id=input.order_id,
                status=HoldStatus.RELEASED,
                released_at=utcnow(),
            )
        )
        return ReleaseApprovalHoldResult(released=False)
    if hold.status == HoldStatus.RELEASED:
        return ReleaseApprovalHoldResult(released=False)
    hold.status = HoldStatus.RELEASED
    hold.released_at = utcnow()
    session.add(hold)
    return ReleaseApprovalHoldResult(released=True)


def _lock_customer(session: Session, customer_id: str) -> None:
    """Serialize this transaction with every other hold of the same customer.

    The row is created on the customer's first hold; ON CONFLICT DO NOTHING makes a
    concurrent first hold wait for that insert instead of failing on the primary key.
    """
    row = {"customer_id": customer_id, "created_at": utcnow()}
    upsert: Executable
    # The two databases a service may use (common/db.py).
    if session.get_bind().dialect.name == "postgresql":
        upsert = postgresql.insert(CustomerHoldLock).values(row).on_conflict_do_nothing()
    else:
        upsert = sqlite.insert(CustomerHoldLock).values(row).on_conflict_do_nothing()
    session.execute(upsert)
    session.exec(
        select(CustomerHoldLock)
        .where(CustomerHoldLock.customer_id == customer_id)
        .with_for_update()
    ).one()


def _held(session: Session, customer_id: str) -> tuple[int, int]:
    """The customer's active holds: how many, and their value."""
    count, cents = session.exec(
        select(func.count(), func.coalesce(func.sum(ApprovalHold.amount_cents), 0)).where(
            ApprovalHold.customer_id == customer_id, ApprovalHold.status == HoldStatus.HELD
        )
    ).one()
    return count, cents


def _approval_hold(session: Session, key: str) -> ApprovalHold | None:
    return session.exec(select(ApprovalHold).where(ApprovalHold.hold_key == key)).first()


def _payment(session: Session, key: str) -> Payment | None:
    return session.exec(select(Payment).where(Payment.authorization_key == key)).first()
