"""The soak's plan keeps every order's outcome reachable, however many orders it holds.

Pure planning, no stack: a plan whose completing orders together want more of a SKU than
inventory holds would make the later ones end OUT_OF_STOCK, against their fixture.
"""

from __future__ import annotations

from collections import Counter

import pytest

from activities.inventory import CATALOGUE
from bench.soak_plan import ORDINARY_HEADROOM, ORDINARY_SKU, PlannedOrder, plan_orders

STOCK = {product.sku: product.stock for product in CATALOGUE}


def _completing_demand(plan: list[PlannedOrder]) -> Counter[str]:
    demand: Counter[str] = Counter()
    for order in plan:
        if order.fixture.status == "COMPLETED" or order.fixture.decision:
            # An order held for approval holds its stock until decided, whatever the decision.
            for item in order.body["items"]:
                demand[item["sku"]] += item["quantity"]
    return demand


@pytest.mark.parametrize("seed", [1, 20261123, 1373576497])
def test_ten_thousand_orders_fit_the_stock_their_outcomes_need(seed: int) -> None:
    plan = plan_orders(10_000, seed, "test")

    demand = _completing_demand(plan)
    assert demand[ORDINARY_SKU] <= STOCK[ORDINARY_SKU] - ORDINARY_HEADROOM
    for sku, wanted in demand.items():
        assert wanted <= STOCK[sku], sku
    # Still a mix of every fixture, and ordinary quantities still vary.
    assert len({order.fixture.name for order in plan}) == 8
    assert {o.body["items"][0]["quantity"] for o in plan if o.fixture.name == "visa"} == {1, 2, 3}


def test_a_run_that_fits_as_drawn_keeps_one_to_three_bags_an_order() -> None:
    # 1,000 orders want about 1,400 bags: nothing to fit, so a seed's plan keeps its 1 to 3.
    quantities = Counter(
        o.body["items"][0]["quantity"]
        for o in plan_orders(1_000, 20261123, "test")
        if o.body["items"][0]["sku"] == ORDINARY_SKU
    )
    assert set(quantities) == {1, 2, 3}
    assert quantities[3] > quantities[1] / 2


def test_a_run_too_large_for_the_stock_is_refused() -> None:
    with pytest.raises(ValueError, match="even at one each"):
        plan_orders(30_000, 1, "test")


def test_every_post_of_a_return_carries_a_key_of_its_own() -> None:
    # A return's POST can answer 503 after its saga started (it waits for the claim to be
    # decided); repeated under the same key it names that saga instead of starting another,
    # which the invariants would then find with no request behind it.
    plan = plan_orders(1_000, 20261123, "test")
    returns = [order.ret for order in plan if order.ret is not None]
    assert returns
    keys = [key for ret in returns for key in (ret.idempotency_key, ret.over_claim_key)]
    orders = {order.idempotency_key for order in plan}
    assert len(set(keys)) == len(keys)
    assert not orders & set(keys)
