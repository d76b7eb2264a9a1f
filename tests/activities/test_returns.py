"""The services' side of returns: the claim ledger, restocks, labels and partial refunds.

On SQLite and PostgreSQL: the ledger must refuse an over-claim even when returns of one
order claim at the same moment, and payments must never refund more than was captured.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import pytest
from sqlmodel import col, select, update
from temporalio.exceptions import ApplicationError

from activities.inventory import (
    CATALOGUE,
    InventoryActivities,
    Product,
    Reservation,
    ReturnClaim,
)
from activities.payments import PaymentActivities, Refund
from activities.shipping import ReturnLabel, ShippingActivities
from common.db import SessionFactory
from workflows.models import (
    Address,
    AuthorizePaymentInput,
    CapturePaymentInput,
    CreateShipmentInput,
    OrderItem,
    ReleaseStockInput,
    ReserveStockInput,
    ReserveStockResult,
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
    return reserved(inventory_db, order, *items).total_cents


def reserved(
    inventory_db: SessionFactory, order: str, *items: tuple[str, int], nonce: str = "n"
) -> ReserveStockResult:
    """Reserve as the checkout of `order` with `nonce` did (another nonce: another saga)."""
    lines = [OrderItem(sku, quantity) for sku, quantity in items]
    return InventoryActivities(inventory_db).reserve_stock(
        ReserveStockInput(f"{order}:{nonce}:reserve_stock", order, lines)
    )


def claim(
    return_id: str, order: str, *items: tuple[str, int], reservation_id: str | None = None
) -> ClaimReturnInput:
    lines = [OrderItem(sku, quantity) for sku, quantity in items]
    return ClaimReturnInput(
        f"{return_id}:n:claim_return", order, return_id, lines, reservation_id=reservation_id
    )


def reprice(inventory_db: SessionFactory, sku: str, price_cents: int) -> None:
    """Change the catalogue's price, as a shop does between an order and its returns."""
    with inventory_db() as session:
        session.exec(update(Product).where(col(Product.sku) == sku).values(price_cents=price_cents))
        session.commit()


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


@pytest.mark.parametrize(
    ("sku", "new_price"),
    [
        # The outside report: the other item's new price made the 18.00 bag refund 2.88.
        ("SKU-2", 165_075),
        # The other item made free: today's prices would refund the whole order.
        ("SKU-2", 0),
        # The returned item's own price went up: still only what it cost.
        ("SKU-1", 50_000),
    ],
)
def test_a_partial_return_refunds_what_its_items_cost_whatever_the_prices_now(
    inventory_db: SessionFactory, sku: str, new_price: int
) -> None:
    total = ordered(inventory_db, "o1", ("SKU-1", 1), ("SKU-2", 1))
    reprice(inventory_db, sku, new_price)
    service = InventoryActivities(inventory_db)

    bag = service.claim_return(claim("r1", "o1", ("SKU-1", 1)))

    assert bag.refund_cents == PRICE["SKU-1"]  # 18.00, as paid
    rest = service.claim_return(claim("r2", "o1", ("SKU-2", 1)))
    assert rest.refund_cents == PRICE["SKU-2"]
    assert bag.refund_cents + rest.refund_cents == total


def test_a_reservation_from_before_unit_prices_splits_by_todays_prices(
    inventory_db: SessionFactory,
) -> None:
    total = ordered(inventory_db, "o1", ("SKU-1", 1), ("SKU-2", 1))
    with inventory_db() as session:  # a row reserved before lines carried their price
        reservation = session.exec(select(Reservation)).one()
        lines = json.loads(reservation.lines_json)
        reservation.lines_json = json.dumps(
            [{"sku": x["sku"], "quantity": x["quantity"]} for x in lines]
        )
        session.add(reservation)
        session.commit()
    reprice(inventory_db, "SKU-2", 1_800)
    service = InventoryActivities(inventory_db)

    bag = service.claim_return(claim("r1", "o1", ("SKU-1", 1)))

    # Nothing better is known of what it paid: half the total, by today's equal prices.
    assert bag.refund_cents == total // 2
    last = service.claim_return(claim("r2", "o1", ("SKU-2", 1)))
    assert bag.refund_cents + last.refund_cents == total


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


def test_an_order_id_used_again_never_shares_claims_with_the_old_order(
    inventory_db: SessionFactory,
) -> None:
    # The same order ID twice (the second after Temporal's retention forgot the first):
    # two sagas, two reservations. Each one's returns claim only against its own.
    first = reserved(inventory_db, "o1", ("SKU-1", 2), nonce="n1")
    service = InventoryActivities(inventory_db)
    service.claim_return(claim("r1", "o1", ("SKU-1", 1), reservation_id=first.reservation_id))
    reprice(inventory_db, "SKU-1", 2_000)
    second = reserved(inventory_db, "o1", ("SKU-1", 2), nonce="n2")

    # The first order's claim takes nothing of the second's two.
    both = service.claim_return(
        claim("r2", "o1", ("SKU-1", 2), reservation_id=second.reservation_id)
    )
    assert both.refund_cents == second.total_cents == 2 * 2_000
    # And the second's claims take nothing of the first's one left.
    one = service.claim_return(claim("r3", "o1", ("SKU-1", 1), reservation_id=first.reservation_id))
    assert one.refund_cents == first.total_cents - PRICE["SKU-1"]
    for order_reservation, return_id in ((first, "r4"), (second, "r5")):
        over = claim(return_id, "o1", ("SKU-1", 1), reservation_id=order_reservation.reservation_id)
        assert refused(partial(service.claim_return, over)) == ReturnError.EXCEEDS_ORDER
    with inventory_db() as session:
        keyed = {c.return_id: c.reservation_id for c in session.exec(select(ReturnClaim))}
    assert keyed == {
        "r1": first.reservation_id,
        "r2": second.reservation_id,
        "r3": first.reservation_id,
    }


def test_a_claim_on_a_reservation_not_held_by_its_order_is_not_returnable(
    inventory_db: SessionFactory,
) -> None:
    mine = reserved(inventory_db, "o1", ("SKU-1", 1))
    theirs = reserved(inventory_db, "o2", ("SKU-1", 1))
    released = reserved(inventory_db, "o1", ("SKU-1", 1), nonce="gone")
    service = InventoryActivities(inventory_db)
    service.release_stock(ReleaseStockInput("o1:gone:undo", "o1:gone:reserve_stock", "o1"))

    for n, reservation_id in enumerate(
        ("res-missing", theirs.reservation_id, released.reservation_id)
    ):
        wrong = claim(f"r{n}", "o1", ("SKU-1", 1), reservation_id=reservation_id)
        assert refused(partial(service.claim_return, wrong)) == ReturnError.NOT_RETURNABLE
    ok = claim("r9", "o1", ("SKU-1", 1), reservation_id=mine.reservation_id)
    assert service.claim_return(ok).refund_cents == PRICE["SKU-1"]


def test_claims_made_before_reservations_were_recorded_still_count(
    inventory_db: SessionFactory,
) -> None:
    first = reserved(inventory_db, "o1", ("SKU-1", 2), nonce="n1")
    service = InventoryActivities(inventory_db)
    # A return started before returns carried the reservation claims by order ID...
    service.claim_return(claim("r1", "o1", ("SKU-1", 2)))
    with inventory_db() as session:  # ...and its row predates the column: no reservation
        row = session.exec(select(ReturnClaim)).one()
        assert row.reservation_id == first.reservation_id  # recorded from now on
        row.reservation_id = None
        session.add(row)
        session.commit()

    again = claim("r2", "o1", ("SKU-1", 1), reservation_id=first.reservation_id)
    assert refused(lambda: service.claim_return(again)) == ReturnError.EXCEEDS_ORDER
    # A later order with the same ID owes nothing to that old claim.
    second = reserved(inventory_db, "o1", ("SKU-1", 2), nonce="n2")
    later = claim("r3", "o1", ("SKU-1", 2), reservation_id=second.reservation_id)
    assert service.claim_return(later).refund_cents == second.total_cents


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
