"""The soak's returns invariants catch what they name, and pass a healthy run."""

from __future__ import annotations

from tooling.invariants import (
    Databases,
    ReturnRow,
    Row,
    check_all,
    claims_within_orders,
    net_charge_is_captured_minus_refunded,
    refunds_within_captures,
    restocked_equals_received,
    stock_conserved,
)

ORDERS = {"o1": "COMPLETED"}


def healthy() -> Databases:
    """o1 bought 3 x SKU-1 for 300; r1 returned 1 (refunded 100), r2 expired, r3 refused."""
    return Databases(
        stock={"SKU-1": 7 + 1},
        reservations=[Row("o1", "o1:n:reserve_stock", "reserved", 300, (("SKU-1", 3),))],
        payments=[Row("o1", "o1:n:authorize_payment", "captured", 300)],
        shipments=[Row("o1", "o1:n:create_shipment", "created")],
        claims=[
            ReturnRow("r1", "o1", "r1:n:claim_return", "restocked", 100, (("SKU-1", 1),)),
            ReturnRow("r2", "o1", "r2:n:claim_return", "released", 100, (("SKU-1", 2),)),
            ReturnRow("r3", "o1", "r3:n:claim_return", "released"),
        ],
        refunds=[ReturnRow("r1", "o1", "r1:n:refund_return", amount_cents=100)],
        labels=[
            ReturnRow("r1", "o1", "r1:n:issue_return_label", "issued"),
            ReturnRow("r2", "o1", "r2:n:issue_return_label", "cancelled"),
        ],
    )


RETURNS = {"r1": "REFUNDED", "r2": "EXPIRED", "r3": "FAILED"}


def test_a_healthy_run_violates_nothing() -> None:
    checks = check_all(healthy(), ORDERS, {"SKU-1": 10}, RETURNS)
    assert {c.name: c.violations for c in checks if c.violations} == {}


def test_a_refund_above_the_capture_is_caught() -> None:
    databases = healthy()
    databases.refunds.append(ReturnRow("r9", "o1", "r9:n:refund_return", amount_cents=201))
    assert refunds_within_captures(databases).violations == ["o1: 301 refunded, 300 captured"]


def test_an_over_claim_is_caught() -> None:
    databases = healthy()
    databases.claims.append(ReturnRow("r9", "o1", "k", "claimed", 0, (("SKU-1", 3),)))
    assert claims_within_orders(databases).violations == ["o1: 4 x SKU-1 claimed, bought fewer"]


def test_restock_without_a_received_return_and_a_live_label_are_caught() -> None:
    databases = healthy()
    returns = {**RETURNS, "r2": "CANCELLED"}
    databases.labels[1] = ReturnRow("r2", "o1", "r2:n:issue_return_label", "issued")
    databases.claims[1] = ReturnRow("r2", "o1", "r2:n:claim_return", "restocked", 100)
    found = restocked_equals_received(databases, returns).violations
    assert "r2: CANCELLED but its claim is restocked" in found
    assert "r2: CANCELLED but its label is issued" in found
    assert "r2: restocked, but the return is CANCELLED" in found


def test_a_refund_that_is_not_the_claimed_share_is_caught() -> None:
    databases = healthy()
    databases.refunds[0] = ReturnRow("r1", "o1", "r1:n:refund_return", amount_cents=90)
    assert net_charge_is_captured_minus_refunded(databases, ORDERS).violations
    assert restocked_equals_received(databases, RETURNS).violations == [
        "r1: refunded [90], its share is 100"
    ]


def test_restocked_items_count_in_the_stock_balance() -> None:
    databases = healthy()
    databases.stock["SKU-1"] = 7  # the restock never reached the shelf
    assert stock_conserved(databases, {"SKU-1": 10}).violations
