"""Property: whatever mix of orders runs concurrently, nothing is lost, created or half-done.

Each example starts a fresh time-skipping server (about 0.3 s) and one worker on a UUID
task queue with the saga and the real activities over fresh SQLite files, then runs a
random batch of orders concurrently, in two phases:

1. Time is locked (the server only skips time while a client awaits a result), so the
   test watches each order through its `status` query and sends `approve`, `reject` or
   `request_cancel` at the point its scenario names.
2. The results are awaited, which lets time skip: orders nobody decided on reach their
   approval timeout, and retry back-offs pass at once.

Then the three service databases are read directly and checked against each other and
against every order's outcome, which a small model predicts from the fixtures.

A cancel "during a step" holds that step's attempt at the worker (an interceptor) until
the workflow has acted on the cancel; the attempt then runs and commits after the saga
gave up on it, which is the case its compensation exists for. The order's other
activities wait until the server has recorded the attempt's result. That ordering also
steers clear of two time-skipping server bugs that a free race would hit: a result that
arrives in the same workflow task as the cancel leaves the workflow stuck on
`ACTIVITY_UNKNOWN` (temporalio/sdk-java#2391), and an activity cancelled before it
started, or whose result arrives after its workflow closed, keeps time locked for good,
so no other order's timer ever fires.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from activities.inventory import (
    CATALOGUE,
    InventoryActivities,
    Product,
    Reservation,
    seed_catalogue,
)
from activities.inventory import TABLES as INVENTORY_TABLES
from activities.payments import TABLES as PAYMENT_TABLES
from activities.payments import Payment, PaymentActivities
from activities.shipping import TABLES as SHIPPING_TABLES
from activities.shipping import Shipment, ShippingActivities
from common.db import create_tables, make_engine, session_factory
from tests.support.temporal import time_skipping_env
from workflows.models import (
    Address,
    CancelRequest,
    FailureReason,
    OrderInput,
    OrderItem,
    OrderState,
    OrderStatus,
    TaskQueues,
)
from workflows.order import APPROVAL, AUTHORIZE, RESERVE, SHIP, OrderWorkflow

PRICES = {p.sku: p.price_cents for p in CATALOGUE}
INITIAL_STOCK = {p.sku: p.stock for p in CATALOGUE}
SERVICES = ("inventory", "payments", "shipping")
# The activity held while an order is cancelled "during" each point. An order held for
# approval is caught there instead; one that is not goes on to shipping, held there.
GATED = {RESERVE: RESERVE, AUTHORIZE: AUTHORIZE, APPROVAL: SHIP, SHIP: SHIP}
APPROVAL_THRESHOLD_CENTS = 100_000
# Longer than phase 1 lasts in real time; the time-skipping server then makes it pass at
# once in phase 2.
APPROVAL_TIMEOUT_S = 120
DEADLINE_S = 60.0
POLL_S = 0.05

OrderHandle = WorkflowHandle[OrderWorkflow, OrderStatus]


class Action(StrEnum):
    NONE = "none"  # an order held for approval times out
    APPROVE = "approve"  # once it is seen awaiting approval
    # Straight after the start, before it is needed: it counts only if the order is held
    # by then, so it is usually ignored and the order times out.
    APPROVE_EARLY = "approve_early"
    REJECT = "reject"  # once it is seen awaiting approval
    CANCEL = "cancel"  # customer cancel during `cancel_during` (None: with the start)


@dataclass(frozen=True)
class Scenario:
    items: tuple[OrderItem, ...]
    card_token: str
    country: str
    action: Action
    cancel_during: str | None

    def demand(self) -> Counter[str]:
        demand: Counter[str] = Counter()
        for item in self.items:
            demand[item.sku] += item.quantity
        return demand

    @property
    def needs_approval(self) -> bool:
        total = sum(PRICES[item.sku] * item.quantity for item in self.items)
        return total > APPROVAL_THRESHOLD_CENTS


scenarios = st.builds(
    Scenario,
    items=st.lists(
        st.builds(OrderItem, sku=st.sampled_from(sorted(PRICES)), quantity=st.integers(1, 6)),
        min_size=1,
        max_size=3,
    ).map(tuple),
    card_token=st.sampled_from(["tok_visa", "tok_visa", "tok_decline", "tok_flaky"]),
    country=st.sampled_from(["DE", "DE", "DE", "XX"]),
    action=st.sampled_from(
        [Action.NONE, Action.APPROVE, Action.APPROVE, Action.REJECT, Action.APPROVE_EARLY]
        + [Action.CANCEL, Action.CANCEL]
    ),
    cancel_during=st.sampled_from([None, RESERVE, AUTHORIZE, APPROVAL, SHIP]),
)
batches = st.lists(scenarios, min_size=5, max_size=12)


# --- the model: how each order may end ---------------------------------------------------


def expected_reason(scenario: Scenario, out_of_stock: bool) -> FailureReason | None:
    """The one outcome the fixtures decide (None: completed), given the stock race."""
    cancel = scenario.cancel_during if scenario.action is Action.CANCEL else "never"
    if cancel in (None, RESERVE):
        return FailureReason.CANCELLED_BY_CUSTOMER
    if out_of_stock:
        return FailureReason.OUT_OF_STOCK
    if cancel == AUTHORIZE:
        return FailureReason.CANCELLED_BY_CUSTOMER
    if scenario.card_token == "tok_decline":
        return FailureReason.PAYMENT_DECLINED
    if scenario.needs_approval:
        if scenario.action is Action.CANCEL:
            return FailureReason.CANCELLED_BY_CUSTOMER  # caught while awaiting approval
        if scenario.action is Action.REJECT:
            return FailureReason.REJECTED_BY_OPERATOR
        if scenario.action in (Action.NONE, Action.APPROVE_EARLY):
            return FailureReason.APPROVAL_TIMEOUT
    # A cancel once shipping has started is refused: the order goes on.
    if scenario.country == "XX":
        return FailureReason.UNDELIVERABLE
    return None


def allowed_reasons(scenario: Scenario, batch: list[Scenario]) -> set[FailureReason | None]:
    # An early approval that happens to land once the order is held counts as an approval.
    readings = [scenario]
    if scenario.action is Action.APPROVE_EARLY:
        readings.append(dataclasses.replace(scenario, action=Action.APPROVE))
    demand = scenario.demand()
    if any(quantity > INITIAL_STOCK[sku] for sku, quantity in demand.items()):
        return {expected_reason(s, out_of_stock=True) for s in readings}
    allowed = {expected_reason(s, out_of_stock=False) for s in readings}
    # Which concurrent orders reserve first is up to the race, not the fixtures.
    batch_demand: Counter[str] = sum((s.demand() for s in batch), Counter())
    if any(batch_demand[sku] > INITIAL_STOCK[sku] for sku in demand):
        allowed |= {expected_reason(s, out_of_stock=True) for s in readings}
    return allowed


# --- the services ---------------------------------------------------------------------


class Services:
    """The three service databases, and one worker running the saga and every activity."""

    def __init__(self, root: Path) -> None:
        self.engines = {name: make_engine(f"sqlite:///{root / f'{name}.db'}") for name in SERVICES}
        create_tables(self.engines["inventory"], INVENTORY_TABLES)
        create_tables(self.engines["payments"], PAYMENT_TABLES)
        create_tables(self.engines["shipping"], SHIPPING_TABLES)
        seed_catalogue(session_factory(self.engines["inventory"]))
        self.gates = Gates()

    def worker(self, client: Client, task_queue: str, executor: ThreadPoolExecutor) -> Worker:
        inventory = InventoryActivities(session_factory(self.engines["inventory"]))
        payments = PaymentActivities(session_factory(self.engines["payments"]))
        shipping = ShippingActivities(session_factory(self.engines["shipping"]))
        return Worker(
            client,
            task_queue=task_queue,
            workflows=[OrderWorkflow],
            activities=[
                inventory.reserve_stock,
                inventory.release_stock,
                payments.authorize_payment,
                payments.capture_payment,
                payments.void_payment,
                payments.refund_payment,
                payments.hold_for_approval,
                payments.release_approval_hold,
                shipping.create_shipment,
                shipping.cancel_shipment,
            ],
            activity_executor=executor,
            interceptors=[self.gates],
        )

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


@dataclass
class Gate:
    """Holds one order's step (its first attempt) at the door while the test acts."""

    activity: str
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the server has recorded how the held attempt ended. Until then the order's
    # other activities wait, so the saga cannot close before the attempt has reported.
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class Gates(Interceptor):
    def __init__(self) -> None:
        self.by_workflow: dict[str, Gate] = {}

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _GatedActivity(next, self.by_workflow)


class _GatedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, gates: dict[str, Gate]) -> None:
        super().__init__(next)
        self._gates = gates

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        gate = self._gates.get(info.workflow_id or "")
        if gate is None:
            return await super().execute_activity(input)
        if info.activity_type == gate.activity and not gate.entered.is_set():
            gate.entered.set()
            await gate.opened.wait()
            try:
                return await super().execute_activity(input)
            finally:
                gate.finished.set()
        if gate.entered.is_set() and info.activity_type != gate.activity:
            await gate.settled.wait()
        return await super().execute_activity(input)


# --- driving one order ----------------------------------------------------------------


@dataclass
class Order:
    client: Client
    services: Services
    task_queue: str
    scenario: Scenario
    customer_id: str
    order_id: str = field(default_factory=lambda: f"order-{uuid.uuid4()}")

    async def run(self) -> OrderHandle:
        """Start the order and act on it as its scenario says; return its handle."""
        scenario = self.scenario
        if scenario.action is Action.CANCEL:
            if scenario.cancel_during is None:
                return await self._start(cancel_with_start=True)
            return await self._cancel_during(scenario.cancel_during)
        handle = await self._start()
        if scenario.action is Action.APPROVE_EARLY:
            await handle.signal(OrderWorkflow.approve)
        elif scenario.action in (Action.APPROVE, Action.REJECT) and await _watch(
            handle, lambda s: s.status == OrderState.AWAITING_APPROVAL
        ):
            # Held for approval with time locked, it cannot finish before the signal lands.
            approve = scenario.action is Action.APPROVE
            await handle.signal(OrderWorkflow.approve if approve else OrderWorkflow.reject)
        return handle

    async def _cancel_during(self, step: str) -> OrderHandle:
        # The step's attempt is held until the workflow has acted on the cancel, so the
        # cancel lands while the step is in flight (never in the same workflow task as
        # its result: see the module docstring).
        gate = self.services.gates.by_workflow[self.order_id] = Gate(GATED[step])
        try:
            handle = await self._start()
            if await _watch(handle, lambda s: gate.entered.is_set() or _held_for_approval(s)):
                seen = len((await handle.fetch_history()).events)
                await handle.signal(OrderWorkflow.request_cancel, CancelRequest("property"))
                await _cancel_handled(handle, after=seen)
        finally:
            gate.opened.set()
        if gate.entered.is_set():
            await gate.finished.wait()
            await _recorded(handle, gate.activity)
        gate.settled.set()
        return handle

    async def _start(self, *, cancel_with_start: bool = False) -> OrderHandle:
        order = OrderInput(
            order_id=self.order_id,
            customer_id=self.customer_id,
            items=list(self.scenario.items),
            card_token=self.scenario.card_token,
            shipping_address=Address("Ada", "1 Main St", "Berlin", "10115", self.scenario.country),
            approval_threshold_cents=APPROVAL_THRESHOLD_CENTS,
            approval_timeout_s=APPROVAL_TIMEOUT_S,
            task_queues=TaskQueues(*[self.task_queue] * 4),
            # The hold caps have tests of their own; here every held order is let in, so
            # the model's outcomes stay those of the fixtures.
            max_held_orders=10**6,
            max_held_cents=10**12,
        )
        return await self.client.start_workflow(
            OrderWorkflow.run,
            order,
            id=self.order_id,
            task_queue=self.task_queue,
            # Signal-with-start: the cancel is there before the first step is scheduled.
            start_signal="request_cancel" if cancel_with_start else None,
            start_signal_args=[CancelRequest("property")] if cancel_with_start else [],
        )


def _held_for_approval(status: OrderStatus) -> bool:
    # With time locked, an order held for approval goes no further: cancel it there.
    return status.status == OrderState.AWAITING_APPROVAL


async def _recorded(handle: OrderHandle, activity_type: str) -> None:
    """Wait until the server no longer lists `activity_type` as pending for the order."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        pending = (await handle.describe()).raw_description.pending_activities
        if all(p.activity_type.name != activity_type for p in pending):
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{handle.id}: {activity_type} never reported")


async def _watch(handle: OrderHandle, reached: Callable[[OrderStatus], bool]) -> bool:
    """Poll the `status` query until `reached` (True) or the order is terminal (False)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        status = await handle.query(OrderWorkflow.status)
        if status.status.is_terminal:
            return False
        if reached(status):
            return True
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{handle.id} never reached the point its scenario waits for")


async def _cancel_handled(handle: OrderHandle, after: int) -> None:
    """Wait until a workflow task that saw the cancel signal has completed."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        events = (await handle.fetch_history()).events[after:]
        kinds = [e.event_type for e in events]
        signalled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        if signalled in kinds and (
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in kinds[kinds.index(signalled) :]
        ):
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{handle.id} never handled its cancel signal")


# --- the invariants -------------------------------------------------------------------


def check_invariants(services: Services, outcomes: dict[str, OrderStatus]) -> None:
    with Session(services.engines["inventory"]) as session:
        stock = {p.sku: p.stock for p in session.exec(select(Product))}
        reservations = list(session.exec(select(Reservation)))
    with Session(services.engines["payments"]) as session:
        payments = list(session.exec(select(Payment)))
    with Session(services.engines["shipping"]) as session:
        shipments = list(session.exec(select(Shipment)))

    # Every row belongs to an order of this batch, and no saga left two rows for one step.
    for rows in (reservations, payments, shipments):
        order_ids = [row.order_id for row in rows]
        assert set(order_ids) <= outcomes.keys(), "a row for an order nobody placed"
        assert len(set(order_ids)) == len(order_ids), "two rows for one saga step"

    held: Counter[str] = Counter()
    for reservation in reservations:
        if reservation.status == "reserved":
            for line in json.loads(reservation.lines_json):
                held[line["sku"]] += line["quantity"]
    for sku, initial in INITIAL_STOCK.items():
        assert initial == stock[sku] + held[sku], f"{sku}: stock lost or created"

    completed = {oid for oid, status in outcomes.items() if status.status == OrderState.COMPLETED}
    reserved = {r.order_id: r for r in reservations if r.status == "reserved"}
    captured = {p.order_id: p for p in payments if p.status == "captured"}
    created = {s.order_id: s for s in shipments if s.status == "created"}
    assert reserved.keys() == completed, "stock is held exactly for the completed orders"
    assert captured.keys() == completed, "money is taken exactly for the completed orders"
    assert created.keys() == completed, "parcels go out exactly for the completed orders"
    assert not [p for p in payments if p.status == "authorized"], "an authorization hold leaked"
    for order_id in completed:
        # Each line keeps the unit price paid (returns refund by it), adding up to the total.
        lines = json.loads(reserved[order_id].lines_json)
        assert all(line["unit_price_cents"] == PRICES[line["sku"]] for line in lines), lines
        paid = sum(line["unit_price_cents"] * line["quantity"] for line in lines)
        assert paid == reserved[order_id].total_cents, lines
        assert captured[order_id].amount_cents == reserved[order_id].total_cents
        assert outcomes[order_id].total_cents == reserved[order_id].total_cents
        assert outcomes[order_id].tracking_number == created[order_id].tracking_number


# --- the property ----------------------------------------------------------------------


@settings(
    max_examples=8,
    deadline=None,
    database=None,  # keep the working tree clean; a failure prints its reproduction blob
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(batch=batches)
async def test_batches_with_cancels_in_flight_conserve_stock_and_money(
    batch: list[Scenario],
) -> None:
    with tempfile.TemporaryDirectory(prefix="sagaworks-property-") as root:
        services = Services(Path(root))
        try:
            outcomes = await _run(services, batch)
            check_invariants(services, outcomes)
        finally:
            services.dispose()


async def _run(services: Services, batch: list[Scenario]) -> dict[str, OrderStatus]:
    task_queue = f"property-{uuid.uuid4()}"
    async with time_skipping_env() as env:
        # Leaving this `with` joins the activity threads: every attempt has written its
        # last row before the checks read the databases.
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with services.worker(env.client, task_queue, executor):
                orders = [
                    Order(env.client, services, task_queue, scenario, f"customer-{n % 3}")
                    for n, scenario in enumerate(batch)
                ]
                handles = await asyncio.gather(*(order.run() for order in orders))
                results = await asyncio.wait_for(_results(handles), DEADLINE_S)

    outcomes: dict[str, OrderStatus] = {}
    for handle, scenario, result in zip(handles, batch, results, strict=True):
        assert result.status in (OrderState.COMPLETED, OrderState.COMPENSATED), (
            f"{handle.id} {scenario} ended {result.status}: {result}"
        )
        assert (result.status == OrderState.COMPLETED) == (result.failure_reason is None)
        assert result.failure_reason in allowed_reasons(scenario, batch), (
            f"{handle.id} {scenario} ended {result.failure_reason}"
        )
        outcomes[handle.id] = result
    return outcomes


async def _results(handles: list[OrderHandle]) -> list[OrderStatus]:
    # One at a time: each wait unlocks time skipping, and the test server rejects
    # overlapping unlocks ("Unbalanced lock and unlock calls"). Time skips for every
    # order while the first is awaited, so this is no slower than waiting on all at once.
    return [await handle.result() for handle in handles]
