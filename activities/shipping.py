"""Shipping service: shipments and their cancellation, in its own database.

Fixture (README, "Test fixtures"): an address in country `XX` is undeliverable
(non-retryable). Returns: a return label for an order's parcel, and its cancellation.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime

from sqlmodel import AutoString, Field, Session, SQLModel, select
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
    CancelShipmentInput,
    CancelShipmentResult,
    CreateShipmentInput,
    CreateShipmentResult,
    ShipmentStatus,
)
from workflows.return_models import (
    CancelReturnLabelInput,
    CancelReturnLabelResult,
    IssueReturnLabelInput,
    IssueReturnLabelResult,
    LabelStatus,
    ReturnError,
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
    # A plain string column (the schema of the migrations); the values are ShipmentStatus.
    status: ShipmentStatus = Field(default=ShipmentStatus.CREATED, sa_type=AutoString)
    created_at: datetime = Field(default_factory=utcnow)
    cancelled_at: datetime | None = None


class ReturnLabel(SQLModel, table=True):
    __tablename__ = "shipping_return_label"

    id: str = Field(primary_key=True, default_factory=lambda: f"lbl-{uuid.uuid4().hex[:12]}")
    # The label step's idempotency key: one label per return, ever.
    label_key: str = Field(unique=True, max_length=300)
    order_id: str = Field(index=True, max_length=200)
    return_id: str = Field(max_length=200)
    tracking_number: str = ""
    # A plain string column (the schema of the migrations); the values are LabelStatus.
    status: LabelStatus = Field(default=LabelStatus.ISSUED, sa_type=AutoString)
    created_at: datetime = Field(default_factory=utcnow)
    cancelled_at: datetime | None = None


TABLES = [Shipment, ReturnLabel, IdempotencyRecord]


class ShippingActivities:
    def __init__(self, open_session: SessionFactory) -> None:
        self._open_session = open_session

    @service_activity("create_shipment")
    def create_shipment(self, input: CreateShipmentInput) -> CreateShipmentResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "create_shipment",
            CreateShipmentResult,
            lambda session: _create(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @service_activity("cancel_shipment")
    def cancel_shipment(self, input: CancelShipmentInput) -> CancelShipmentResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "cancel_shipment",
            CancelShipmentResult,
            lambda session: _cancel(session, input),
        )

    @service_activity("issue_return_label")
    def issue_return_label(self, input: IssueReturnLabelInput) -> IssueReturnLabelResult:
        result = run_once(
            self._open_session,
            input.idempotency_key,
            "issue_return_label",
            IssueReturnLabelResult,
            lambda session: _issue_label(session, input),
        )
        return dataclasses.replace(result, attempt=current_attempt())

    @service_activity("cancel_return_label")
    def cancel_return_label(self, input: CancelReturnLabelInput) -> CancelReturnLabelResult:
        return run_once(
            self._open_session,
            input.idempotency_key,
            "cancel_return_label",
            CancelReturnLabelResult,
            lambda session: _cancel_label(session, input),
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
                status=ShipmentStatus.CANCELLED,
                cancelled_at=utcnow(),
            )
        )
        return CancelShipmentResult(cancelled=False)
    if shipment.status == ShipmentStatus.CANCELLED:
        return CancelShipmentResult(cancelled=False)
    shipment.status = ShipmentStatus.CANCELLED
    shipment.cancelled_at = utcnow()
    session.add(shipment)
    return CancelShipmentResult(cancelled=True)


def _issue_label(session: Session, input: IssueReturnLabelInput) -> IssueReturnLabelResult:
    existing = _label(session, input.idempotency_key)
    if existing is not None:
        # A cancel already left a tombstone: the saga rolled back before this step ran.
        return IssueReturnLabelResult(
            label_id=existing.id, tracking_number=existing.tracking_number
        )
    # The parcel goes back from where the order's went: a return needs its shipment.
    shipped = session.exec(
        select(Shipment).where(
            Shipment.order_id == input.order_id, Shipment.status == ShipmentStatus.CREATED
        )
    ).first()
    if shipped is None:
        raise ApplicationError(
            f"order {input.order_id} has no parcel to return",
            type=ReturnError.NOT_RETURNABLE,
            non_retryable=True,
        )
    label = ReturnLabel(
        label_key=input.idempotency_key,
        order_id=input.order_id,
        return_id=input.return_id,
        tracking_number=f"RET{uuid.uuid4().hex[:10].upper()}",
    )
    session.add(label)
    return IssueReturnLabelResult(label_id=label.id, tracking_number=label.tracking_number)


def _cancel_label(session: Session, input: CancelReturnLabelInput) -> CancelReturnLabelResult:
    label = _label(session, input.label_key)
    if label is None:
        session.add(
            ReturnLabel(
                label_key=input.label_key,
                order_id=input.order_id,
                return_id=input.return_id,
                status=LabelStatus.CANCELLED,
                cancelled_at=utcnow(),
            )
        )
        return CancelReturnLabelResult(cancelled=False)
    if label.status == LabelStatus.CANCELLED:
        return CancelReturnLabelResult(cancelled=False)
    label.status = LabelStatus.CANCELLED
    label.cancelled_at = utcnow()
    session.add(label)
    return CancelReturnLabelResult(cancelled=True)


def _label(session: Session, key: str) -> ReturnLabel | None:
    return session.exec(select(ReturnLabel).where(ReturnLabel.label_key == key)).first()


def _shipment(session: Session, key: str) -> Shipment | None:
    return session.exec(select(Shipment).where(Shipment.shipment_key == key)).first()
