"""Shipping service: shipments and their cancellation, in its own database.

Fixture (DESIGN §5): an address in country `XX` is undeliverable (non-retryable).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime

from sqlmodel import Field, Session, SQLModel, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.idempotency import IdempotencyRecord, current_attempt, run_once, utcnow
from common.db import SessionFactory
from workflows.models import (
    BusinessError,
    CancelShipmentInput,
    CancelShipmentResult,
    CreateShipmentInput,
    CreateShipmentResult,
)

UNDELIVERABLE_COUNTRIES = frozenset({"XX"})


class Shipment(SQLModel, table=True):
    __tablename__ = "shipping_shipment"

    id: str = Field(primary_key=True, default_factory=lambda: f"shp-{uuid.uuid4().hex[:12]}")
    # The create step's idempotency key: one shipment per saga, ever.
    shipment_key: str = Field(unique=True, max_length=300)
    order_id: str = Field(index=True, max_length=200)
    address_json: str = "{}"
    items_json: str = "[]"
    tracking_number: str = ""
    status: str = "created"  # created | cancelled
    created_at: datetime = Field(default_factory=utcnow)
    cancelled_at: datetime | None = None


TABLES = [Shipment, IdempotencyRecord]


class ShippingActivities:
    def __init__(self, open_session: SessionFactory) -> None:
        self._open_session = open_session

    @activity.defn(name="create_shipment")
    def create_shipment(self, input: CreateShipmentInput) -> CreateShipmentResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "create_shipment",
            CreateShipmentResult,
            lambda session: _create(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @activity.defn(name="cancel_shipment")
    def cancel_shipment(self, input: CancelShipmentInput) -> CancelShipmentResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "cancel_shipment",
            CancelShipmentResult,
            lambda session: _cancel(session, input),
        )


def _create(session: Session, input: CreateShipmentInput) -> CreateShipmentResult:
    existing = _shipment(session, input.idempotency_key)
    if existing is not None:
        # A cancel already left a tombstone: the saga rolled back before this step ran.
        return CreateShipmentResult(
            shipment_id=existing.id, tracking_number=existing.tracking_number
        )
    if input.address.country.upper() in UNDELIVERABLE_COUNTRIES:
        raise ApplicationError(
            f"no carrier delivers to country {input.address.country!r}",
            {"attempt": current_attempt()},
            type=BusinessError.UNDELIVERABLE,
            non_retryable=True,
        )
    shipment = Shipment(
        shipment_key=input.idempotency_key,
        order_id=input.order_id,
        address_json=json.dumps(dataclasses.asdict(input.address)),
        items_json=json.dumps([dataclasses.asdict(i) for i in input.items]),
        tracking_number=f"TRK{uuid.uuid4().hex[:10].upper()}",
    )
    session.add(shipment)
    return CreateShipmentResult(shipment_id=shipment.id, tracking_number=shipment.tracking_number)


def _cancel(session: Session, input: CancelShipmentInput) -> CancelShipmentResult:
    shipment = _shipment(session, input.shipment_key)
    if shipment is None:
        session.add(
            Shipment(
                shipment_key=input.shipment_key,
                order_id=input.order_id,
                status="cancelled",
                cancelled_at=utcnow(),
            )
        )
        return CancelShipmentResult(cancelled=False)
    if shipment.status == "cancelled":
        return CancelShipmentResult(cancelled=False)
    shipment.status = "cancelled"
    shipment.cancelled_at = utcnow()
    session.add(shipment)
    return CancelShipmentResult(cancelled=True)


def _shipment(session: Session, key: str) -> Shipment | None:
    return session.exec(select(Shipment).where(Shipment.shipment_key == key)).first()
