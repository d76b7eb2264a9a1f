"""The Idempotency-Key ledger on its own, on both database backends: how long a key counts.

The HTTP behaviour (a repeat after retention is 409, never a second saga) is in
test_idempotency_retention.py, on the real stack; these pin the expiry rules and that only
a saga that started leaves a row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.errors import TemporalUnavailable
from api.idempotency import IdempotencyLedger, KeyedRequest
from api.order_gateway import order_id_for, start_order
from api.schemas import OrderIn
from common import migrate
from common.db import make_engine
from common.settings import Settings
from tests.support.api_client import order_body

TTL = timedelta(days=30)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ledger(database_url: Callable[[str], str]) -> Iterator[IdempotencyLedger]:
    engine: Engine = make_engine(database_url("gateway"))
    migrate.upgrade("gateway", engine)  # the table comes from its migration, as in production
    yield IdempotencyLedger(engine, TTL)
    engine.dispose()


def test_a_key_is_remembered_for_its_ttl_from_its_first_start(ledger: IdempotencyLedger) -> None:
    assert ledger.earlier_use_at("order-a", T0) is None
    ledger.record_at("order-a", "customer:c-1", "k-1", "hash-1", T0)
    # A repeat (recorded again on a replay) keeps the first start and its deadline.
    ledger.record_at("order-a", "customer:c-1", "k-1", "hash-1", T0 + timedelta(days=3))

    use = ledger.earlier_use_at("order-a", T0 + TTL - timedelta(seconds=1))
    assert use is not None
    assert (use.saga_id, use.request_sha256) == ("order-a", "hash-1")
    assert (use.started_at, use.expires_at) == (T0, T0 + TTL)
    assert ledger.earlier_use_at("order-a", T0 + TTL) is None


def test_after_its_ttl_a_key_may_start_a_new_saga_and_old_rows_go(
    ledger: IdempotencyLedger,
) -> None:
    ledger.record_at("order-a", "customer:c-1", "k-1", "hash-1", T0)
    ledger.record_at("order-b", "customer:c-2", "k-2", "hash-2", T0)
    later = T0 + TTL + timedelta(days=1)

    ledger.record_at("order-a", "customer:c-1", "k-1", "hash-new", later)

    use = ledger.earlier_use_at("order-a", later)
    assert use is not None and (use.request_sha256, use.started_at) == ("hash-new", later)
    with ledger._engine.connect() as connection:  # the expired row of another key is gone
        rows = connection.exec_driver_sql("SELECT saga_id FROM idempotency_keys").all()
    assert rows == [("order-a",)]


class _UnreachableTemporal:
    """A client whose start fails as an unreachable server's does."""

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")


async def test_a_start_that_failed_leaves_the_key_free(ledger: IdempotencyLedger) -> None:
    settings = Settings(api_temporal_timeout_s=1)
    order = OrderIn.model_validate(order_body("c-1"))
    order_id = order_id_for(b"secret", "customer:c-1", "k-1")
    keyed = await KeyedRequest.of(ledger, order_id, "customer:c-1", "k-1")
    assert keyed is not None and keyed.earlier is None

    client: Client = _UnreachableTemporal()  # type: ignore[assignment]
    with pytest.raises(TemporalUnavailable):
        await start_order(client, settings, order, "c-1", order_id, keyed)

    assert await ledger.earlier_use(order_id) is None


async def test_a_ledger_that_cannot_write_never_fails_a_started_saga(tmp_path: Any) -> None:
    # No migration ran: every write fails. The saga has started by the time the key is
    # recorded, so the failure is logged, never a 5xx (Temporal still deduplicates it).
    engine = make_engine(f"sqlite:///{tmp_path}/gateway.db")
    keyed = KeyedRequest(IdempotencyLedger(engine, TTL), "order-x", "customer:c-1", "k", None)
    await keyed.record("sha")
    engine.dispose()
