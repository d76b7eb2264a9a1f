"""Payments service: authorize, capture, void and refund, in its own database.

Test cards (DESIGN §5): `tok_visa` succeeds, `tok_decline` is declined (non-retryable),
`tok_flaky` fails transiently on its first two attempts and then succeeds.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

from sqlmodel import Field, Session, SQLModel, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.idempotency import IdempotencyRecord, current_attempt, run_once, utcnow
from common.db import SessionFactory
from workflows.models import (
    AuthorizePaymentInput,
    AuthorizePaymentResult,
    BusinessError,
    CapturePaymentInput,
    CapturePaymentResult,
    RefundPaymentInput,
    RefundPaymentResult,
    VoidPaymentInput,
    VoidPaymentResult,
)

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
    status: str = "authorized"  # authorized | captured | voided | refunded
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


TABLES = [Payment, IdempotencyRecord]


class PaymentActivities:
    def __init__(self, open_session: SessionFactory) -> None:
        self._open_session = open_session

    @activity.defn(name="authorize_payment")
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

    @activity.defn(name="capture_payment")
    def capture_payment(self, input: CapturePaymentInput) -> CapturePaymentResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "capture_payment",
            CapturePaymentResult,
            lambda session: _capture(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @activity.defn(name="void_payment")
    def void_payment(self, input: VoidPaymentInput) -> VoidPaymentResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "void_payment",
            VoidPaymentResult,
            lambda session: _void(session, input),
        )

    @activity.defn(name="refund_payment")
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
    if payment is None or payment.status not in ("authorized", "captured"):
        state = payment.status if payment else "missing"
        raise ApplicationError(
            f"authorization {input.authorization_key!r} is {state}; cannot capture",
            type="NotCapturable",
            non_retryable=True,
        )
    payment.status = "captured"
    payment.updated_at = utcnow()
    session.add(payment)
    return CapturePaymentResult(payment_id=payment.id, status=payment.status)


def _void(session: Session, input: VoidPaymentInput) -> VoidPaymentResult:
    payment = _payment(session, input.authorization_key)
    if payment is None:
        session.add(
            Payment(
                authorization_key=input.authorization_key, order_id=input.order_id, status="voided"
            )
        )
        return VoidPaymentResult(outcome="nothing_to_undo")
    if payment.status in ("voided", "refunded"):
        return VoidPaymentResult(outcome="already_undone")
    outcome = "refunded" if payment.status == "captured" else "voided"
    payment.status = outcome
    payment.updated_at = utcnow()
    session.add(payment)
    return VoidPaymentResult(outcome=outcome)


def _refund(session: Session, input: RefundPaymentInput) -> RefundPaymentResult:
    payment = _payment(session, input.authorization_key)
    if payment is None or payment.status != "captured":
        already = payment is not None and payment.status == "refunded"
        return RefundPaymentResult(outcome="already_refunded" if already else "nothing_to_refund")
    payment.status = "refunded"
    payment.updated_at = utcnow()
    session.add(payment)
    return RefundPaymentResult(outcome="refunded")


def _payment(session: Session, key: str) -> Payment | None:
    return session.exec(select(Payment).where(Payment.authorization_key == key)).first()
