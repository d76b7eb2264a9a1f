"""The soak's approval-hold invariants catch what they name, and pass a healthy run."""

from __future__ import annotations

from tooling.invariants import Databases, Row, no_hold_outlives_its_order, one_effect_per_key

HOLD = "o1:n:hold_for_approval"


def held_then_approved() -> Databases:
    """o1 was held for approval (its hold now released), o2 is still held and running."""
    return Databases(
        stock={},
        reservations=[],
        payments=[
            Row("o1", "o1:n:authorize_payment", "captured", 300),
            Row("o2", "o2:n:authorize_payment", "authorized", 300),
        ],
        shipments=[],
        effects={"payments": [("o1", "o1:n:authorize_payment"), ("o2", "o2:n:authorize_payment")]},
        keys={
            "payments": [
                "o1:n:authorize_payment",
                HOLD,
                "o1:n:release_approval_hold",
                "o1:n:capture_payment",
                "o2:n:authorize_payment",
                "o2:n:hold_for_approval",
            ]
        },
        holds=[Row("o1", HOLD, "released", 300), Row("o2", "o2:n:hold_for_approval", "held", 300)],
    )


ORDERS = {"o1": "COMPLETED", "o2": "AWAITING_APPROVAL"}


def test_holds_of_a_healthy_run_violate_nothing() -> None:
    databases = held_then_approved()
    assert one_effect_per_key(databases).violations == []
    assert no_hold_outlives_its_order(databases, ORDERS).violations == []


def test_a_hold_left_by_an_order_that_ended_is_caught() -> None:
    databases = held_then_approved()
    databases.holds[0] = Row("o1", HOLD, "held", 300)
    assert no_hold_outlives_its_order(databases, ORDERS).violations == [
        f"o1: COMPLETED but still holds {HOLD}"
    ]


def test_a_hold_row_without_its_record_is_caught() -> None:
    databases = held_then_approved()
    databases.holds.append(Row("o3", "o3:n:hold_for_approval", "held", 300))
    assert one_effect_per_key(databases).violations == [
        "payments: hold key o3:n:hold_for_approval without both its record and its row"
    ]
