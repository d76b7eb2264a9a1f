"""The services' side of returns: the claim ledger, restocks, labels and partial refunds.

On SQLite and PostgreSQL: the ledger must refuse an over-claim even when returns of one
order claim at the same moment, and payments must never refund more than was captured.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError

from activities.inventory import CATALOGUE, InventoryActivities, Product, ReturnClaim
from activities.payments import PaymentActivities, Refund
from activities.shipping import ReturnLabel, ShippingActivities
from common.db import SessionFactory
from workflows.models import (
    Address,
    AuthorizePaymentInput,
    CapturePaymentInput,
    CreateShipmentInput,
    OrderItem,
    ReserveStockInput,
)
from workflows.return_models import (
    CancelReturnLabelInput,
    ClaimReturnInput,
    ClaimStatus,
    IssueReturnLabelInput,
    LabelStatus,
    RefundReturnInput,
    ReleaseReturnClaimInput,
    RestockItemsInput,
    ReturnError,
)

T = TypeVar("T")
PRICE = {p.sku: p.price_cents for p in CATALOGUE}
STOCK = {p.sku: p.stock for p in CATALOGUE}


def ordered(inventory_db: SessionFactory, order: str, *items: tuple[str, int]) -> int:
    """Reserve an order's items, as its checkout did; returns the order's total."""
    lines = [OrderItem(sku, quantity) for sku, quantity in items]
    result = InventoryActivities(inventory_db).reserve_stock(
        ReserveStockInput(f"{order}:n:reserve_stock", order, lines)
    )
    return result.total_cents


def claim(return_id: str, order: str, *items: tuple[str, int]) -> ClaimReturnInput:
    lines = [OrderItem(sku, quantity) for sku, quantity in items]
    return ClaimReturnInput(f"{return_id}:n:claim_return", order, return_id, lines)


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(ApplicationError) as caught:
        call()
    assert caught.value.non_retryable
    return str(caught.value.type)


def stock(open_session: SessionFactory, sku: str) -> int:
    with open_session() as session:
        product = session.get(Product, sku)
        assert product is not None
        return product.stock


def test_a_claim_takes_its_share_of_the_total(inventory_db: SessionFactory) -> None:
    total = ordered(inventory_db, "o1", ("SKU-1", 3), ("SKU-2", 1))
    service = InventoryActivities(inventory_db)

    first = service.claim_return(claim("r1", "o1", ("SKU-1", 1)))

    assert first.refund_cents == PRICE["SKU-1"]
    # The claim that takes the last items gets the rest: the refunds add up to the total.
    last = service.claim_return(claim("r2", "o1", ("SKU-1", 2), ("SKU-2", 1)))
    assert first.refund_cents + last.refund_cents == total


def test_claims_never_exceed_what_was_bought(inventory_db: SessionFactory) -> None:
    ordered(inventory_db, "o1", ("SKU-1", 2))
    service = InventoryActivities(inventory_db)
    service.claim_return(claim("r1", "o1", ("SKU-1", 1)))

    assert refused(lambda: service.claim_return(claim("r2", "o1", ("SKU-1", 2)))) == (
        ReturnError.EXCEEDS_ORDER
    )
    # An item the order never had is over-claimed too.
    assert refused(lambda: service.claim_return(claim("r3", "o1", ("SKU-2", 1)))) == (
        ReturnError.EXCEEDS_ORDER
    )
    assert service.claim_return(claim("r4", "o1", ("SKU-1", 1))).refund_cents == PRICE["SKU-1"]


def test_an_order_without_a_reservation_is_not_returnable(inventory_db: SessionFactory) -> None:
    service = InventoryActivities(inventory_db)
    assert refused(lambda: service.claim_return(claim("r1", "nope", ("SKU-1", 1)))) == (
        ReturnError.NOT_RETURNABLE
    )


def test_a_released_claim_is_returnable_again(inventory_db: SessionFactory) -> None:
    ordered(inventory_db, "o1", ("SKU-1", 1))
    service = InventoryActivities(inventory_db)
    service.claim_return(claim("r1", "o1", ("SKU-1", 1)))
    undo = ReleaseReturnClaimInput("r1:n:claim_return:undo", "r1:n:claim_return", "o1", "r1")

    assert service.release_return_claim(undo).released
    assert service.release_return_claim(undo).released  # a repeat: the first answer

    assert service.claim_return(claim("r2", "o1", ("SKU-1", 1))).refund_cents == PRICE["SKU-1"]


def test_a_release_before_the_claim_leaves_a_tombstone(inventory_db: SessionFactory) -> None:
    ordered(inventory_db, "o1", ("SKU-1", 1))
    service = InventoryActivities(inventory_db)
    undo = ReleaseReturnClaimInput("r1:n:claim_return:undo", "r1:n:claim_return", "o1", "r1")
    assert not service.release_return_claim(undo).released

    late = service.claim_return(claim("r1", "o1", ("SKU-1", 1)))  # the late attempt

    assert late.refund_cents == 0
    with inventory_db() as session:
        [row] = session.exec(select(ReturnClaim)).all()
    assert row.status == ClaimStatus.RELEASED


def test_restock_puts_the_claimed_items_back_once(inventory_db: SessionFactory) -> None:
    ordered(inventory_db, "o1", ("SKU-2", 3))
    service = InventoryActivities(inventory_db)
    service.claim_return(claim("r1", "o1", ("SKU-2", 2)))
    restock = RestockItemsInput("r1:n:restock_items", "r1:n:claim_return", "r1")

    assert service.restock_items(restock).restocked == 2
    assert service.restock_items(restock).restocked == 2  # the stored first result
    assert stock(inventory_db, "SKU-2") == STOCK["SKU-2"] - 3 + 2
    # A restocked claim stands: releasing it afterwards frees nothing.
    undo = ReleaseReturnClaimInput("r1:n:claim_return:undo", "r1:n:claim_return", "o1", "r1")
    assert not service.release_return_claim(undo).released


def test_concurrent_claims_of_one_order_never_over_claim(inventory_db: SessionFactory) -> None:
    ordered(inventory_db, "o1", ("SKU-1", 5))
    service = InventoryActivities(inventory_db)
    threads = 8  # each wants 2 of the 5 bought: exactly 2 claims fit

    outcomes = _all_at_once(
        threads, lambda n: service.claim_return(claim(f"r{n}", "o1", ("SKU-1", 2)))
    )

    refusals = [o for o in outcomes if isinstance(o, ApplicationError)]
    assert len(outcomes) - len(refusals) == 2
    assert {err.type for err in refusals} == {ReturnError.EXCEEDS_ORDER}
    with inventory_db() as session:
        assert len(session.exec(select(ReturnClaim)).all()) == 2


# --- shipping -----------------------------------------------------------------------------


def test_a_label_needs_the_orders_parcel(shipping_db: SessionFactory) -> None:
    service = ShippingActivities(shipping_db)
    issue = IssueReturnLabelInput("r1:n:issue_return_label", "o1", "r1")
    assert refused(lambda: service.issue_return_label(issue)) == ReturnError.NOT_RETURNABLE

    address = Address("Ada", "Main St 1", "Berlin", "10115", "DE")
    service.create_shipment(
        CreateShipmentInput("o1:n:create_shipment", "o1", address, [OrderItem("SKU-1", 1)])
    )
    label = service.issue_return_label(issue)
    assert label.tracking_number.startswith("RET")
    assert service.issue_return_label(issue).label_id == label.label_id

    undo = CancelReturnLabelInput("r1:n:issue_return_label:undo", issue.idempotency_key, "o1", "r1")
    assert service.cancel_return_label(undo).cancelled
    with shipping_db() as session:
        [row] = session.exec(select(ReturnLabel)).all()
    assert row.status == LabelStatus.CANCELLED


# --- payments -----------------------------------------------------------------------------


def captured(payments_db: SessionFactory, order: str, amount: int) -> None:
    service = PaymentActivities(payments_db)
    key = f"{order}:n:authorize_payment"
    service.authorize_payment(AuthorizePaymentInput(key, order, "tok_visa", amount))
    service.capture_payment(CapturePaymentInput(f"{order}:n:capture_payment", key, order))


def test_refunds_never_exceed_the_capture(payments_db: SessionFactory) -> None:
    captured(payments_db, "o1", 1_000)
    service = PaymentActivities(payments_db)

    first = service.refund_return(RefundReturnInput("r1:n:refund_return", "o1", "r1", 600))
    again = service.refund_return(RefundReturnInput("r1:n:refund_return", "o1", "r1", 600))
    assert first.refund_id == again.refund_id

    over = RefundReturnInput("r2:n:refund_return", "o1", "r2", 401)
    assert refused(lambda: service.refund_return(over)) == ReturnError.REFUND_EXCEEDS_CAPTURE
    service.refund_return(RefundReturnInput("r3:n:refund_return", "o1", "r3", 400))
    with payments_db() as session:
        assert sum(r.amount_cents for r in session.exec(select(Refund)).all()) == 1_000


def test_a_refund_needs_a_captured_payment(payments_db: SessionFactory) -> None:
    service = PaymentActivities(payments_db)
    refund = RefundReturnInput("r1:n:refund_return", "o1", "r1", 1)
    assert refused(lambda: service.refund_return(refund)) == ReturnError.NOT_RETURNABLE


def test_concurrent_refunds_of_one_order_never_exceed_the_capture(
    payments_db: SessionFactory,
) -> None:
    captured(payments_db, "o1", 1_000)
    service = PaymentActivities(payments_db)

    outcomes = _all_at_once(
        8,
        lambda n: service.refund_return(
            RefundReturnInput(f"r{n}:n:refund_return", "o1", f"r{n}", 300)
        ),
    )

    assert sum(not isinstance(o, ApplicationError) for o in outcomes) == 3
    with payments_db() as session:
        assert sum(r.amount_cents for r in session.exec(select(Refund)).all()) == 900


def _all_at_once(threads: int, call: Callable[[int], T]) -> list[T | ApplicationError]:
    barrier = threading.Barrier(threads)

    def attempt(n: int) -> T | ApplicationError:
        barrier.wait()
        try:
            return call(n)
        except ApplicationError as err:
            return err

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(attempt, range(threads)))
