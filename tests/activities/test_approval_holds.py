"""The approval-hold ledger (payments): what one customer may hold for approval at once.

On SQLite and PostgreSQL. The caps bound both the count and the value of a customer's
holds, and they hold when a dozen orders of one customer ask for a hold at the same moment:
the check and the record are one transaction, serialized per customer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError

from activities.payments import ApprovalHold, PaymentActivities
from common.db import SessionFactory
from workflows.models import (
    BusinessError,
    HoldForApprovalInput,
    HoldForApprovalResult,
    HoldStatus,
    ReleaseApprovalHoldInput,
)

AMOUNT = 200_000  # above the default approval threshold, as a held order's total is
NO_VALUE_CAP = 10**12


def hold(
    order: str,
    *,
    customer: str = "c-1",
    amount: int = AMOUNT,
    caps: tuple[int, int] = (3, NO_VALUE_CAP),
) -> HoldForApprovalInput:
    """Order `order`'s hold; `caps` are the customer's most orders and most cents held."""
    return HoldForApprovalInput(
        idempotency_key=f"{order}:n:hold_for_approval",
        order_id=order,
        customer_id=customer,
        authorization_key=f"{order}:n:authorize_payment",
        amount_cents=amount,
        max_held_orders=caps[0],
        max_held_cents=caps[1],
    )


def release(order: str, key: str | None = None) -> ReleaseApprovalHoldInput:
    return ReleaseApprovalHoldInput(
        idempotency_key=key or f"{order}:n:hold_for_approval:undo",
        hold_key=f"{order}:n:hold_for_approval",
        order_id=order,
    )


def refused(call: Callable[[], object]) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        call()
    return raised.value


def held_rows(open_session: SessionFactory) -> list[ApprovalHold]:
    with open_session() as session:
        return list(
            session.exec(select(ApprovalHold).where(ApprovalHold.status == HoldStatus.HELD)).all()
        )


def test_holds_up_to_the_count_cap_then_refuses_for_good(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)

    answers = [service.hold_for_approval(hold(f"o{n}")) for n in range(1, 4)]
    error = refused(lambda: service.hold_for_approval(hold("o4")))

    assert [(a.held_orders, a.held_cents) for a in answers] == [
        (1, AMOUNT),
        (2, 2 * AMOUNT),
        (3, 3 * AMOUNT),
    ]
    assert error.type == BusinessError.HOLD_LIMIT
    assert error.non_retryable
    assert "3 orders worth 600000 cents" in str(error)
    assert error.details[0] == {
        "held_orders": 3,
        "held_cents": 3 * AMOUNT,
        "amount_cents": AMOUNT,
        "max_held_orders": 3,
        "max_held_cents": NO_VALUE_CAP,
    }
    assert sorted(h.order_id for h in held_rows(payments_db)) == ["o1", "o2", "o3"]
    # The cap is per customer: another one still has all of theirs.
    assert service.hold_for_approval(hold("o5", customer="c-2")).held_orders == 1


def test_the_value_cap_bounds_what_fewer_orders_hold(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    caps = (10, 500_000)

    assert service.hold_for_approval(hold("o1", amount=300_000, caps=caps)).held_cents == 300_000
    error = refused(lambda: service.hold_for_approval(hold("o2", amount=200_001, caps=caps)))
    exactly = service.hold_for_approval(hold("o3", amount=200_000, caps=caps))

    assert error.type == BusinessError.HOLD_LIMIT
    assert (exactly.held_orders, exactly.held_cents) == (2, 500_000)
    assert sorted(h.order_id for h in held_rows(payments_db)) == ["o1", "o3"]


def test_a_repeated_hold_returns_the_first_answer(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    first = service.hold_for_approval(hold("o1"))
    service.hold_for_approval(hold("o2"))

    # Same key, later and with other values: the first answer, and no second slot.
    again = service.hold_for_approval(hold("o1", amount=1, caps=(1, NO_VALUE_CAP)))

    assert again == first == HoldForApprovalResult(held_orders=1, held_cents=AMOUNT)
    assert len(held_rows(payments_db)) == 2


def test_a_release_frees_a_slot_once(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    for n in range(1, 4):
        service.hold_for_approval(hold(f"o{n}"))
    assert refused(lambda: service.hold_for_approval(hold("o4"))).type == BusinessError.HOLD_LIMIT

    assert service.release_approval_hold(release("o2")).released
    assert service.release_approval_hold(release("o2")).released  # same key: first result
    assert not service.release_approval_hold(release("o2", key="o2:again")).released

    # The refused attempt left nothing behind: its retry is judged afresh, and fits now.
    assert service.hold_for_approval(hold("o4")).held_orders == 3
    assert sorted(h.order_id for h in held_rows(payments_db)) == ["o1", "o3", "o4"]


def test_a_release_before_the_hold_leaves_a_tombstone(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)

    # The saga gave up before its hold ran; the hold attempt arrives late.
    assert not service.release_approval_hold(release("o1")).released
    late = service.hold_for_approval(hold("o1", caps=(1, NO_VALUE_CAP)))

    assert (late.held_orders, late.held_cents) == (0, 0)
    assert held_rows(payments_db) == []
    # It took no slot: with a cap of one, the next order is still held.
    assert service.hold_for_approval(hold("o2", caps=(1, NO_VALUE_CAP))).held_orders == 1


@pytest.mark.parametrize(
    "caps",
    [
        pytest.param((3, NO_VALUE_CAP), id="count"),
        pytest.param((100, 3 * AMOUNT), id="value"),
    ],
)
def test_a_dozen_parallel_holds_of_one_customer_keep_the_cap(
    payments_db: SessionFactory, caps: tuple[int, int]
) -> None:
    service = PaymentActivities(payments_db)

    outcomes = _all_at_once(12, lambda n: service.hold_for_approval(hold(f"o{n}", caps=caps)))

    held = [o for o in outcomes if isinstance(o, HoldForApprovalResult)]
    refusals = [o for o in outcomes if isinstance(o, ApplicationError)]
    assert sorted(h.held_orders for h in held) == [1, 2, 3]
    assert len(refusals) == 9
    assert {r.type for r in refusals} == {BusinessError.HOLD_LIMIT}
    assert len(held_rows(payments_db)) == 3


def _all_at_once(
    threads: int, call: Callable[[int], HoldForApprovalResult]
) -> list[HoldForApprovalResult | ApplicationError]:
    """Each call in its own thread, all released by one barrier at the same moment."""
    barrier = threading.Barrier(threads)

    def attempt(n: int) -> HoldForApprovalResult | ApplicationError:
        barrier.wait()
        try:
            return call(n)
        except ApplicationError as err:
            return err

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(attempt, range(threads)))
