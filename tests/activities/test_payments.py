"""Payment activities: test cards, capture, and the void/refund compensations."""

from __future__ import annotations

import dataclasses

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.payments import Payment, PaymentActivities
from common.db import SessionFactory
from workflows.models import (
    AuthorizePaymentInput,
    BusinessError,
    CapturePaymentInput,
    RefundPaymentInput,
    VoidPaymentInput,
)

AUTH_KEY = "o1:authorize_payment"


def payments(open_session: SessionFactory) -> list[Payment]:
    with open_session() as session:
        return list(session.exec(select(Payment)).all())


def authorize(card: str = "tok_visa", amount: int = 5_000) -> AuthorizePaymentInput:
    return AuthorizePaymentInput(AUTH_KEY, "o1", card, amount)


def capture(key: str = "o1:capture_payment") -> CapturePaymentInput:
    return CapturePaymentInput(key, AUTH_KEY, "o1")


def void(key: str = "o1:authorize_payment:undo") -> VoidPaymentInput:
    return VoidPaymentInput(key, AUTH_KEY, "o1")


def refund(key: str = "o1:refund") -> RefundPaymentInput:
    return RefundPaymentInput(key, AUTH_KEY, "o1")


def on_attempt(attempt: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env


def test_authorize_is_idempotent(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    first = service.authorize_payment(authorize())
    again = service.authorize_payment(authorize(amount=9_999))  # same key: first result

    assert first.status == "authorized"
    assert again == first
    [payment] = payments(payments_db)
    assert (payment.id, payment.amount_cents, payment.status) == (
        first.payment_id,
        5_000,
        "authorized",
    )


def test_declined_card_is_a_non_retryable_business_failure(payments_db: SessionFactory) -> None:
    with pytest.raises(ApplicationError) as raised:
        on_attempt(1).run(
            PaymentActivities(payments_db).authorize_payment, authorize("tok_decline")
        )

    assert raised.value.type == BusinessError.PAYMENT_DECLINED
    assert raised.value.non_retryable
    assert raised.value.details[0] == {"attempt": 1}
    assert payments(payments_db) == []


def test_flaky_card_fails_retryably_twice_then_succeeds(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    for attempt in (1, 2):
        with pytest.raises(ApplicationError) as raised:
            on_attempt(attempt).run(service.authorize_payment, authorize("tok_flaky"))
        assert raised.value.type == "GatewayUnavailable"
        assert not raised.value.non_retryable
        assert payments(payments_db) == []

    result = on_attempt(3).run(service.authorize_payment, authorize("tok_flaky"))

    assert (result.status, result.attempt) == ("authorized", 3)
    assert len(payments(payments_db)) == 1


def test_capture_is_idempotent(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    service.authorize_payment(authorize())
    first = service.capture_payment(capture())
    again = service.capture_payment(capture())

    assert first.status == "captured"
    assert again == first
    assert [p.status for p in payments(payments_db)] == ["captured"]


def test_capture_of_a_voided_authorization_is_refused(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    service.authorize_payment(authorize())
    service.void_payment(void())

    with pytest.raises(ApplicationError) as raised:
        service.capture_payment(capture())

    assert (raised.value.type, raised.value.non_retryable) == ("NotCapturable", True)
    assert [p.status for p in payments(payments_db)] == ["voided"]


def test_void_undoes_an_authorization_once(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    service.authorize_payment(authorize())

    assert service.void_payment(void()).outcome == "voided"
    assert service.void_payment(void()).outcome == "voided"  # same key: first result
    assert service.void_payment(void("o1:void-again")).outcome == "already_undone"
    assert [p.status for p in payments(payments_db)] == ["voided"]


def test_void_after_capture_refunds(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    service.authorize_payment(authorize())
    service.capture_payment(capture())

    assert service.void_payment(void()).outcome == "refunded"
    assert [p.status for p in payments(payments_db)] == ["refunded"]


def test_void_with_nothing_authorized_is_a_no_op_that_blocks_a_late_authorize(
    payments_db: SessionFactory,
) -> None:
    service = PaymentActivities(payments_db)

    assert service.void_payment(void()).outcome == "nothing_to_undo"

    late = service.authorize_payment(authorize())

    assert late.status == "voided"
    [tombstone] = payments(payments_db)
    assert (tombstone.id, tombstone.status, tombstone.amount_cents) == (
        late.payment_id,
        "voided",
        0,
    )


def test_refund_payment(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    assert service.refund_payment(refund("o1:refund-0")).outcome == "nothing_to_refund"
    service.authorize_payment(authorize())
    assert service.refund_payment(refund("o1:refund-1")).outcome == "nothing_to_refund"
    assert [p.status for p in payments(payments_db)] == ["authorized"]
    service.capture_payment(capture())

    assert service.refund_payment(refund("o1:refund-2")).outcome == "refunded"
    assert service.refund_payment(refund("o1:refund-2")).outcome == "refunded"  # same key
    assert service.refund_payment(refund("o1:refund-3")).outcome == "already_refunded"
    assert [p.status for p in payments(payments_db)] == ["refunded"]
