"""The intake rule (`CoordinationView.check_intake`) on states the coordinator's book builds.

Shedding counts the sagas actively running steps, per saga type, against that type's cap:
thousands of returns waiting for their parcel and orders held for approval never refuse a
checkout; checkouts actively running at `SAGAWORKS_MAX_IN_FLIGHT_SAGAS` do, with 503 and
Retry-After; returns have their own cap (`SAGAWORKS_MAX_ACTIVE_RETURNS`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from temporalio.client import Client

from api.coordination import CHECKOUT, RETURN, CoordinationView
from api.errors import Overloaded
from common.settings import Settings
from workflows.coordination_book import Book
from workflows.coordination_models import (
    CoordinationState,
    CoordinatorConfig,
    SagaSnapshot,
    WorkerReport,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
CONFIG = CoordinatorConfig(services=["payments"])


def state_of(*groups: tuple[int, str, str, str]) -> CoordinationState:
    """The coordinator's view after one report of `count` sagas per (type, status, step)."""
    sagas = [
        SagaSnapshot(f"{saga_type}-{status}-{step}-{i}", status, step, NOW, saga_type=saga_type)
        for count, saga_type, status, step in groups
        for i in range(count)
    ]
    book = Book()
    book.apply_report(WorkerReport("orders 1@h", sagas=sagas), NOW, CONFIG)
    return book.view(NOW, CONFIG, 0)


def view_of(state: CoordinationState, **settings: Any) -> CoordinationView:
    view = CoordinationView(cast(Client, None), Settings(**settings))

    async def read(*, background: bool = False) -> CoordinationState:
        return state

    view.state = read  # type: ignore[method-assign]
    return view


PARKED_RETURNS = (5_000, RETURN, "AWAITING_PARCEL", "await_parcel")
HELD_ORDERS = (3_000, CHECKOUT, "AWAITING_APPROVAL", "await_approval")


async def test_parked_returns_and_held_orders_never_shed_a_checkout() -> None:
    state = state_of(PARKED_RETURNS, HELD_ORDERS, (1, CHECKOUT, "PENDING", "reserve_stock"))
    assert state.sagas.in_flight == 8_001  # what the old rule compared with the cap
    await view_of(state, max_in_flight_sagas=2_000).check_intake()
    await view_of(state, max_in_flight_sagas=2_000).check_intake(RETURN)


async def test_checkouts_actively_running_at_the_cap_shed_with_retry_after() -> None:
    state = state_of(PARKED_RETURNS, (2, CHECKOUT, "PENDING", "authorize_payment"))
    with pytest.raises(Overloaded) as shed:
        await view_of(state, max_in_flight_sagas=2, shed_retry_after_s=7).check_intake()
    assert shed.value.status_code == 503
    assert shed.value.retry_after == 7
    assert "2 checkouts actively running (limit 2" in shed.value.detail
    # One below the cap still takes the checkout; the returns' own cap is not reached.
    await view_of(state, max_in_flight_sagas=3).check_intake()
    await view_of(state, max_in_flight_sagas=2).check_intake(RETURN)


async def test_returns_have_a_cap_of_their_own_on_active_returns_only() -> None:
    state = state_of(PARKED_RETURNS, (3, RETURN, "AWAITING_PARCEL", "claim_return"))
    with pytest.raises(Overloaded) as shed:
        await view_of(state, max_active_returns=3).check_intake(RETURN)
    assert "3 returns actively running (limit 3" in shed.value.detail
    await view_of(state, max_active_returns=4).check_intake(RETURN)
    await view_of(state, max_in_flight_sagas=1).check_intake()  # checkouts are not affected


async def test_a_paused_intake_sheds_checkouts() -> None:
    state = state_of()
    state.intake.paused, state.intake.reason = True, "paused by operator"
    with pytest.raises(Overloaded, match="intake is paused"):
        await view_of(state).check_intake()


def test_the_state_shows_the_caps_beside_the_counts() -> None:
    state = state_of(PARKED_RETURNS, (1, CHECKOUT, "PENDING", "reserve_stock"))
    view = view_of(state, max_in_flight_sagas=40, max_active_returns=9)
    shown = view._with_caps(state)
    assert shown.sagas.active_caps == {CHECKOUT: 40, RETURN: 9}
    assert shown.sagas.active_by_type == {CHECKOUT: 1}
    assert shown.sagas.parked_by_type == {RETURN: 5_000}
