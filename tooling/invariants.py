"""What must hold in the services' databases once sagas have run, whatever failed meanwhile.

Read straight from each service's own database, its SQLite file or its PostgreSQL database
(never through the services or the API, which could hide a double effect behind an
idempotent answer) and checked against the terminal status of every order that was placed.
Used by `make soak` and by the fault suite (bench/invariants.py is its old path, a shim).

Each saga step's idempotency key is `<saga_id>:<nonce>:<step>` and its compensation's is
the same with `:undo`. A compensation that finds no effect leaves a tombstone row under
the step's key, so that a late attempt of the step cannot take effect after the rollback.

Returns add their own rows (claims, labels, refunds, keyed by the return) and checks:
refunds never exceed captures, claims never exceed what an order bought, restocked items
are exactly those of received returns, and an order's net charge is captured minus refunded.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from activities.inventory import CATALOGUE
from common.services import BUSINESS_SERVICES

TERMINAL = frozenset({"COMPLETED", "COMPENSATED", "FAILED"})
RETURN_TERMINAL = frozenset({"REFUNDED", "EXPIRED", "CANCELLED", "FAILED"})
CAPTURE_SUFFIX = ":capture_payment"
# An order held for approval: its slot in the payments hold ledger, a row of its own.
HOLD_SUFFIX = ":hold_for_approval"
# Steps that change an existing row instead of making one of their own.
NO_ROW_SUFFIXES = (CAPTURE_SUFFIX, ":restock_items", ":release_approval_hold")
UNDO_SUFFIX = ":undo"
EXAMPLES_KEPT = 20
# What inventory seeds into a fresh database: the stock every check starts from.
INITIAL_STOCK = {product.sku: product.stock for product in CATALOGUE}


@dataclass(frozen=True)
class EffectTable:
    """Where a service keeps the rows its steps create, keyed by the step's idempotency key."""

    table: str
    key_column: str


# Each business service's effect table, as common/services.py defines it.
EFFECT_TABLES = {
    service.name: EffectTable(service.effect_table, service.effect_key)
    for service in BUSINESS_SERVICES
    if service.effect_table and service.effect_key
}
# The returns saga's rows, one per return and step, keyed like the orders' (return_id).
RETURN_EFFECT_TABLES = {
    "inventory": EffectTable("inventory_return_claim", "claim_key"),
    "shipping": EffectTable("shipping_return_label", "label_key"),
    "payments": EffectTable("payments_refund", "refund_key"),
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
    # Returns: claims (key: claim key, amount: refund share, lines: items), refunds,
    # and per service its return rows' (return_id, key).
    claims: list[ReturnRow] = field(default_factory=list)
    refunds: list[ReturnRow] = field(default_factory=list)
    labels: list[ReturnRow] = field(default_factory=list)
    return_effects: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # Approval holds (payments): one row per held order, or a release's tombstone.
    holds: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class ReturnRow:
    return_id: str
    order_id: str
    key: str
    status: str = ""
    amount_cents: int = 0
    lines: tuple[tuple[str, int], ...] = ()


def query(url: str, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows from one service's database by its URL; none from a SQLite file not made yet."""
    # Read-only: the checks must never be the thing that changes what they check.
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, params or {}).fetchall()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            return [tuple(row) for row in connection.execute(text(sql), dict(params or {}))]
    finally:
        engine.dispose()


def _exists(url: str) -> bool:
    return not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).exists()


def read_databases(source: Path | Mapping[str, str]) -> Databases:
    """`source`: a data dir of `<service>.db` SQLite files, or each service's database URL."""
    if isinstance(source, Mapping):
        urls = dict(source)
    else:
        urls = {service: f"sqlite:///{source / f'{service}.db'}" for service in EFFECT_TABLES}

    def rows(service: str, sql: str) -> list[tuple[Any, ...]]:
        return query(urls[service], sql)

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
        if not _exists(urls[service]):
            continue  # a service this run did not start
        databases.effects[service] = [
            (str(order), str(key))
            for order, key in rows(service, f"SELECT order_id, {spec.key_column} FROM {spec.table}")
        ]
        databases.keys[service] = [
            str(key) for (key,) in rows(service, "SELECT key FROM idempotency_record")
        ]
        returned = RETURN_EFFECT_TABLES.get(service)
        if returned is not None:
            sql = f"SELECT return_id, {returned.key_column} FROM {returned.table}"
            databases.return_effects[service] = [
                (str(ret), str(key)) for ret, key in rows(service, sql)
            ]
    if _exists(urls["inventory"]):
        databases.claims = [
            ReturnRow(ret, order, key, status, refund, _lines(lines))
            for ret, order, key, status, refund, lines in rows(
                "inventory",
                "SELECT return_id, order_id, claim_key, status, refund_cents, lines_json"
                " FROM inventory_return_claim",
            )
        ]
    if _exists(urls["payments"]):
        databases.refunds = [
            ReturnRow(ret, order, key, amount_cents=amount)
            for ret, order, key, amount in rows(
                "payments",
                "SELECT return_id, order_id, refund_key, amount_cents FROM payments_refund",
            )
        ]
    if _exists(urls["payments"]):
        databases.holds = [
            Row(order, key, status, amount)
            for order, key, status, amount in rows(
                "payments",
                "SELECT order_id, hold_key, status, amount_cents FROM payments_approval_hold",
            )
        ]
    if _exists(urls["shipping"]):
        databases.labels = [
            ReturnRow(ret, order, key, status)
            for ret, order, key, status in rows(
                "shipping",
                "SELECT return_id, order_id, label_key, status FROM shipping_return_label",
            )
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
    databases: Databases,
    orders: Mapping[str, str],
    initial_stock: Mapping[str, int],
    returns: Mapping[str, str] | None = None,
) -> list[Check]:
    """Run every check. `orders` (and `returns`) map each one placed to its last status."""
    returns = returns or {}
    return [
        every_order_terminal(orders),
        stock_conserved(databases, initial_stock),
        no_capture_without_shipment(databases),
        no_shipment_without_capture(databases, orders),
        compensated_net_zero(databases, orders),
        all_or_nothing(databases, orders),
        one_effect_per_key(databases),
        no_hold_outlives_its_order(databases, orders),
        no_effect_for_unknown_orders(databases, orders, returns),
        every_return_terminal(returns),
        refunds_within_captures(databases),
        claims_within_orders(databases),
        restocked_equals_received(databases, returns),
        net_charge_is_captured_minus_refunded(databases, orders),
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
    """Initial + restocked = on the shelf + held by live reservations, per SKU."""
    check = Check("stock is conserved", checked=len(initial_stock))
    held: Counter[str] = Counter()
    for reservation in databases.reservations:
        if reservation.status == "reserved":
            for sku, quantity in reservation.lines:
                held[sku] += quantity
    back: Counter[str] = Counter()
    for claim in databases.claims:
        if claim.status == "restocked":
            back.update(dict(claim.lines))
    for sku, initial in sorted(initial_stock.items()):
        shelf = databases.stock.get(sku)
        if shelf is None or shelf + held[sku] != initial + back[sku]:
            check.fail(
                f"{sku}: initial {initial} + restocked {back[sku]} != shelf {shelf}"
                f" + reserved {held[sku]}"
            )
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
        returned = databases.return_effects.get(service, [])
        for rows in (effects, returned):
            for saga_id, count in Counter(saga for saga, _ in rows).items():
                if count > 1:
                    check.fail(f"{service}: {count} effect rows for {saga_id}")
        effect_keys = Counter(key for _, key in [*effects, *returned])
        for key, count in effect_keys.items():
            if count > 1:
                check.fail(f"{service}: {count} effect rows under key {key}")
        step_keys = {k.removesuffix(UNDO_SUFFIX) for k in keys if not k.endswith(NO_ROW_SUFFIXES)}
        if service == "payments":
            # Holds keep their rows in a table of their own, checked one for one here.
            hold_keys = {k for k in step_keys if k.endswith(HOLD_SUFFIX)}
            step_keys -= hold_keys
            held = Counter(hold.key for hold in databases.holds)
            for key in sorted(hold_keys ^ held.keys()):
                check.fail(f"payments: hold key {key} without both its record and its row")
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


def no_hold_outlives_its_order(databases: Databases, orders: Mapping[str, str]) -> Check:
    """An order that ended holds no slot of its customer's approval caps."""
    held = [hold for hold in databases.holds if hold.status == "held"]
    check = Check("no approval hold outlives its order", checked=len(databases.holds))
    for hold in held:
        if orders.get(hold.order_id) in TERMINAL:
            check.fail(f"{hold.order_id}: {orders[hold.order_id]} but still holds {hold.key}")
    return check


def no_effect_for_unknown_orders(
    databases: Databases, orders: Mapping[str, str], returns: Mapping[str, str] | None = None
) -> Check:
    check = Check("every effect belongs to a placed order or a requested return")
    for service, effects in sorted(databases.effects.items()):
        check.checked += len(effects)
        for order_id in sorted({order for order, _ in effects} - orders.keys()):
            check.fail(f"{service}: effect for {order_id}, which nobody placed")
    for service, rows in sorted(databases.return_effects.items()):
        check.checked += len(rows)
        for return_id in sorted({ret for ret, _ in rows} - (returns or {}).keys()):
            check.fail(f"{service}: effect for {return_id}, which nobody requested")
    return check


# --- returns ---------------------------------------------------------------------------------


def every_return_terminal(returns: Mapping[str, str]) -> Check:
    check = Check("every return is terminal", checked=len(returns))
    for return_id, status in sorted(returns.items()):
        if status not in RETURN_TERMINAL:
            check.fail(f"{return_id} is still {status}")
    return check


def refunds_within_captures(databases: Databases) -> Check:
    """An order's refunds add up to at most what was captured, and only for a capture."""
    captured = {p.order_id: p.amount_cents for p in databases.payments if p.status == "captured"}
    refunded: Counter[str] = Counter()
    for refund in databases.refunds:
        refunded[refund.order_id] += refund.amount_cents
    check = Check("refunds never exceed captures", checked=len(refunded))
    for order_id, cents in sorted(refunded.items()):
        if order_id not in captured:
            check.fail(f"{order_id}: {cents} refunded, nothing captured")
        elif cents > captured[order_id]:
            check.fail(f"{order_id}: {cents} refunded, {captured[order_id]} captured")
    return check


def claims_within_orders(databases: Databases) -> Check:
    """What an order's returns claim (not released) is at most what it bought, per SKU."""
    bought = {r.order_id: dict(r.lines) for r in databases.reservations if r.status == "reserved"}
    claimed: dict[str, Counter[str]] = {}
    for claim in databases.claims:
        if claim.status != "released":
            claimed.setdefault(claim.order_id, Counter()).update(dict(claim.lines))
    check = Check("returns never claim more than an order bought", checked=len(claimed))
    for order_id, lines in sorted(claimed.items()):
        for sku, quantity in sorted(lines.items()):
            if quantity > bought.get(order_id, {}).get(sku, 0):
                check.fail(f"{order_id}: {quantity} x {sku} claimed, bought fewer")
    return check


def restocked_equals_received(databases: Databases, returns: Mapping[str, str]) -> Check:
    """Exactly the refunded returns restocked their items and were refunded their share.

    An expired, cancelled or refused return holds no claim, no live label and no refund.
    """
    check = Check("restocked quantities equal received returns", checked=len(returns))
    claims = {c.return_id: c for c in databases.claims}
    refunds: dict[str, list[ReturnRow]] = {}
    for refund in databases.refunds:
        refunds.setdefault(refund.return_id, []).append(refund)
    labels = {label.return_id: label.status for label in databases.labels}
    for return_id, status in sorted(returns.items()):
        claim, paid = claims.get(return_id), refunds.get(return_id, [])
        if status == "REFUNDED":
            if claim is None or claim.status != "restocked":
                check.fail(f"{return_id}: refunded, claim {claim.status if claim else 'missing'}")
            elif [r.amount_cents for r in paid] != [claim.amount_cents]:
                amounts = [r.amount_cents for r in paid]
                check.fail(f"{return_id}: refunded {amounts}, its share is {claim.amount_cents}")
        elif status in ("EXPIRED", "CANCELLED") or (status == "FAILED" and claim is None):
            if claim is not None and claim.status != "released":
                check.fail(f"{return_id}: {status} but its claim is {claim.status}")
            if labels.get(return_id, "cancelled") != "cancelled":
                check.fail(f"{return_id}: {status} but its label is {labels[return_id]}")
            if paid:
                check.fail(f"{return_id}: {status} but refunded")
    restocked = {c.return_id for c in databases.claims if c.status == "restocked"}
    for return_id in sorted(restocked - {r for r, s in returns.items() if s == "REFUNDED"}):
        check.fail(f"{return_id}: restocked, but the return is {returns.get(return_id)}")
    return check


def net_charge_is_captured_minus_refunded(databases: Databases, orders: Mapping[str, str]) -> Check:
    """A completed order keeps what it captured minus its returns' refunded shares.

    The shares come from the claims (inventory), the refunds from payments: two services
    that must agree, and the net charge can never go below zero.
    """
    completed = {o for o, status in orders.items() if status == "COMPLETED"}
    captured = {p.order_id: p.amount_cents for p in databases.payments if p.status == "captured"}
    refunded: Counter[str] = Counter()
    for refund in databases.refunds:
        refunded[refund.order_id] += refund.amount_cents
    shares: Counter[str] = Counter()
    for claim in databases.claims:
        if claim.status == "restocked":
            shares[claim.order_id] += claim.amount_cents
    check = Check("net charge = captured - refunded", checked=len(completed))
    for order_id in sorted(completed & captured.keys()):
        net = captured[order_id] - refunded[order_id]
        if net < 0 or net != captured[order_id] - shares[order_id]:
            check.fail(
                f"{order_id}: captured {captured[order_id]}, refunded {refunded[order_id]},"
                f" returned shares {shares[order_id]}"
            )
    return check
