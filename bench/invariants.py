"""What must hold in the services' databases once sagas have run, whatever failed meanwhile.

Read straight from each service's own SQLite file (never through the services or the API,
which could hide a double effect behind an idempotent answer) and checked against the
terminal status of every order that was placed. Used by `make soak` and by the fault suite.

Each saga step's idempotency key is `<order_id>:<step>` and its compensation's is
`<order_id>:<step>:undo`. A compensation that finds no effect leaves a tombstone row under
the step's key, so that a late attempt of the step cannot take effect after the rollback.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.inventory import CATALOGUE

TERMINAL = frozenset({"COMPLETED", "COMPENSATED", "FAILED"})
CAPTURE_SUFFIX = ":capture_payment"
UNDO_SUFFIX = ":undo"
EXAMPLES_KEPT = 20
# What inventory seeds into a fresh database: the stock every check starts from.
INITIAL_STOCK = {product.sku: product.stock for product in CATALOGUE}


@dataclass(frozen=True)
class EffectTable:
    """Where a service keeps the rows its steps create, keyed by the step's idempotency key."""

    table: str
    key_column: str


EFFECT_TABLES = {
    "inventory": EffectTable("inventory_reservation", "reservation_key"),
    "payments": EffectTable("payments_payment", "authorization_key"),
    "shipping": EffectTable("shipping_shipment", "shipment_key"),
    "notifications": EffectTable("notifications_notification", "notification_key"),
}


@dataclass(frozen=True)
class Row:
    order_id: str
    key: str
    status: str
    amount_cents: int = 0
    lines: tuple[tuple[str, int], ...] = ()


@dataclass
class Databases:
    """Everything the checks read, from one pass over the service databases."""

    stock: dict[str, int]
    reservations: list[Row]
    payments: list[Row]
    shipments: list[Row]
    # Per service present: its effect rows' (order_id, key) and its idempotency keys.
    effects: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)


def read_databases(data_dir: Path) -> Databases:
    def rows(service: str, sql: str) -> list[tuple[Any, ...]]:
        path = data_dir / f"{service}.db"
        if not path.exists():
            return []
        # Read-only: the checks must never be the thing that changes what they check.
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql).fetchall()

    databases = Databases(
        stock=dict(rows("inventory", "SELECT sku, stock FROM inventory_product")),
        reservations=[
            Row(order, key, status, total, _lines(lines))
            for order, key, status, total, lines in rows(
                "inventory",
                "SELECT order_id, reservation_key, status, total_cents, lines_json"
                " FROM inventory_reservation",
            )
        ],
        payments=[
            Row(order, key, status, amount)
            for order, key, status, amount in rows(
                "payments",
                "SELECT order_id, authorization_key, status, amount_cents FROM payments_payment",
            )
        ],
        shipments=[
            Row(order, key, status)
            for order, key, status in rows(
                "shipping", "SELECT order_id, shipment_key, status FROM shipping_shipment"
            )
        ],
    )
    for service, spec in EFFECT_TABLES.items():
        if not (data_dir / f"{service}.db").exists():
            continue  # a service this run did not start
        databases.effects[service] = [
            (str(order), str(key))
            for order, key in rows(service, f"SELECT order_id, {spec.key_column} FROM {spec.table}")
        ]
        databases.keys[service] = [
            str(key) for (key,) in rows(service, "SELECT key FROM idempotency_record")
        ]
    return databases


def _lines(lines_json: str) -> tuple[tuple[str, int], ...]:
    return tuple((line["sku"], int(line["quantity"])) for line in json.loads(lines_json or "[]"))


@dataclass
class Check:
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "violations": len(self.violations),
            "examples": self.violations[:EXAMPLES_KEPT],
        }


def check_all(
    databases: Databases, orders: Mapping[str, str], initial_stock: Mapping[str, int]
) -> list[Check]:
    """Run every check. `orders` maps each placed order to its last known status."""
    return [
        every_order_terminal(orders),
        stock_conserved(databases, initial_stock),
        no_capture_without_shipment(databases),
        no_shipment_without_capture(databases, orders),
        compensated_net_zero(databases, orders),
        all_or_nothing(databases, orders),
        one_effect_per_key(databases),
        no_effect_for_unknown_orders(databases, orders),
    ]


def violations(checks: list[Check]) -> int:
    return sum(len(check.violations) for check in checks)


def every_order_terminal(orders: Mapping[str, str]) -> Check:
    check = Check("every order is terminal", checked=len(orders))
    for order_id, status in sorted(orders.items()):
        if status not in TERMINAL:
            check.fail(f"{order_id} is still {status}")
    return check


def stock_conserved(databases: Databases, initial_stock: Mapping[str, int]) -> Check:
    """Initial stock = stock on the shelf + stock held by live reservations, per SKU."""
    check = Check("stock is conserved", checked=len(initial_stock))
    held: Counter[str] = Counter()
    for reservation in databases.reservations:
        if reservation.status == "reserved":
            for sku, quantity in reservation.lines:
                held[sku] += quantity
    for sku, initial in sorted(initial_stock.items()):
        shelf = databases.stock.get(sku)
        if shelf is None or shelf + held[sku] != initial:
            check.fail(f"{sku}: initial {initial} != shelf {shelf} + reserved {held[sku]}")
    return check


def no_capture_without_shipment(databases: Databases) -> Check:
    shipped = {s.order_id for s in databases.shipments if s.status == "created"}
    captured = [p for p in databases.payments if p.status == "captured"]
    check = Check("no capture without a shipment", checked=len(captured))
    for payment in captured:
        if payment.order_id not in shipped:
            check.fail(f"{payment.order_id}: captured {payment.amount_cents} with no shipment")
    return check


def no_shipment_without_capture(databases: Databases, orders: Mapping[str, str]) -> Check:
    """A live parcel is paid for, or its saga is still on its way to the capture."""
    payment = {p.order_id: p.status for p in databases.payments}
    shipped = [s for s in databases.shipments if s.status == "created"]
    check = Check("no shipment without a capture or a pending capture", checked=len(shipped))
    for shipment in shipped:
        status = payment.get(shipment.order_id)
        pending = status == "authorized" and orders.get(shipment.order_id) not in TERMINAL
        if status != "captured" and not pending:
            check.fail(f"{shipment.order_id}: shipped, payment {status or 'missing'}")
    return check


def compensated_net_zero(databases: Databases, orders: Mapping[str, str]) -> Check:
    """A rolled-back order keeps no money: nothing captured, and no authorization left open."""
    compensated = {o for o, status in orders.items() if status == "COMPENSATED"}
    check = Check("every compensated order has a net charge of zero", checked=len(compensated))
    charged: Counter[str] = Counter()
    for payment in databases.payments:
        if payment.order_id in compensated and payment.status in ("captured", "authorized"):
            charged[payment.order_id] += payment.amount_cents
    for order_id, cents in sorted(charged.items()):
        check.fail(f"{order_id}: compensated but {cents} cents still charged or held")
    return check


def all_or_nothing(databases: Databases, orders: Mapping[str, str]) -> Check:
    """A completed order holds its stock, its capture and its parcel; a compensated one none."""
    live: dict[str, set[str]] = {}
    for kind, rows, status in (
        ("stock", databases.reservations, "reserved"),
        ("capture", databases.payments, "captured"),
        ("parcel", databases.shipments, "created"),
    ):
        live[kind] = {row.order_id for row in rows if row.status == status}
    reserved = {r.order_id: r.amount_cents for r in databases.reservations}
    captured = {p.order_id: p.amount_cents for p in databases.payments if p.status == "captured"}
    finished = {o: s for o, s in orders.items() if s in ("COMPLETED", "COMPENSATED")}
    check = Check("every order is all done or all undone", checked=len(finished))
    for order_id, status in sorted(finished.items()):
        has = {kind for kind, ids in live.items() if order_id in ids}
        want = set(live) if status == "COMPLETED" else set()
        if has != want:
            check.fail(f"{order_id}: {status} but holds {sorted(has) or 'nothing'}")
        elif status == "COMPLETED" and captured[order_id] != reserved.get(order_id):
            check.fail(
                f"{order_id}: captured {captured[order_id]}, reserved {reserved.get(order_id)}"
            )
    return check


def one_effect_per_key(databases: Databases) -> Check:
    """Each step took effect at most once, under its own key, recorded in the same commit."""
    check = Check("no idempotency key has two effects")
    for service, effects in sorted(databases.effects.items()):
        keys = databases.keys.get(service, [])
        check.checked += len(keys)
        for key, count in Counter(keys).items():
            if count > 1:
                check.fail(f"{service}: key {key} recorded {count} times")
        # One saga, one row per step: a second row would be the step applied under a
        # second key (one derived from a run ID, say), which no unique constraint catches.
        for order_id, count in Counter(order for order, _ in effects).items():
            if count > 1:
                check.fail(f"{service}: {count} effect rows for {order_id}")
        effect_keys = Counter(key for _, key in effects)
        for key, count in effect_keys.items():
            if count > 1:
                check.fail(f"{service}: {count} effect rows under key {key}")
        step_keys = {k.removesuffix(UNDO_SUFFIX) for k in keys if not k.endswith(CAPTURE_SUFFIX)}
        for key in sorted(step_keys - effect_keys.keys()):
            check.fail(f"{service}: key {key} recorded without its effect")
        for key in sorted(effect_keys.keys() - step_keys):
            check.fail(f"{service}: effect under key {key} with no idempotency record")
        if service == "payments":
            authorizations = {p.key: p.status for p in databases.payments}
            for key in keys:
                if key.endswith(CAPTURE_SUFFIX):
                    authorization = key.removesuffix(CAPTURE_SUFFIX) + ":authorize_payment"
                    if authorizations.get(authorization) != "captured":
                        check.fail(f"payments: {key} recorded, authorization not captured")
    return check


def no_effect_for_unknown_orders(databases: Databases, orders: Mapping[str, str]) -> Check:
    check = Check("every effect belongs to a placed order")
    for service, effects in sorted(databases.effects.items()):
        check.checked += len(effects)
        for order_id in sorted({order for order, _ in effects} - orders.keys()):
            check.fail(f"{service}: effect for {order_id}, which nobody placed")
    return check
