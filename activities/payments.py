"""Payments service: authorize, capture, void and refund, in its own database.

Test cards (README, "Test fixtures"): `tok_visa` succeeds, `tok_decline` is declined
(non-retryable), `tok_flaky` fails transiently on its first two attempts, then succeeds.

Returns: partial refunds of a captured payment, one per return, never adding up to more
than was captured (the payment's row is locked while a refund is checked and recorded).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

from sqlalchemy import func
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
    PaymentStatus,
    RefundOutcome,
    RefundPaymentInput,
    RefundPaymentResult,
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


TABLES = [Payment, Refund, IdempotencyRecord]


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


def _payment(session: Session, key: str) -> Payment | None:
    return session.exec(select(Payment).where(Payment.authorization_key == key)).first()
