"""Builders for order-saga tests: service databases, workers, inputs, polling, DB peeks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities import inventory, notifications, payments, shipping
from activities.idempotency import activities_of, activity_name
from activities.inventory import CATALOGUE, InventoryActivities, Product, Reservation
from activities.notifications import NotificationActivities
from activities.payments import Payment, PaymentActivities
from activities.shipping import Shipment, ShippingActivities
from common.db import SessionFactory, create_tables, make_engine, session_factory
from common.services import BUSINESS_NAMES
from workflows.models import (
    Address,
    CapturePaymentInput,
    CapturePaymentResult,
    OrderInput,
    OrderItem,
    OrderStatus,
    TaskQueues,
    VoidPaymentInput,
    VoidPaymentResult,
)
from workflows.order import OrderWorkflow
from workflows.return_models import CancelReturnLabelInput, CancelReturnLabelResult

T = TypeVar("T")

INITIAL_STOCK = {product.sku: product.stock for product in CATALOGUE}
PRICE = {product.sku: product.price_cents for product in CATALOGUE}
SERVICES = BUSINESS_NAMES  # common/services.py


@dataclass
class Services:
    """The business services, each over its own fresh SQLite database."""

    inventory: SessionFactory
    payments: SessionFactory
    shipping: SessionFactory
    notifications: SessionFactory
    engines: list[Engine]

    def activities(
        self,
        *services: str,
        replace: Mapping[str, Callable[..., Any]] | None = None,
    ) -> list[Callable[..., Any]]:
        """The real activities of `services` (all by default), some replaced by name."""
        # Every activity each service's class defines, as its worker registers them.
        classes = {
            "inventory": InventoryActivities(self.inventory),
            "payments": PaymentActivities(self.payments),
            "shipping": ShippingActivities(self.shipping),
            "notifications": NotificationActivities(self.notifications),
        }
        available = {
            service: {activity_name(fn): fn for fn in activities_of(instance)}
            for service, instance in classes.items()
        }
        chosen: dict[str, Callable[..., Any]] = {}
        for service in services or SERVICES:
            chosen.update(available[service])
        for name, replacement in (replace or {}).items():
            assert name in chosen, f"{name} is not served by {services or SERVICES}"
            chosen[name] = replacement
        return list(chosen.values())


def build_services(sqlite_url: Callable[[str], str]) -> Services:
    tables = {
        "inventory": inventory.TABLES,
        "payments": payments.TABLES,
        "shipping": shipping.TABLES,
        "notifications": notifications.TABLES,
    }
    factories: dict[str, SessionFactory] = {}
    engines = []
    for service in SERVICES:
        engine = make_engine(sqlite_url(service))
        create_tables(engine, tables[service])
        factories[service] = session_factory(engine)
        engines.append(engine)
    inventory.seed_catalogue(factories["inventory"])
    return Services(
        inventory=factories["inventory"],
        payments=factories["payments"],
        shipping=factories["shipping"],
        notifications=factories["notifications"],
        engines=engines,
    )


@asynccontextmanager
async def running_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Any]] = (),
    *,
    workflows: Sequence[type] = (OrderWorkflow,),
) -> AsyncIterator[Worker]:
    """A worker serving `workflows` and `activities`; sync activities run in threads."""
    with ThreadPoolExecutor(max_workers=8) as executor:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=list(workflows),
            activities=list(activities),
            activity_executor=executor,
        )
        async with worker:
            yield worker


class RefusingVoids:
    """A payment gateway that refuses voids for good until `fixed`, then voids for real."""

    def __init__(self, services: Services) -> None:
        self.fixed = False
        self._void = PaymentActivities(services.payments).void_payment

    @activity.defn(name="void_payment")
    def void_payment(self, input: VoidPaymentInput) -> VoidPaymentResult:
        if not self.fixed:
            raise ApplicationError("gateway refuses voids", type="VoidRefused", non_retryable=True)
        return self._void(input)


class RefusingCaptures:
    """A payment gateway whose captures fail for good (NotCapturable) until `fixed`."""

    def __init__(self, services: Services) -> None:
        self.fixed = False
        self.refused = 0
        self._capture = PaymentActivities(services.payments).capture_payment

    @activity.defn(name="capture_payment")
    def capture_payment(self, input: CapturePaymentInput) -> CapturePaymentResult:
        if not self.fixed:
            self.refused += 1
            raise ApplicationError("not capturable", type="NotCapturable", non_retryable=True)
        return self._capture(input)


class RefusingLabelCancels:
    """A carrier that refuses to cancel labels for good until `fixed`."""

    def __init__(self, services: Services) -> None:
        self.fixed = False
        self._cancel = ShippingActivities(services.shipping).cancel_return_label

    @activity.defn(name="cancel_return_label")
    def cancel_return_label(self, input: CancelReturnLabelInput) -> CancelReturnLabelResult:
        if not self.fixed:
            raise ApplicationError("carrier refuses", type="CancelRefused", non_retryable=True)
        return self._cancel(input)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def order_input(
    queues: str | TaskQueues,
    *,
    items: Sequence[tuple[str, int]] = (("SKU-1", 2),),
    card: str = "tok_visa",
    country: str = "DE",
    **overrides: Any,
) -> OrderInput:
    task_queues = (
        queues if isinstance(queues, TaskQueues) else TaskQueues(queues, queues, queues, queues)
    )
    return OrderInput(
        order_id=new_id("order"),
        customer_id=new_id("customer"),
        items=[OrderItem(sku=sku, quantity=quantity) for sku, quantity in items],
        card_token=card,
        shipping_address=Address(
            name="Ada", line1="1 Main St", city="Berlin", postal_code="10115", country=country
        ),
        task_queues=task_queues,
        **{"nonce": uuid.uuid4().hex, **overrides},
    )


async def start_order(
    client: Client, input: OrderInput, task_queue: str
) -> WorkflowHandle[OrderWorkflow, OrderStatus]:
    return await client.start_workflow(
        OrderWorkflow.run, input, id=input.order_id, task_queue=task_queue
    )


async def result_of(handle: WorkflowHandle[Any, T], within_s: float = 60.0) -> T:
    """The workflow's result; a regression that never finishes fails instead of hanging."""
    return await asyncio.wait_for(handle.result(), within_s)


async def wait_for_status(
    handle: WorkflowHandle[Any, Any],
    condition: Callable[[OrderStatus], bool],
    within_s: float = 20.0,
) -> OrderStatus:
    """Poll the `status` query until `condition` holds; fail after `within_s` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        status = await handle.query(OrderWorkflow.status)
        if condition(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status never met the condition; last: {status}")
        await asyncio.sleep(0.05)


def step_key(input: OrderInput, step: str) -> str:
    """The idempotency key OrderWorkflow uses (the workflow ID is the order ID here)."""
    if input.nonce is None:  # as sagas started before keys carried the nonce
        return f"{input.order_id}:{step}"
    return f"{input.order_id}:{input.nonce}:{step}"


# --- peeking into each service's own database ----------------------------------------------


def stock(open_session: SessionFactory, sku: str) -> int:
    with open_session() as session:
        product = session.get(Product, sku)
        assert product is not None
        return product.stock


def reservations(open_session: SessionFactory, order_id: str) -> list[Reservation]:
    with open_session() as session:
        query = select(Reservation).where(Reservation.order_id == order_id)
        return list(session.exec(query).all())


def payments_of(open_session: SessionFactory, order_id: str) -> list[Payment]:
    with open_session() as session:
        return list(session.exec(select(Payment).where(Payment.order_id == order_id)).all())


def shipments_of(open_session: SessionFactory, order_id: str) -> list[Shipment]:
    with open_session() as session:
        return list(session.exec(select(Shipment).where(Shipment.order_id == order_id)).all())
