"""The soak's orders: a seeded mix of every fixture, each with the one outcome it must reach.

Fixtures are data (README, Test fixtures), so each order's terminal state is known before
it is
placed, whatever faults hit it on the way: a fault may delay an order, never change how
it ends. Orders held for approval are kept within the stock of the SKUs they use even if
every one of them were approved, and the ordinary orders that complete within the stock of
theirs, so none can end OUT_OF_STOCK by bad luck.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from activities.inventory import CATALOGUE


@dataclass(frozen=True)
class Fixture:
    name: str
    weight: float
    status: str
    failure_reason: str | None = None
    card: str = "tok_visa"
    country: str = "DE"
    decision: str | None = None  # approve | reject | cancel, sent while awaiting approval


FIXTURES = (
    Fixture("visa", 0.45, "COMPLETED"),
    Fixture("flaky", 0.10, "COMPLETED", card="tok_flaky"),
    Fixture("decline", 0.12, "COMPENSATED", "PAYMENT_DECLINED", card="tok_decline"),
    Fixture("undeliverable", 0.10, "COMPENSATED", "UNDELIVERABLE", country="XX"),
    Fixture("out_of_stock", 0.08, "COMPENSATED", "OUT_OF_STOCK"),
    Fixture("approve", 0.05, "COMPLETED", decision="approve"),
    Fixture("reject", 0.05, "COMPENSATED", "REJECTED_BY_OPERATOR", decision="reject"),
    Fixture("cancel", 0.05, "COMPENSATED", "CANCELLED_BY_CUSTOMER", decision="cancel"),
)
BY_NAME = {fixture.name: fixture for fixture in FIXTURES}

# Above the 100,000-cent approval threshold: SKU-3 at 189,000, five SKU-2 at 124,500.
APPROVAL_LINES = (("SKU-3", 1), ("SKU-2", 5))
# Nobody else orders SKU-4, and six exceed its whole stock of five.
OUT_OF_STOCK_LINE = ("SKU-4", 6)
# Ordinary orders take 1 to 3 of SKU-1. Its 10,000 do not cover 10,000 orders at that rate
# (about 55% complete and keep theirs: some 13,800 bags), so a large run's latest completing
# orders take one bag each, as many as it takes to fit (`_fit_ordinary_stock`).
ORDINARY_SKU = "SKU-1"
# Kept free of completing orders: what orders on their way to a rollback (a declined card,
# an undeliverable address) hold for a moment, at most 3 each, so 1,000 covers over 300 of
# them in flight at once.
ORDINARY_HEADROOM = 1_000


@dataclass(frozen=True)
class ReturnFixture:
    name: str
    weight: float
    status: str  # the return's planned end: REFUNDED | CANCELLED | EXPIRED
    action: str | None  # receive | cancel, once it awaits its parcel; None: let it expire


RETURN_FIXTURES = (
    ReturnFixture("refund", 0.60, "REFUNDED", "receive"),
    ReturnFixture("return_cancel", 0.25, "CANCELLED", "cancel"),
    ReturnFixture("expire", 0.15, "EXPIRED", None),
)
# Of the orders that complete, this share is returned (some of their items).
RETURN_SHARE = 0.3


@dataclass(frozen=True)
class PlannedReturn:
    fixture: ReturnFixture
    idempotency_key: str
    body: dict[str, Any]
    # Then a return of more than the order bought: the claim ledger must answer 409.
    over_claim: dict[str, Any]
    # Its own key: the POST answers once the claim is decided, so during a fault it can
    # answer 503 after the saga started; the repeat must name that saga, not start another.
    over_claim_key: str


@dataclass(frozen=True)
class PlannedOrder:
    index: int
    fixture: Fixture
    idempotency_key: str
    body: dict[str, Any]
    # A return once the order is COMPLETED; None for most orders.
    ret: PlannedReturn | None = None


def plan_orders(count: int, seed: int, run_id: str) -> list[PlannedOrder]:
    rng = random.Random(seed)
    stock = {product.sku: product.stock for product in CATALOGUE}
    weights = [fixture.weight for fixture in FIXTURES]
    drawn: list[tuple[Fixture, tuple[str, int]]] = []
    for _ in range(count):
        fixture = rng.choices(FIXTURES, weights)[0]
        line = _approval_line(stock) if fixture.decision else None
        if fixture.decision and line is None:  # approval stock used up: an ordinary order
            fixture = BY_NAME["visa"]
        if line is None:
            line = (
                OUT_OF_STOCK_LINE
                if fixture.name == "out_of_stock"
                else (ORDINARY_SKU, rng.randint(1, 3))
            )
        drawn.append((fixture, line))
    _fit_ordinary_stock(drawn, stock[ORDINARY_SKU] - ORDINARY_HEADROOM)
    # Returns draw from their own generator, so a seed plans the orders it planned before.
    returns = random.Random(f"{seed}-returns")
    return [
        PlannedOrder(
            index=index,
            fixture=fixture,
            idempotency_key=f"soak-{run_id}-{index}",
            body=_body(f"soak-{run_id}-{index % 50}", line, fixture),
            ret=_plan_return(returns, f"soak-{run_id}-{index}-return", fixture, line),
        )
        for index, (fixture, line) in enumerate(drawn)
    ]


def _plan_return(
    rng: random.Random, key: str, fixture: Fixture, line: tuple[str, int]
) -> PlannedReturn | None:
    if fixture.status != "COMPLETED" or rng.random() >= RETURN_SHARE:
        return None
    kind = rng.choices(RETURN_FIXTURES, [f.weight for f in RETURN_FIXTURES])[0]
    sku, quantity = line
    return PlannedReturn(
        fixture=kind,
        idempotency_key=key,
        body=_return_body(sku, rng.randint(1, quantity)),
        over_claim=_return_body(sku, quantity + 1),
        over_claim_key=f"{key}-over",
    )


def _return_body(sku: str, quantity: int) -> dict[str, Any]:
    return {"items": [{"sku": sku, "quantity": quantity}], "reason": "soak"}


def _fit_ordinary_stock(drawn: list[tuple[Fixture, tuple[str, int]]], budget: int) -> None:
    """Keep what completing orders take of the ordinary SKU within `budget`, in place.

    From the last order back, completing orders take fewer bags, down to one, until the sum
    fits; a run that does not fit even at one bag each is refused. A run that fits as drawn
    is left exactly as drawn, so a seed plans what it planned before.
    """
    completing = [
        index
        for index, (fixture, (sku, _)) in enumerate(drawn)
        if sku == ORDINARY_SKU and fixture.status == "COMPLETED"
    ]
    excess = sum(drawn[index][1][1] for index in completing) - budget
    for index in reversed(completing):
        if excess <= 0:
            return
        fixture, (sku, quantity) = drawn[index]
        spared = min(quantity - 1, excess)
        drawn[index] = (fixture, (sku, quantity - spared))
        excess -= spared
    if excess > 0:
        raise ValueError(
            f"{len(drawn)} orders: their completing orders need more {ORDINARY_SKU} "
            f"than its stock holds, even at one each (budget {budget})"
        )


def _approval_line(stock: dict[str, int]) -> tuple[str, int] | None:
    for sku, quantity in APPROVAL_LINES:
        if stock[sku] >= quantity:
            stock[sku] -= quantity
            return sku, quantity
    return None


def _body(customer_id: str, line: tuple[str, int], fixture: Fixture) -> dict[str, Any]:
    sku, quantity = line
    return {
        "customer_id": customer_id,
        "items": [{"sku": sku, "quantity": quantity}],
        "payment": {"card_token": fixture.card},
        "shipping_address": {
            "name": "Soak",
            "line1": "Failure Lane 1",
            "city": "Berlin",
            "postal_code": "10115",
            "country": fixture.country,
        },
    }
