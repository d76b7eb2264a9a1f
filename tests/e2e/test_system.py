"""The whole system as `make up` runs it, checked where it matters: in each service's database.

A real dev server, the four real worker processes and the real API process. Every kind of
order goes in through HTTP only; then each service's database is read directly to prove
that stock is conserved, that every saga left exactly one effect per idempotency key, and
that nothing was charged without being shipped. Finally the workers stop cleanly on SIGTERM.

The module runs three times: as `make up` runs it (SQLite files); with
`max_cached_workflows=0` on the orders worker, which replays every saga from its history at
each step (hidden nondeterminism); and with every service database and the gateway's on
PostgreSQL, each migrated by its own processes at start.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from activities.inventory import CATALOGUE
from bench.invariants import query
from common.migrate import head_revision
from tests.support.api_client import Api, order_body, system_on_dev_server
from tests.support.databases import DATABASES, database_env
from tests.support.stack import SERVICES, Stack

pytestmark = pytest.mark.e2e

TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


@pytest_asyncio.fixture(
    scope="module",
    params=[("cached", "sqlite"), ("uncached", "sqlite"), ("cached", "postgresql")],
    ids=["sqlite", "sqlite-uncached", "postgresql"],
)
async def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    cache, backend = request.param
    # Once more with no workflow cache: every workflow task then replays the saga from its
    # history, so any hidden nondeterminism fails here instead of in production.
    env = {"SAGAWORKS_MAX_CACHED_WORKFLOWS": "0"} if cache == "uncached" else {}
    cluster = request.getfixturevalue("postgres") if backend == "postgresql" else None
    env |= database_env(backend, cluster)
    async with system_on_dev_server(tmp_path_factory.mktemp("system"), env) as api:
        yield api


def rows(stack: Stack, service: str, sql: str) -> list[tuple[Any, ...]]:
    return query(stack.database_url(service), sql)


async def test_every_path_through_http_leaves_consistent_service_databases(
    system: Api,
) -> None:
    expected = {
        "happy": ("COMPLETED", None),
        "flaky": ("COMPLETED", None),
        "declined": ("COMPENSATED", "PAYMENT_DECLINED"),
        "undeliverable": ("COMPENSATED", "UNDELIVERABLE"),
        "out_of_stock": ("COMPENSATED", "OUT_OF_STOCK"),
        "approved": ("COMPLETED", None),
        "rejected": ("COMPENSATED", "REJECTED_BY_OPERATOR"),
        "cancelled": ("COMPENSATED", "CANCELLED_BY_CUSTOMER"),
    }
    bodies = {
        "happy": order_body(sku="SKU-1", quantity=3),
        "flaky": order_body(sku="SKU-2", quantity=1, card="tok_flaky"),
        "declined": order_body(sku="SKU-2", quantity=2, card="tok_decline"),
        "undeliverable": order_body(sku="SKU-1", quantity=1, country="XX"),
        "out_of_stock": order_body(sku="SKU-4", quantity=6),
        "approved": order_body(sku="SKU-3", quantity=1),
        "rejected": order_body(sku="SKU-3", quantity=1),
        "cancelled": order_body(sku="SKU-3", quantity=2),
    }
    ids = {name: await system.place(body) for name, body in bodies.items()}

    for name in ("approved", "rejected", "cancelled"):
        await system.wait_for(ids[name], "AWAITING_APPROVAL")
    decisions = {
        "approved": await system.http.post(f"/orders/{ids['approved']}/approve"),
        "rejected": await system.http.post(f"/orders/{ids['rejected']}/reject"),
        "cancelled": await system.http.post(f"/orders/{ids['cancelled']}/cancel"),
    }
    assert {n: r.status_code for n, r in decisions.items()} == {
        "approved": 200,
        "rejected": 200,
        "cancelled": 202,
    }

    finals = {name: await system.wait_for(order_id, *TERMINAL) for name, order_id in ids.items()}
    assert {n: (f["status"], f["failure_reason"]) for n, f in finals.items()} == expected
    flaky_authorize = [s for s in finals["flaky"]["steps"] if s["name"] == "authorize_payment"]
    assert flaky_authorize[0]["attempts"] == 3

    stack = system.stack
    completed = {ids[n] for n, (status, _) in expected.items() if status == "COMPLETED"}

    # Stock: what is gone from the shelf is exactly what completed orders still hold.
    shelf: dict[str, int] = dict(
        rows(stack, "inventory", "SELECT sku, stock FROM inventory_product")
    )
    held: Counter[str] = Counter()
    reserved = rows(
        stack,
        "inventory",
        "SELECT order_id, lines_json FROM inventory_reservation WHERE status = 'reserved'",
    )
    for order_id, lines in reserved:
        assert order_id in completed
        for line in json.loads(str(lines)):
            held[line["sku"]] += line["quantity"]
    for product in CATALOGUE:
        assert shelf[product.sku] + held[product.sku] == product.stock, product.sku
    assert {order_id for order_id, _ in reserved} == completed

    # Payments: captured exactly for the completed orders; everything else undone.
    payments = rows(stack, "payments", "SELECT order_id, status FROM payments_payment")
    assert Counter(o for o, _ in payments).most_common(1)[0][1] == 1, "one payment per order"
    assert {o for o, s in payments if s == "captured"} == completed
    assert {s for o, s in payments if o not in completed} <= {"voided"}

    # Shipping: a live shipment for each completed order, and for nothing else.
    shipments = rows(stack, "shipping", "SELECT order_id, status FROM shipping_shipment")
    assert {o for o, s in shipments if s == "created"} == completed
    assert Counter(o for o, _ in shipments).most_common(1)[0][1] == 1, "one shipment per order"

    # Idempotency: each service recorded each key once, and only its own operations.
    for service in ("inventory", "payments", "shipping"):
        keys = [k for (k,) in rows(stack, service, "SELECT key FROM idempotency_record")]
        assert len(keys) == len(set(keys))
        assert all(k.split(":", 1)[0] in ids.values() for k in keys)


async def test_each_database_is_at_its_migration_head_where_the_settings_put_it(
    system: Api,
) -> None:
    # The processes migrated them at start: the workers their own, the API the gateway's.
    stack = system.stack
    versions = {
        database: rows(stack, database, "SELECT version_num FROM alembic_version")
        for database in DATABASES
    }
    assert versions == {database: [(head_revision(database),)] for database in DATABASES}
    on_postgres = "SAGAWORKS_INVENTORY_DATABASE_URL" in stack.env
    sqlite_files = sorted(path.stem for path in stack.data_dir.glob("*.db"))
    assert sqlite_files == ([] if on_postgres else sorted(DATABASES))


async def test_workers_stop_cleanly_on_sigterm(system: Api) -> None:
    # Runs last in this module: the stack is not used afterwards.
    codes = {name: system.stack.stop(name, signal.SIGTERM) for name in SERVICES}
    assert codes == dict.fromkeys(SERVICES, 0)
