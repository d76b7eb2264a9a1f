"""Property: whatever mix of orders runs at once, no stock is lost or created and no order
is charged without being shipped.

Hypothesis draws a batch of orders across every fixture (cards, countries, SKUs, quantities
that exhaust the 5-unit SKU-4, high-value orders that wait for approval) and an operator or
customer action for each. The batch runs concurrently with the real activities over fresh
SQLite files; then the three service databases are read directly and checked against each
other and against every order's outcome.

It runs on a real dev server rather than the time-skipping one: cancelling a saga while an
activity is in flight leaves the time-skipping server stuck (sdk-java#1138), and random
cancels do exactly that. The approval timeout is therefore short and real. High-value
orders are watched through the `status` query and get their signal in the approval wait;
cancels aimed at other orders go in before the worker starts, so they land before the
first step.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select
from temporalio.client import WorkflowHandle

from activities.inventory import Product, Reservation
from activities.payments import Payment
from activities.shipping import Shipment
from tests.support.temporal import dev_server_env
from tests.workflows.helpers import (
    INITIAL_STOCK,
    PRICE,
    Services,
    build_services,
    order_input,
    result_of,
    running_worker,
    start_order,
    wait_for_status,
)
from workflows.models import CancelRequest, OrderItem, OrderState, OrderStatus
from workflows.order import OrderWorkflow

Action = Literal["none", "approve", "reject", "cancel"]
CANCEL = CancelRequest("changed my mind")
# Long enough for the test to see every high-value order waiting; short enough that the
# undecided ones time out quickly on a real server.
APPROVAL_TIMEOUT_S = 4


@dataclass(frozen=True)
class Scenario:
    lines: tuple[tuple[str, int], ...]
    card: str
    country: str
    action: Action


scenarios = st.builds(
    Scenario,
    lines=st.lists(
        st.tuples(st.sampled_from(sorted(INITIAL_STOCK)), st.integers(1, 6)),
        min_size=1,
        max_size=3,
    ).map(tuple),
    card=st.sampled_from(["tok_visa", "tok_visa", "tok_decline", "tok_flaky"]),
    country=st.sampled_from(["DE", "DE", "FR", "XX"]),
    action=st.sampled_from(["none", "approve", "reject", "cancel"]),
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(scenarios, min_size=3, max_size=12))
def test_terminal_orders_conserve_stock_and_money(batch: list[Scenario]) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sagaworks-property-"))
    services = build_services(lambda name: f"sqlite:///{directory / f'{name}.db'}")
    try:
        outcomes = asyncio.run(run_batch(services, batch))
        check_invariants(services, outcomes)
    finally:
        for engine in services.engines:
            engine.dispose()


async def run_batch(services: Services, batch: list[Scenario]) -> list[OrderStatus]:
    async with dev_server_env() as env:
        queue = f"property-{uuid.uuid4()}"
        inputs = [
            order_input(
                queue,
                items=s.lines,
                card=s.card,
                country=s.country,
                approval_timeout_s=APPROVAL_TIMEOUT_S,
            )
            for s in batch
        ]
        handles = [await start_order(env.client, input, queue) for input in inputs]
        held_for_approval = [
            (handle, scenario)
            for handle, scenario, input in zip(handles, batch, inputs, strict=True)
            if total_cents(input.items) > input.approval_threshold_cents
        ]
        for handle, scenario in zip(handles, batch, strict=True):
            if scenario.action == "cancel" and (handle, scenario) not in held_for_approval:
                await handle.signal(OrderWorkflow.request_cancel, CANCEL)
        async with running_worker(env.client, queue, services.activities()):
            for handle, scenario in held_for_approval:
                await act_during_approval(handle, scenario.action)
            return list(await asyncio.gather(*(result_of(h, 60) for h in handles)))


async def act_during_approval(
    handle: WorkflowHandle[OrderWorkflow, OrderStatus], action: Action
) -> None:
    # Out of stock ends the order before the wait; anything else reaches it.
    status = await wait_for_status(
        handle,
        lambda s: (
            s.status == OrderState.AWAITING_APPROVAL
            or s.status.is_terminal
            or s.status == OrderState.COMPENSATING
        ),
    )
    if status.status != OrderState.AWAITING_APPROVAL:
        return
    if action == "approve":
        await handle.signal(OrderWorkflow.approve)
    elif action == "reject":
        await handle.signal(OrderWorkflow.reject)
    elif action == "cancel":
        await handle.signal(OrderWorkflow.request_cancel, CANCEL)


def check_invariants(services: Services, outcomes: list[OrderStatus]) -> None:
    assert all(o.status in (OrderState.COMPLETED, OrderState.COMPENSATED) for o in outcomes), [
        (o.status, o.failure_reason, o.compensations) for o in outcomes
    ]
    completed = {o.order_id: o for o in outcomes if o.status == OrderState.COMPLETED}

    with services.inventory() as session:
        shelf = {p.sku: p.stock for p in session.exec(select(Product)).all()}
        live = list(session.exec(select(Reservation).where(Reservation.status == "reserved")))
    held: Counter[str] = Counter()
    for reservation in live:
        for line in json.loads(reservation.lines_json):
            held[line["sku"]] += line["quantity"]
    for sku, initial in INITIAL_STOCK.items():
        assert shelf[sku] >= 0
        assert shelf[sku] + held[sku] == initial, f"{sku}: stock created or lost"
    assert sorted(r.order_id for r in live) == sorted(completed), (
        "stock held by a rolled-back order"
    )

    with services.payments() as session:
        payments = list(session.exec(select(Payment)).all())
    with services.shipping() as session:
        shipments = list(session.exec(select(Shipment)).all())
    captured = [p for p in payments if p.status == "captured"]
    shipped = {s.order_id for s in shipments if s.status == "created"}
    assert sorted(p.order_id for p in captured) == sorted(completed), "charged without completing"
    assert {p.order_id for p in captured} <= shipped, "charged without being shipped"
    assert shipped == set(completed), "shipped without completing"
    for payment in captured:
        assert payment.amount_cents == completed[payment.order_id].total_cents
    assert {p.status for p in payments if p.order_id not in completed} <= {"voided"}


def total_cents(items: list[OrderItem]) -> int:
    return sum(PRICE[i.sku] * i.quantity for i in items)
