"""The system as `make up` runs it, under the two things a unit test cannot reproduce.

A real dev server, the four real worker processes and the real API process; orders go in
through HTTP only. `test_system.py` walks every order path once. This module adds:

- customer cancels racing the saga's steps on the real server, where a step may commit
  after the cancel was accepted (the time-skipping server mishandles that race, so the
  property test holds its steps still instead);
- workers stopped with SIGTERM in the middle of sagas and started again: they exit 0,
  the sagas wait for them and then finish, and nothing is lost or done twice.

After each test the three services' SQLite files are read directly: stock is conserved,
money is taken and parcels go out exactly for the completed orders, and every
idempotency key recorded by a service maps to exactly one effect.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio

from activities.inventory import CATALOGUE
from tests.support.api_client import Api, order_body, poll, system_on_dev_server
from tests.support.stack import SERVICES

pytestmark = pytest.mark.e2e

TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


@dataclass
class System:
    api: Api
    # Every order this module placed, with its final status: the databases hold no other.
    finals: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def finish(self, order_id: str) -> dict[str, Any]:
        final = await self.api.wait_for(order_id, *TERMINAL)
        self.finals[order_id] = final
        return final

    def rows(self, service: str, sql: str) -> list[tuple[Any, ...]]:
        path = self.api.stack.data_dir / f"{service}.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()


@pytest_asyncio.fixture(scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async with system_on_dev_server(tmp_path_factory.mktemp("checkout")) as api:
        yield System(api)


async def test_cancels_racing_the_steps_leave_nothing_half_done(system: System) -> None:
    api = system.api
    # No fixture here can fail on its own (plenty of stock, good cards, deliverable), so a
    # cancel explains every rollback: accepted means rolled back, refused means completed.
    cancel_when = {
        "right after the POST": ("tok_visa", None),
        "reserving": ("tok_visa", "reserve_stock"),
        "authorizing": ("tok_flaky", "authorize_payment"),  # ~3 s of retries in flight
        "shipping": ("tok_visa", "create_shipment"),
    }

    async def place_and_cancel(card: str, step: str | None) -> tuple[str, int]:
        order_id = await api.place(order_body(sku="SKU-2", quantity=1, card=card))
        if step is not None:
            await poll(lambda: api.http.get(f"/orders/{order_id}"), _has_reached(step))
        answer = await api.http.post(f"/orders/{order_id}/cancel")
        assert answer.status_code in (202, 409), answer.text
        return order_id, answer.status_code

    moments = [moment for moment in cancel_when for _ in range(2)]
    answers = await asyncio.gather(*(place_and_cancel(*cancel_when[m]) for m in moments))
    for moment, (order_id, code) in zip(moments, answers, strict=True):
        final = await system.finish(order_id)
        outcome = (final["status"], final["failure_reason"])
        if code == 202:
            assert outcome == ("COMPENSATED", "CANCELLED_BY_CUSTOMER"), (moment, final)
            assert {c["status"] for c in final["compensations"]} <= {"succeeded", "not_needed"}
        else:
            assert outcome == ("COMPLETED", None), (moment, final)
        # While the flaky card is being retried the cancel is in time; once the shipment
        # is under way it is refused, as ARCHITECTURE.md, HTTP contract promises.
        if moment == "authorizing":
            assert code == 202, final
        if moment == "shipping":
            assert code == 409, final
    assert_services_consistent(system)


async def test_workers_stopped_mid_saga_lose_nothing_and_exit_cleanly(system: System) -> None:
    api, stack = system.api, system.api.stack

    # The orders worker goes while a saga waits for approval; a new process replays it.
    held = await api.place(order_body(sku="SKU-3", quantity=1))
    await api.wait_for(held, "AWAITING_APPROVAL")
    assert stack.stop("orders", signal.SIGTERM) == 0
    stack.start("orders")
    await api.wait_for(held, "AWAITING_APPROVAL")  # answered by the new process
    approved = await api.http.post(f"/orders/{held}/approve")
    assert approved.status_code == 200, approved.text

    # The payments worker goes while a flaky card is being retried; the saga waits for it.
    retried = await api.place(order_body(sku="SKU-1", quantity=2, card="tok_flaky"))
    seen = await poll(lambda: api.http.get(f"/orders/{retried}"), _has_reached("authorize_payment"))
    assert seen.json()["status"] == "PENDING", seen.text
    assert stack.stop("payments", signal.SIGTERM) == 0
    stack.start("payments")

    assert (await system.finish(held))["status"] == "COMPLETED"
    final = await system.finish(retried)
    assert final["status"] == "COMPLETED", final
    authorize = [s for s in final["steps"] if s["name"] == "authorize_payment"]
    # Two failures first, then success; an attempt cut short by the stop may add one.
    assert len(authorize) == 1 and authorize[0]["attempts"] >= 3, authorize
    assert_services_consistent(system)

    codes = {name: stack.stop(name, signal.SIGTERM) for name in SERVICES}
    assert codes == dict.fromkeys(SERVICES, 0), stack.logs()


def _has_reached(step: str) -> Callable[[httpx.Response], bool]:
    def reached(response: httpx.Response) -> bool:
        assert response.status_code in (200, 503), response.text  # 503: busy, not yet
        if response.status_code != 200:
            return False
        status = response.json()
        return status["status"] in TERMINAL or any(s["name"] == step for s in status["steps"])

    return reached


def assert_services_consistent(system: System) -> None:
    finals = system.finals
    completed = {o for o, f in finals.items() if f["status"] == "COMPLETED"}
    assert all(f["status"] in ("COMPLETED", "COMPENSATED") for f in finals.values())

    shelf = dict(system.rows("inventory", "SELECT sku, stock FROM inventory_product"))
    reservations = system.rows(
        "inventory",
        "SELECT order_id, reservation_key, status, lines_json, total_cents"
        " FROM inventory_reservation",
    )
    payments = system.rows(
        "payments", "SELECT order_id, authorization_key, status, amount_cents FROM payments_payment"
    )
    shipments = system.rows(
        "shipping", "SELECT order_id, shipment_key, status FROM shipping_shipment"
    )
    for table in (reservations, payments, shipments):
        per_order = Counter(row[0] for row in table)
        assert set(per_order) <= set(finals), "a row for an order nobody placed"
        assert set(per_order.values()) <= {1}, "two rows for one saga step"

    held: Counter[str] = Counter()
    for _, _, status, lines, _ in reservations:
        if status == "reserved":
            for line in json.loads(lines):
                held[line["sku"]] += line["quantity"]
    for product in CATALOGUE:
        assert shelf[product.sku] + held[product.sku] == product.stock, product.sku

    reserved = {o: total for o, _, status, _, total in reservations if status == "reserved"}
    captured = {o: amount for o, _, status, amount in payments if status == "captured"}
    assert reserved.keys() == completed
    assert captured == reserved, "each completed order paid exactly what it reserved"
    assert {o for o, _, status in shipments if status == "created"} == completed
    assert {status for _, _, status, _ in payments} <= {"captured", "voided"}

    # An order held for approval also took a slot in the payments hold ledger: an effect
    # of its own (released once decided), under the hold step's key.
    holds = system.rows("payments", "SELECT hold_key, status FROM payments_approval_hold")
    effects = {
        "inventory": {key: status for _, key, status, _, _ in reservations},
        "payments": {key: status for _, key, status, _ in payments} | dict(holds),
        "shipping": {key: status for _, key, status in shipments},
    }
    assert {status for _, status in holds} <= {"released"}, "a hold outlived its order"
    for service, undone in (
        ("inventory", "released"),
        ("payments", "voided"),
        ("shipping", "cancelled"),
    ):
        assert_one_effect_per_key(system, service, effects[service], undone)


def assert_one_effect_per_key(
    system: System, service: str, effects: dict[str, str], undone: str
) -> None:
    """Every recorded key names one effect row, and every effect row was made under a key.

    A step's key is `<order_id>:<step>` and its compensation's is `<order_id>:<step>:undo`.
    The undo either undid the step's row or, if the step never ran, left a tombstone in its
    place; either way that row ends up in the undone state.
    """
    keys = {key for (key,) in system.rows(service, "SELECT key FROM idempotency_record")}
    assert {k.split(":", 1)[0] for k in keys} <= set(system.finals)
    # Steps that change a row of another step instead of making their own.
    no_row = (":capture_payment", ":release_approval_hold")
    step_keys = {k.removesuffix(":undo") for k in keys if not k.endswith(no_row)}
    for key in step_keys:
        assert key in effects, f"{service}: {key} recorded without its effect"
        if f"{key}:undo" in keys:
            state = "released" if key.endswith(":hold_for_approval") else undone
            assert effects[key] == state, f"{service}: {key} undone but {effects[key]}"
    for key in keys:
        if key.endswith(":capture_payment"):
            authorization = key.replace(":capture_payment", ":authorize_payment")
            assert effects.get(authorization) == "captured", key
    assert set(effects) == step_keys, f"{service}: an effect with no idempotency record"
