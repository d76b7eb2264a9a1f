"""Inventory service: products, stock and reservations, in its own database.

Returns: the claim ledger (what each return takes back of an order, checked against what
the order bought) and the restock of a received return.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, update
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
    BusinessError,
    OrderItem,
    ReleaseStockInput,
    ReleaseStockResult,
    ReservationStatus,
    ReserveStockInput,
    ReserveStockResult,
)
from workflows.return_models import (
    ClaimReturnInput,
    ClaimReturnResult,
    ClaimStatus,
    ReleaseReturnClaimInput,
    ReleaseReturnClaimResult,
    RestockItemsInput,
    RestockItemsResult,
    ReturnError,
)


class Product(SQLModel, table=True):
    __tablename__ = "inventory_product"

    sku: str = Field(primary_key=True, max_length=64)
    name: str
    price_cents: int = Field(ge=0)
    stock: int = Field(ge=0)


class Reservation(SQLModel, table=True):
    __tablename__ = "inventory_reservation"

    id: str = Field(primary_key=True, default_factory=lambda: f"res-{uuid.uuid4().hex[:12]}")
    # The reserve step's idempotency key: one reservation per saga, ever.
    reservation_key: str = Field(unique=True, max_length=300)
    order_id: str = Field(index=True, max_length=200)
    # [{"sku", "quantity", "unit_price_cents"}]: the unit price is what the order paid, so
    # refunds never depend on today's catalogue. Rows reserved before it was recorded
    # carry no unit price (see `_paid_prices`).
    lines_json: str = "[]"
    total_cents: int = 0
    # A plain string column (the schema of the migrations); the values are ReservationStatus.
    status: ReservationStatus = Field(default=ReservationStatus.RESERVED, sa_type=AutoString)
    created_at: datetime = Field(default_factory=utcnow)
    released_at: datetime | None = None


class ReturnClaim(SQLModel, table=True):
    """What one return takes back of an order: the ledger that stops over-claiming."""

    __tablename__ = "inventory_return_claim"

    id: str = Field(primary_key=True, default_factory=lambda: f"clm-{uuid.uuid4().hex[:12]}")
    # The claim step's idempotency key: one claim per return, ever.
    claim_key: str = Field(unique=True, max_length=300)
    order_id: str = Field(index=True, max_length=200)
    # The reservation (what one order bought) this claim takes back of. An order ID can
    # come back after Temporal's retention; a reservation ID never does. None on claims
    # made before it was recorded, which belong to their order's latest reservation then.
    reservation_id: str | None = Field(default=None, index=True)
    return_id: str = Field(max_length=200)
    lines_json: str = "[]"
    # The returned items' share of the order's total, fixed when claimed.
    refund_cents: int = 0
    # A plain string column (the schema of the migrations); the values are ClaimStatus.
    status: ClaimStatus = Field(default=ClaimStatus.CLAIMED, sa_type=AutoString)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime | None = None


TABLES = [Product, Reservation, ReturnClaim, IdempotencyRecord]

CATALOGUE: list[Product] = [
    Product(sku="SKU-1", name="Espresso beans, 1 kg", price_cents=1_800, stock=10_000),
    Product(sku="SKU-2", name="Burr grinder", price_cents=24_900, stock=500),
    Product(sku="SKU-3", name="Dual-boiler espresso machine", price_cents=189_000, stock=50),
    Product(sku="SKU-4", name="Limited-edition cup", price_cents=2_500, stock=5),
]


def seed_catalogue(open_session: SessionFactory) -> int:
    """Insert the demo catalogue where absent; never resets stock that has moved."""
    added = 0
    with open_session() as session:
        for product in CATALOGUE:
            if session.get(Product, product.sku) is None:
                session.add(Product.model_validate(product.model_dump()))
                added += 1
        session.commit()
    return added


class InventoryActivities:
    def __init__(self, open_session: SessionFactory) -> None:
        self._open_session = open_session

    @service_activity("reserve_stock")
    def reserve_stock(self, input: ReserveStockInput) -> ReserveStockResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "reserve_stock",
            ReserveStockResult,
            lambda session: _reserve(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @service_activity("release_stock")
    def release_stock(self, input: ReleaseStockInput) -> ReleaseStockResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "release_stock",
            ReleaseStockResult,
            lambda session: _release(session, input),
        )

    @service_activity("claim_return")
    def claim_return(self, input: ClaimReturnInput) -> ClaimReturnResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "claim_return",
            ClaimReturnResult,
            lambda session: _claim(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @service_activity("release_return_claim")
    def release_return_claim(self, input: ReleaseReturnClaimInput) -> ReleaseReturnClaimResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "release_return_claim",
            ReleaseReturnClaimResult,
            lambda session: _release_claim(session, input),
        )

    @service_activity("restock_items")
    def restock_items(self, input: RestockItemsInput) -> RestockItemsResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "restock_items",
            RestockItemsResult,
            lambda session: _restock(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())


def _reserve(session: Session, input: ReserveStockInput) -> ReserveStockResult:
    existing = _reservation(session, input.idempotency_key)
    if existing is not None:
        # A release already left a tombstone: the saga gave up on this step before it
        # ran, so it must not take stock now.
        return ReserveStockResult(reservation_id=existing.id, total_cents=existing.total_cents)
    total = 0
    lines: list[dict[str, object]] = []
    for item in _merge(input.items):
        taken = session.execute(
            update(Product)
            .where(col(Product.sku) == item.sku, col(Product.stock) >= item.quantity)
            .values(stock=col(Product.stock) - item.quantity)
        )
        product = session.get(Product, item.sku)
        if taken.rowcount != 1 or product is None:  # type: ignore[attr-defined]
            available = product.stock if product else 0
            raise ApplicationError(
                f"{item.sku}: {item.quantity} requested, {available} available",
                {"sku": item.sku, "requested": item.quantity, "available": available},
                type=BusinessError.OUT_OF_STOCK,
                non_retryable=True,
            )
        total += product.price_cents * item.quantity
        # The price this order pays, kept with the line: a return refunds by it.
        lines.append({**dataclasses.asdict(item), "unit_price_cents": product.price_cents})
    reservation = Reservation(
        reservation_key=input.idempotency_key,
        order_id=input.order_id,
        lines_json=json.dumps(lines),
        total_cents=total,
    )
    session.add(reservation)
    return ReserveStockResult(reservation_id=reservation.id, total_cents=total)


def _release(session: Session, input: ReleaseStockInput) -> ReleaseStockResult:
    reservation = _reservation(session, input.reservation_key)
    if reservation is None:
        # Nothing was reserved (yet). Leave a released tombstone so that a reserve
        # attempt still in flight cannot take stock after the saga rolled back.
        session.add(
            Reservation(
                reservation_key=input.reservation_key,
                order_id=input.order_id,
                status=ReservationStatus.RELEASED,
                released_at=utcnow(),
            )
        )
        return ReleaseStockResult(released=False)
    if reservation.status == ReservationStatus.RELEASED:
        return ReleaseStockResult(released=False)
    for line in json.loads(reservation.lines_json):
        session.execute(
            update(Product)
            .where(col(Product.sku) == line["sku"])
            .values(stock=col(Product.stock) + line["quantity"])
        )
    reservation.status = ReservationStatus.RELEASED
    reservation.released_at = utcnow()
    session.add(reservation)
    return ReleaseStockResult(released=True)


# --- returns --------------------------------------------------------------------------------


def _claim(session: Session, input: ClaimReturnInput) -> ClaimReturnResult:
    existing = _return_claim(session, input.idempotency_key)
    if existing is not None:
        # A release already left a tombstone: the saga gave up before the claim ran.
        return ClaimReturnResult(claim_id=existing.id, refund_cents=existing.refund_cents)
    # The order's reservation is what it bought. Locking its row serializes the claims of
    # one order on PostgreSQL (SQLite transactions here are serialized anyway), so two
    # concurrent returns never both see the same quantities as still returnable.
    reservation = _reservation_to_claim(session, input)
    bought = dict(_lines(reservation.lines_json))
    others = _other_claims(session, input, reservation)
    claimed: Counter[str] = Counter()
    for other in others:
        claimed.update(dict(_lines(other.lines_json)))
    wanted = _merge(input.items)
    for item in wanted:
        returnable = bought.get(item.sku, 0) - claimed[item.sku]
        if item.quantity > returnable:
            raise ApplicationError(
                f"{item.sku}: {item.quantity} to return, {returnable} returnable",
                {"sku": item.sku, "requested": item.quantity, "returnable": returnable},
                type=ReturnError.EXCEEDS_ORDER,
                non_retryable=True,
            )
    prices = _paid_prices(session, reservation.lines_json)
    claim = ReturnClaim(
        claim_key=input.idempotency_key,
        order_id=input.order_id,
        # Recorded on the legacy path too, so later claims keyed by the reservation see it.
        reservation_id=reservation.id,
        return_id=input.return_id,
        lines_json=json.dumps([dataclasses.asdict(i) for i in wanted]),
        refund_cents=_share(reservation.total_cents, prices, bought, claimed, wanted, others),
    )
    session.add(claim)
    return ClaimReturnResult(claim_id=claim.id, refund_cents=claim.refund_cents)


def _reservation_to_claim(session: Session, input: ClaimReturnInput) -> Reservation:
    """The reservation a return takes back of, its row locked; NOT_RETURNABLE when none.

    A return names its order's reservation. One started before returns carried it names
    only the order ID, and takes that order's latest reservation, as it always did.
    """
    query = select(Reservation)
    if input.reservation_id is not None:
        query = query.where(Reservation.id == input.reservation_id)
    else:
        query = query.where(
            Reservation.order_id == input.order_id,
            Reservation.status == ReservationStatus.RESERVED,
        ).order_by(col(Reservation.created_at).desc())
    reservation = session.exec(query.with_for_update()).first()
    if (
        reservation is None
        or reservation.status != ReservationStatus.RESERVED
        # A reservation of another order: never take back what someone else bought.
        or reservation.order_id != input.order_id
    ):
        raise ApplicationError(
            f"order {input.order_id} holds no stock a return could take back",
            type=ReturnError.NOT_RETURNABLE,
            non_retryable=True,
        )
    return reservation


def _other_claims(
    session: Session, input: ClaimReturnInput, reservation: Reservation
) -> Sequence[ReturnClaim]:
    """The live claims of other returns on the same purchase."""
    live = col(ReturnClaim.status) != ClaimStatus.RELEASED
    if input.reservation_id is None:
        # A return started before claims were keyed by reservation: its order's claims,
        # as before (a superset of the reservation's, so it can only refuse more).
        return session.exec(
            select(ReturnClaim).where(ReturnClaim.order_id == input.order_id, live)
        ).all()
    # Claims made before the reservation was recorded on them were taken against the
    # order's latest reservation at that time: this one if they came after it.
    unkeyed = and_(
        col(ReturnClaim.reservation_id).is_(None),
        col(ReturnClaim.order_id) == reservation.order_id,
        col(ReturnClaim.created_at) >= reservation.created_at,
    )
    return session.exec(
        select(ReturnClaim).where(
            or_(col(ReturnClaim.reservation_id) == reservation.id, unkeyed), live
        )
    ).all()


def _paid_prices(session: Session, lines_json: str) -> dict[str, int]:
    """Each SKU's unit price as the order paid it.

    A reservation made before unit prices were recorded has none: its lines fall back to
    today's catalogue price, the best left to go by (its refunds are then split as they
    always were, still within the order's total).
    """
    prices: dict[str, int] = {}
    for line in json.loads(lines_json or "[]"):
        paid = line.get("unit_price_cents")
        if paid is None:
            product = session.get(Product, line["sku"])
            paid = product.price_cents if product is not None else 0
        prices[line["sku"]] = int(paid)
    return prices


def _share(
    total_cents: int,
    prices: dict[str, int],
    bought: dict[str, int],
    claimed: Counter[str],
    wanted: list[OrderItem],
    others: Sequence[ReturnClaim],
) -> int:
    """The returned items' share of what the order paid, in proportion to prices paid.

    With the unit prices recorded the proportion is exact: the share is what the items
    cost. The claim that takes the last items gets the rest, so an order's refunds add
    up to its total exactly, and never more.
    """
    left = total_cents - sum(other.refund_cents for other in others)
    after = claimed + Counter({item.sku: item.quantity for item in wanted})
    if all(after[sku] >= quantity for sku, quantity in bought.items()):
        return max(left, 0)
    bought_value = sum(prices.get(sku, 0) * quantity for sku, quantity in bought.items())
    if bought_value == 0:
        return 0
    wanted_value = sum(prices.get(item.sku, 0) * item.quantity for item in wanted)
    return max(min(total_cents * wanted_value // bought_value, left), 0)


def _release_claim(session: Session, input: ReleaseReturnClaimInput) -> ReleaseReturnClaimResult:
    claim = _return_claim(session, input.claim_key)
    if claim is None:
        # Nothing claimed (yet): a tombstone, so a claim attempt still in flight cannot
        # take quantities after the saga rolled back.
        session.add(
            ReturnClaim(
                claim_key=input.claim_key,
                order_id=input.order_id,
                return_id=input.return_id,
                status=ClaimStatus.RELEASED,
                updated_at=utcnow(),
            )
        )
        return ReleaseReturnClaimResult(released=False)
    if claim.status != ClaimStatus.CLAIMED:
        # Released before, or restocked: a received return is past undoing.
        return ReleaseReturnClaimResult(released=False)
    claim.status = ClaimStatus.RELEASED
    claim.updated_at = utcnow()
    session.add(claim)
    return ReleaseReturnClaimResult(released=True)


def _restock(session: Session, input: RestockItemsInput) -> RestockItemsResult:
    claim = _return_claim(session, input.claim_key)
    if claim is None or claim.status != ClaimStatus.CLAIMED:
        state = claim.status if claim else "missing"
        raise ApplicationError(
            f"claim {input.claim_key!r} is {state}; nothing to restock",
            type=ReturnError.NOT_RETURNABLE,
            non_retryable=True,
        )
    restocked = 0
    for sku, quantity in _lines(claim.lines_json):
        session.execute(
            update(Product)
            .where(col(Product.sku) == sku)
            .values(stock=col(Product.stock) + quantity)
        )
        restocked += quantity
    claim.status = ClaimStatus.RESTOCKED
    claim.updated_at = utcnow()
    session.add(claim)
    return RestockItemsResult(restocked=restocked)


def _return_claim(session: Session, key: str) -> ReturnClaim | None:
    return session.exec(select(ReturnClaim).where(ReturnClaim.claim_key == key)).first()


def _lines(lines_json: str) -> list[tuple[str, int]]:
    return [(line["sku"], int(line["quantity"])) for line in json.loads(lines_json or "[]")]


def _reservation(session: Session, key: str) -> Reservation | None:
    return session.exec(select(Reservation).where(Reservation.reservation_key == key)).first()


def _merge(items: list[OrderItem]) -> list[OrderItem]:
    """Sum repeated SKUs so that the stock check sees the whole quantity at once."""
    quantities: dict[str, int] = {}
    for item in items:
        quantities[item.sku] = quantities.get(item.sku, 0) + item.quantity
    return [OrderItem(sku=sku, quantity=q) for sku, q in sorted(quantities.items())]
