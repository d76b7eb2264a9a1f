"""Property: whatever returns race for an order's items, nothing is over-claimed or lost.

Each example completes a few random orders, each at catalogue prices of its own, changes
the prices again, then starts a random batch of returns of them at once (some asking for
more than is left, some for items the order never had), and plays each one's fixture:
the warehouse receives it, the customer cancels it, or its parcel never comes and it
expires. Then the services' databases are read directly and checked with the soak's
invariants (tooling/invariants.py) and against a model:

- the claims taken never exceed what each order bought, and each refused return would
  have over-claimed beside the ones taken;
- a taken return ends REFUNDED, CANCELLED or EXPIRED as its fixture says, a refused one
  FAILED with EXCEEDS_ORDER;
- stock comes back exactly for the refunded returns, and each order's refunds are the
  claimed shares, adding up to the order's total when everything came back;
- each claim's refund is what its items cost at the prices that order paid (never
  today's), so an order's refunds never exceed what it paid.

On a dev server (the fixtures are updates); parcels that never come time out in 2 s.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import col, update
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.inventory import Product
from tests.workflows.helpers import (
    Services,
    build_services,
    order_input,
    running_worker,
    start_order,
)
from tests.workflows.test_returns import ReturnHandle, return_input, start_return, until
from tooling.invariants import INITIAL_STOCK, check_all, read_databases
from tooling.temporal import dev_server_env
from workflows.models import CancelRequest, OrderState
from workflows.registry import SAGA_WORKFLOWS
from workflows.return_models import ReceiveRequest, ReturnFailure, ReturnState, ReturnStatus
from workflows.returns import ReturnWorkflow

SKUS = ("SKU-1", "SKU-2")
EXPIRE_AFTER_S = 2
DEADLINE_S = 90.0


class Fate(StrEnum):
    RECEIVE = "receive"
    CANCEL = "cancel"
    EXPIRE = "expire"


EXPECTED = {
    Fate.RECEIVE: ReturnState.REFUNDED,
    Fate.CANCEL: ReturnState.CANCELLED,
    Fate.EXPIRE: ReturnState.EXPIRED,
}


@dataclass(frozen=True)
class Ask:
    order: int  # which of the example's orders
    items: tuple[tuple[str, int], ...]
    fate: Fate


lines = st.dictionaries(st.sampled_from(SKUS), st.integers(1, 4), min_size=1, max_size=2)
orders = st.lists(lines.map(lambda d: tuple(sorted(d.items()))), min_size=1, max_size=2)
asks = st.builds(
    Ask,
    order=st.integers(0, 1),
    items=st.dictionaries(st.sampled_from(SKUS), st.integers(1, 5), min_size=1, max_size=2).map(
        lambda d: tuple(sorted(d.items()))
    ),
    fate=st.sampled_from(list(Fate)),
)
# The catalogue's prices, changed before each order and again before the returns.
Prices = dict[str, int]
price_lists = st.fixed_dictionaries({sku: st.integers(0, 50_000) for sku in SKUS})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    async with dev_server_env() as env:
        yield env


@settings(
    max_examples=6,
    deadline=None,
    database=None,  # keep the working tree clean; a failure prints its reproduction blob
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    bought=orders,
    batch=st.lists(asks, min_size=1, max_size=5),
    paid=st.lists(price_lists, min_size=2, max_size=2),
    later=price_lists,
)
async def test_racing_returns_never_over_claim_and_refund_exactly_their_shares(
    dev_env: WorkflowEnvironment,
    bought: list[tuple[tuple[str, int], ...]],
    batch: list[Ask],
    paid: list[Prices],
    later: Prices,
) -> None:
    with tempfile.TemporaryDirectory(prefix="sagaworks-property-") as root:
        services = build_services(lambda name: f"sqlite:///{root}/{name}.db")
        try:
            totals, results = await asyncio.wait_for(
                _run(dev_env.client, services, bought, batch, paid, later), DEADLINE_S
            )
        finally:
            for engine in services.engines:
                engine.dispose()
        orders_done = dict.fromkeys(totals, "COMPLETED")
        returns_done = {r.return_id: r.status.value for r in results}
        checks = check_all(read_databases(Path(root)), orders_done, INITIAL_STOCK, returns_done)
    assert {c.name: c.violations for c in checks if c.violations} == {}
    _check_model(bought, batch, totals, results, paid)


async def _run(
    client: Client,
    services: Services,
    bought: list[tuple[tuple[str, int], ...]],
    batch: list[Ask],
    paid: list[Prices],
    later: Prices,
) -> tuple[dict[str, int], list[ReturnStatus]]:
    """Complete the orders, race the returns; each order's total, and each return's end."""
    queue = f"property-{uuid.uuid4()}"
    async with running_worker(client, queue, services.activities(), workflows=SAGA_WORKFLOWS):
        totals: dict[str, int] = {}
        reservations: dict[str, str | None] = {}
        for items, prices in zip(bought, paid, strict=False):
            # One at a time, each at its own prices: what each order paid is known.
            _reprice(services, prices)
            # No approval hold: these orders only exist to be returned.
            input = order_input(queue, items=list(items), approval_threshold_cents=10**9)
            order = await (await start_order(client, input, queue)).result()
            assert order.status == OrderState.COMPLETED and order.total_cents is not None
            totals[input.order_id] = order.total_cents
            reservations[input.order_id] = order.reservation_id
        order_ids = list(totals)
        _reprice(services, later)  # the returns come after another price change

        returns = [
            return_input(
                queue,
                order_id,
                *ask.items,
                parcel_timeout_s=EXPIRE_AFTER_S if ask.fate == Fate.EXPIRE else 600,
                reservation_id=reservations[order_id],
            )
            for ask in batch
            for order_id in [order_ids[ask.order % len(order_ids)]]
        ]
        started = await asyncio.gather(*(start_return(client, r, queue) for r in returns))
        # Every claim decided (taken or refused) before any fixture plays.
        admitted = await asyncio.gather(
            *(handle.execute_update(ReturnWorkflow.admission) for handle in started)
        )
        await asyncio.gather(
            *(
                _play(handle, ask.fate)
                for handle, ask, status in zip(started, batch, admitted, strict=True)
                if status.failure_reason is None
            )
        )
        results = [await handle.result() for handle in started]
    return totals, results


def _reprice(services: Services, prices: Prices) -> None:
    with services.inventory() as session:
        for sku, cents in prices.items():
            session.exec(update(Product).where(col(Product.sku) == sku).values(price_cents=cents))
        session.commit()


async def _play(handle: ReturnHandle, fate: Fate) -> None:
    if fate == Fate.EXPIRE:
        return
    await until(handle, lambda s: s.current_step == "await_parcel")
    if fate == Fate.RECEIVE:
        await handle.execute_update(ReturnWorkflow.receive, ReceiveRequest("property"))
    else:
        await handle.execute_update(ReturnWorkflow.cancel, CancelRequest("property"))


def _check_model(
    bought: list[tuple[tuple[str, int], ...]],
    batch: list[Ask],
    totals: dict[str, int],
    results: list[ReturnStatus],
    paid: list[Prices],
) -> None:
    for n, order_id in enumerate(totals):
        have = Counter(dict(bought[n]))

        def cost(items: tuple[tuple[str, int], ...], prices: Prices = paid[n]) -> int:
            return sum(prices[sku] * quantity for sku, quantity in items)

        assert totals[order_id] == cost(bought[n]), (order_id, paid[n])
        mine = [(ask, r) for ask, r in zip(batch, results, strict=True) if r.order_id == order_id]
        taken = [(ask, r) for ask, r in mine if r.failure_reason != ReturnFailure.EXCEEDS_ORDER]
        claimed: Counter[str] = Counter()
        for ask, _ in taken:
            claimed.update(dict(ask.items))
        assert all(claimed[sku] <= have[sku] for sku in claimed), (order_id, claimed, have)
        for ask, result in mine:
            if result.failure_reason == ReturnFailure.EXCEEDS_ORDER:
                assert result.status == ReturnState.FAILED
                beside = claimed + Counter(dict(ask.items))
                assert any(beside[sku] > have[sku] for sku in beside), (ask, claimed, have)
            else:
                assert result.status == EXPECTED[ask.fate], (ask, result)
                assert result.failure_reason in (
                    None,
                    ReturnFailure.CANCELLED_BY_CUSTOMER,
                    ReturnFailure.PARCEL_TIMEOUT,
                )
                # Its items' cost as paid, not at today's prices. The last claim gets the
                # rest, which is exactly its cost too, when the others took theirs.
                assert result.refund_cents == cost(ask.items), (ask, result, paid[n])
        refunded = [(ask, r) for ask, r in mine if r.status == ReturnState.REFUNDED]
        back: Counter[str] = Counter()
        for ask, _ in refunded:
            back.update(dict(ask.items))
        refunded_cents = sum(r.refund_cents or 0 for _, r in refunded)
        assert refunded_cents <= totals[order_id], (order_id, refunded_cents)
        if back == have:  # everything came back: refunded to the cent
            assert refunded_cents == totals[order_id]
