"""Shipping activities: shipments keyed for idempotency, cancellations that tombstone."""

from __future__ import annotations

import dataclasses

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.shipping import Shipment, ShippingActivities
from common.db import SessionFactory
from workflows.models import (
    Address,
    BusinessError,
    CancelShipmentInput,
    CreateShipmentInput,
    OrderItem,
)

SHIP_KEY = "o1:create_shipment"


def shipments(open_session: SessionFactory) -> list[Shipment]:
    with open_session() as session:
        return list(session.exec(select(Shipment)).all())


def create(country: str = "DE") -> CreateShipmentInput:
    address = Address(
        name="Ada", line1="1 Main St", city="Berlin", postal_code="10115", country=country
    )
    return CreateShipmentInput(SHIP_KEY, "o1", address, [OrderItem("SKU-1", 2)])


def cancel(key: str = "o1:create_shipment:undo") -> CancelShipmentInput:
    return CancelShipmentInput(key, SHIP_KEY, "o1")


def test_create_is_idempotent(shipping_db: SessionFactory) -> None:
    service = ShippingActivities(shipping_db)
    first = service.create_shipment(create())
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=3)
    again = env.run(service.create_shipment, create())

    assert first.tracking_number.startswith("TRK")
    assert again == dataclasses.replace(first, attempt=3)
    [shipment] = shipments(shipping_db)
    assert (shipment.id, shipment.status) == (first.shipment_id, "created")


@pytest.mark.parametrize("country", ["XX", "xx"])
def test_undeliverable_is_a_non_retryable_business_failure(
    shipping_db: SessionFactory, country: str
) -> None:
    with pytest.raises(ApplicationError) as raised:
        ShippingActivities(shipping_db).create_shipment(create(country))

    assert raised.value.type == BusinessError.UNDELIVERABLE
    assert raised.value.non_retryable
    assert shipments(shipping_db) == []


def test_cancel_cancels_once(shipping_db: SessionFactory) -> None:
    service = ShippingActivities(shipping_db)
    service.create_shipment(create())

    assert service.cancel_shipment(cancel()).cancelled is True
    assert service.cancel_shipment(cancel()).cancelled is True  # same key: first result
    assert service.cancel_shipment(cancel("o1:cancel-again")).cancelled is False
    [shipment] = shipments(shipping_db)
    assert shipment.status == "cancelled"
    assert shipment.cancelled_at is not None


def test_cancel_with_nothing_shipped_is_a_no_op_that_blocks_a_late_create(
    shipping_db: SessionFactory,
) -> None:
    service = ShippingActivities(shipping_db)

    assert service.cancel_shipment(cancel()).cancelled is False

    late = service.create_shipment(create())

    assert late.tracking_number == ""
    [tombstone] = shipments(shipping_db)
    assert (tombstone.id, tombstone.status) == (late.shipment_id, "cancelled")
