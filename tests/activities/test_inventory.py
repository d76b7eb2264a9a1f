"""Inventory activities: reservations keyed for idempotency, releases that tombstone."""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.inventory import CATALOGUE, InventoryActivities, Product, Reservation
from common.db import SessionFactory
from workflows.models import (
    BusinessError,
    OrderItem,
    ReleaseStockInput,
    ReserveStockInput,
    ReserveStockResult,
)

INITIAL = {p.sku: p.stock for p in CATALOGUE}
PRICE = {p.sku: p.price_cents for p in CATALOGUE}


def stock(open_session: SessionFactory, sku: str) -> int:
    with open_session() as session:
        product = session.get(Product, sku)
        assert product is not None
        return product.stock


def reservations(open_session: SessionFactory) -> list[Reservation]:
    with open_session() as session:
        return list(session.exec(select(Reservation)).all())


def reserve(order: str, *items: tuple[str, int]) -> ReserveStockInput:
    lines = [OrderItem(sku=sku, quantity=quantity) for sku, quantity in items]
    return ReserveStockInput(idempotency_key=f"{order}:reserve_stock", order_id=order, items=lines)


def release(order: str, key_suffix: str = "undo") -> ReleaseStockInput:
    return ReleaseStockInput(
        idempotency_key=f"{order}:reserve_stock:{key_suffix}",
        reservation_key=f"{order}:reserve_stock",
        order_id=order,
    )


def test_reserve_takes_stock_and_prices_the_order(inventory_db: SessionFactory) -> None:
    result = InventoryActivities(inventory_db).reserve_stock(
        reserve("o1", ("SKU-1", 2), ("SKU-2", 1))
    )

    assert result.total_cents == 2 * PRICE["SKU-1"] + PRICE["SKU-2"]
    assert result.attempt == 1
    assert stock(inventory_db, "SKU-1") == INITIAL["SKU-1"] - 2
    assert stock(inventory_db, "SKU-2") == INITIAL["SKU-2"] - 1
    [reservation] = reservations(inventory_db)
    assert (reservation.id, reservation.status) == (result.reservation_id, "reserved")


def test_reserve_records_each_lines_unit_price_as_paid(inventory_db: SessionFactory) -> None:
    service = InventoryActivities(inventory_db)
    service.reserve_stock(reserve("o1", ("SKU-2", 1), ("SKU-1", 2), ("SKU-1", 1)))
    with inventory_db() as session:
        product = session.get(Product, "SKU-1")
        assert product is not None
        product.price_cents = 99_999  # a price change after the order
        session.add(product)
        session.commit()

    [reservation] = reservations(inventory_db)

    # The prices the order paid, whatever the catalogue says later: refunds split by them.
    assert json.loads(reservation.lines_json) == [
        {"sku": "SKU-1", "quantity": 3, "unit_price_cents": PRICE["SKU-1"]},
        {"sku": "SKU-2", "quantity": 1, "unit_price_cents": PRICE["SKU-2"]},
    ]
    assert reservation.total_cents == 3 * PRICE["SKU-1"] + PRICE["SKU-2"]


def test_repeated_key_returns_first_result_without_taking_stock_again(
    inventory_db: SessionFactory,
) -> None:
    service = InventoryActivities(inventory_db)
    first = service.reserve_stock(reserve("o1", ("SKU-2", 3)))
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2)
    again = env.run(service.reserve_stock, reserve("o1", ("SKU-2", 3)))

    assert again == dataclasses.replace(first, attempt=2)
    assert stock(inventory_db, "SKU-2") == INITIAL["SKU-2"] - 3
    assert len(reservations(inventory_db)) == 1


def test_out_of_stock_is_non_retryable_and_leaves_every_line_untouched(
    inventory_db: SessionFactory,
) -> None:
    service = InventoryActivities(inventory_db)
    # SKU-1 is available and comes first: its decrement must roll back with the rest.
    with pytest.raises(ApplicationError) as raised:
        service.reserve_stock(reserve("o1", ("SKU-1", 1), ("SKU-4", INITIAL["SKU-4"] + 1)))

    assert raised.value.type == BusinessError.OUT_OF_STOCK
    assert raised.value.non_retryable
    assert raised.value.details[0]["available"] == INITIAL["SKU-4"]
    assert stock(inventory_db, "SKU-1") == INITIAL["SKU-1"]
    assert stock(inventory_db, "SKU-4") == INITIAL["SKU-4"]
    assert reservations(inventory_db) == []


def test_a_quantity_the_database_refuses_fails_for_good_and_takes_nothing(
    inventory_db: SessionFactory,
) -> None:
    # Above 64 bits: SQLite cannot bind it, PostgreSQL finds it out of range. No retry of
    # this input can ever succeed, so the step must not retry (a poison pill).
    service = InventoryActivities(inventory_db)
    with pytest.raises(ApplicationError) as raised:
        service.reserve_stock(reserve("o1", ("SKU-1", 1), ("SKU-2", 2**63)))

    assert (raised.value.type, raised.value.non_retryable) == (BusinessError.INVALID_INPUT, True)
    assert str(2**63) not in str(raised.value)
    assert stock(inventory_db, "SKU-1") == INITIAL["SKU-1"]
    assert reservations(inventory_db) == []


def test_repeated_skus_are_checked_as_one_quantity(inventory_db: SessionFactory) -> None:
    half = INITIAL["SKU-4"] // 2 + 1  # each line alone fits, together they do not
    with pytest.raises(ApplicationError) as raised:
        InventoryActivities(inventory_db).reserve_stock(
            reserve("o1", ("SKU-4", half), ("SKU-4", half))
        )

    assert raised.value.details[0]["requested"] == 2 * half
    assert stock(inventory_db, "SKU-4") == INITIAL["SKU-4"]


def test_a_failed_reserve_stores_nothing_so_a_retry_evaluates_afresh(
    inventory_db: SessionFactory,
) -> None:
    service = InventoryActivities(inventory_db)
    with pytest.raises(ApplicationError):
        service.reserve_stock(reserve("o1", ("SKU-4", 7)))
    with inventory_db() as session:  # restocked between the two attempts
        product = session.get(Product, "SKU-4")
        assert product is not None
        product.stock = 10
        session.add(product)
        session.commit()

    result = service.reserve_stock(reserve("o1", ("SKU-4", 7)))

    assert result.total_cents == 7 * PRICE["SKU-4"]
    assert stock(inventory_db, "SKU-4") == 3


def test_release_restores_stock_once_even_when_repeated(inventory_db: SessionFactory) -> None:
    service = InventoryActivities(inventory_db)
    service.reserve_stock(reserve("o1", ("SKU-3", 4)))

    assert service.release_stock(release("o1")).released is True
    assert service.release_stock(release("o1")).released is True  # same key: first result
    assert service.release_stock(release("o1", "undo-again")).released is False  # new key

    assert stock(inventory_db, "SKU-3") == INITIAL["SKU-3"]
    [reservation] = reservations(inventory_db)
    assert reservation.status == "released"
    assert reservation.released_at is not None


def test_release_with_nothing_reserved_is_a_no_op_that_blocks_a_late_reserve(
    inventory_db: SessionFactory,
) -> None:
    service = InventoryActivities(inventory_db)

    assert service.release_stock(release("o1")).released is False
    assert stock(inventory_db, "SKU-3") == INITIAL["SKU-3"]

    # The reserve attempt that was still in flight when the saga rolled back lands now.
    late = service.reserve_stock(reserve("o1", ("SKU-3", 2)))

    assert late.total_cents == 0
    assert stock(inventory_db, "SKU-3") == INITIAL["SKU-3"]
    [tombstone] = reservations(inventory_db)
    assert (tombstone.status, tombstone.id) == ("released", late.reservation_id)


def test_concurrent_reserves_with_the_same_key_make_one_reservation(
    inventory_db: SessionFactory,
) -> None:
    service = InventoryActivities(inventory_db)
    threads = 8
    barrier = threading.Barrier(threads)

    def attempt(_: int) -> ReserveStockResult:
        barrier.wait()
        return service.reserve_stock(reserve("o1", ("SKU-2", 5)))

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(attempt, range(threads)))

    assert len({r.reservation_id for r in results}) == 1
    assert len(reservations(inventory_db)) == 1
    assert stock(inventory_db, "SKU-2") == INITIAL["SKU-2"] - 5


def test_concurrent_reserves_of_the_last_units_never_oversell(
    inventory_db: SessionFactory,
) -> None:
    service = InventoryActivities(inventory_db)
    threads, quantity = 8, 2  # 16 units wanted, 5 in stock: exactly 2 orders fit
    barrier = threading.Barrier(threads)

    def attempt(n: int) -> str:
        barrier.wait()
        try:
            service.reserve_stock(reserve(f"o{n}", ("SKU-4", quantity)))
        except ApplicationError as err:
            assert err.type == BusinessError.OUT_OF_STOCK
            return "out_of_stock"
        return "reserved"

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(attempt, range(threads)))

    fitted = INITIAL["SKU-4"] // quantity
    assert outcomes.count("reserved") == fitted
    assert len(reservations(inventory_db)) == fitted
    assert stock(inventory_db, "SKU-4") == INITIAL["SKU-4"] - fitted * quantity >= 0


def test_result_reports_the_current_attempt(inventory_db: SessionFactory) -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=4)
    result = env.run(InventoryActivities(inventory_db).reserve_stock, reserve("o1", ("SKU-1", 1)))

    assert result.attempt == 4
