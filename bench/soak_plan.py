"""The soak's orders: a seeded mix of every fixture, each with the one outcome it must reach.

Fixtures are data (DESIGN §5), so each order's terminal state is known before it is
placed, whatever faults hit it on the way: a fault may delay an order, never change how
it ends. Orders held for approval are kept within the stock of the SKUs they use even if
every one of them were approved, so none can end OUT_OF_STOCK by bad luck.
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
# Ordinary orders take 1 to 3 of SKU-1, whose 10,000 cover any run that fits in a day.
ORDINARY_SKU = "SKU-1"


@dataclass(frozen=True)
class PlannedOrder:
    index: int
    fixture: Fixture
    idempotency_key: str
    body: dict[str, Any]


def plan_orders(count: int, seed: int, run_id: str) -> list[PlannedOrder]:
    rng = random.Random(seed)
    stock = {product.sku: product.stock for product in CATALOGUE}
    weights = [fixture.weight for fixture in FIXTURES]
    planned: list[PlannedOrder] = []
    for index in range(count):
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
        planned.append(
            PlannedOrder(
                index=index,
                fixture=fixture,
                idempotency_key=f"soak-{run_id}-{index}",
                body=_body(f"soak-{run_id}-{index % 50}", line, fixture),
            )
        )
    return planned


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
