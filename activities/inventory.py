"""Inventory service: products, stock and reservations, in its own database."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Field, Session, SQLModel, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.idempotency import IdempotencyRecord, current_attempt, run_once, utcnow
from common.db import SessionFactory
from workflows.models import (
    BusinessError,
    OrderItem,
    ReleaseStockInput,
    ReleaseStockResult,
    ReserveStockInput,
    ReserveStockResult,
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
    lines_json: str = "[]"
    total_cents: int = 0
    status: str = "reserved"  # reserved | released
    created_at: datetime = Field(default_factory=utcnow)
    released_at: datetime | None = None


TABLES = [Product, Reservation, IdempotencyRecord]

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

    @activity.defn(name="reserve_stock")
    def reserve_stock(self, input: ReserveStockInput) -> ReserveStockResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "reserve_stock",
            ReserveStockResult,
            lambda session: _reserve(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @activity.defn(name="release_stock")
    def release_stock(self, input: ReleaseStockInput) -> ReleaseStockResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "release_stock",
            ReleaseStockResult,
            lambda session: _release(session, input),
        )


def _reserve(session: Session, input: ReserveStockInput) -> ReserveStockResult:
    existing = _reservation(session, input.idempotency_key)
    if existing is not None:
        # A release already left a tombstone: the saga gave up on this step before it
        # ran, so it must not take stock now.
        return ReserveStockResult(reservation_id=existing.id, total_cents=existing.total_cents)
    total = 0
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
    reservation = Reservation(
        reservation_key=input.idempotency_key,
        order_id=input.order_id,
        lines_json=json.dumps([dataclasses.asdict(i) for i in _merge(input.items)]),
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
                status="released",
                released_at=utcnow(),
            )
        )
        return ReleaseStockResult(released=False)
    if reservation.status == "released":
        return ReleaseStockResult(released=False)
    for line in json.loads(reservation.lines_json):
        session.execute(
            update(Product)
            .where(col(Product.sku) == line["sku"])
            .values(stock=col(Product.stock) + line["quantity"])
        )
    reservation.status = "released"
    reservation.released_at = utcnow()
    session.add(reservation)
    return ReleaseStockResult(released=True)


def _reservation(session: Session, key: str) -> Reservation | None:
    return session.exec(select(Reservation).where(Reservation.reservation_key == key)).first()


def _merge(items: list[OrderItem]) -> list[OrderItem]:
    """Sum repeated SKUs so that the stock check sees the whole quantity at once."""
    quantities: dict[str, int] = {}
    for item in items:
        quantities[item.sku] = quantities.get(item.sku, 0) + item.quantity
    return [OrderItem(sku=sku, quantity=q) for sku, q in sorted(quantities.items())]
