"""The worker side of the coordination layer, without Temporal: the report buffer, the
circuit guard's admission rule, injected faults over a real service database, and calls
through the guard (its heartbeats, and which failures count as infrastructure errors)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
)

from activities import inventory
from activities.faults import FaultStore, InjectedFault
from activities.inventory import InventoryActivities
from common.db import create_tables, make_engine, session_factory
from workers.guard import CIRCUIT_OPEN, INJECTED_FAULT, CircuitCache, FaultCache, ServiceGuard
from workers.reporting import ReportBuffer
from workflows.coordination_models import CircuitPhase, CircuitView, SagaSnapshot
from workflows.models import BusinessError, ConfigureFaultInput, OrderItem, ReserveStockInput


@pytest.fixture
def store(sqlite_url: Callable[[str], str]) -> FaultStore:
    engine = make_engine(sqlite_url("payments"))
    create_tables(engine, [InjectedFault])
    return FaultStore(session_factory(engine), "payments")


def guard_with(
    circuit: CircuitView | None, store: FaultStore, fetched_ago_s: float = 0
) -> ServiceGuard:
    circuits = CircuitCache()
    if circuit is not None:
        circuits._circuits = {"payments": circuit}
        circuits._fetched_at = datetime.now(UTC) - timedelta(seconds=fetched_ago_s)
    return ServiceGuard("payments", ReportBuffer("w"), FaultCache(store), circuits, open_s=10)


def test_buffer_summarises_calls_and_keeps_the_latest_snapshot_per_saga() -> None:
    buffer = ReportBuffer("payments 1@host")
    assert buffer.drain() is None  # nothing happened: nothing to send
    for latency, error in [(3, None), (40, None), (40, "InjectedFault: boom")]:
        buffer.call_started("payments")
        buffer.call_finished("payments", latency, error)
    buffer.call_started("payments")  # still running at report time
    buffer.call_rejected("payments")
    at = datetime.now(UTC)
    buffer.saga_changed(SagaSnapshot("o-1", "PENDING", "reserve_stock", at))
    buffer.saga_changed(SagaSnapshot("o-1", "PENDING", "authorize_payment", at))

    report = buffer.drain()
    assert report is not None and report.worker == "payments 1@host"
    [sample] = report.services
    assert (sample.calls, sample.errors, sample.rejected, sample.in_flight) == (3, 1, 1, 1)
    assert sample.last_error == "InjectedFault: boom"
    assert sample.latency_buckets[0] == 1 and sample.latency_buckets[3] == 2  # <=5, <=50 ms
    assert [s.step for s in report.sagas] == ["authorize_payment"]
    assert buffer.drain() is None

    # A report that could not be sent goes back, under what happened since.
    buffer.call_finished("payments", 10, None)
    buffer.saga_changed(SagaSnapshot("o-1", "COMPLETED", None, at, terminal=True))
    buffer.restore(report)
    merged = buffer.drain()
    assert merged is not None
    assert (merged.services[0].calls, merged.services[0].errors) == (4, 1)
    assert [s.status for s in merged.sagas] == ["COMPLETED"]  # the newer snapshot wins


def test_closed_or_unknown_circuit_admits(store: FaultStore) -> None:
    assert guard_with(None, store).admit() is False
    assert guard_with(CircuitView(CircuitPhase.CLOSED), store).admit() is False
    # A view older than 30 s is ignored: a lost coordinator must not block the service.
    stale = CircuitView(CircuitPhase.OPEN, retry_at=datetime.now(UTC) + timedelta(hours=1))
    assert guard_with(stale, store, fetched_ago_s=31).admit() is False


def test_open_circuit_fails_fast_until_the_window_ends(store: FaultStore) -> None:
    retry_at = datetime.now(UTC) + timedelta(seconds=8)
    guard = guard_with(CircuitView(CircuitPhase.OPEN, "errors", retry_at=retry_at), store)
    with pytest.raises(ApplicationError) as refused:
        guard.admit()
    error = refused.value
    assert error.type == CIRCUIT_OPEN and not error.non_retryable
    assert error.next_retry_delay is not None
    assert timedelta(seconds=7) <= error.next_retry_delay <= timedelta(seconds=9)
    report = guard.buffer.drain()
    assert report is not None and report.services[0].rejected == 1
    assert report.services[0].calls == 0  # a refused call never reached the service


def test_half_open_lets_one_probe_through_per_period(store: FaultStore) -> None:
    since = datetime.now(UTC)
    guard = guard_with(CircuitView(CircuitPhase.HALF_OPEN, since=since), store)
    assert guard.admit() is True
    # However fast the probe failed, the next call waits for its outcome to arrive.
    for _ in range(3):
        with pytest.raises(ApplicationError) as refused:
            guard.admit()
        assert refused.value.next_retry_delay is not None
        assert refused.value.next_retry_delay < timedelta(seconds=3)
    # A new half-open period (the probe failed, the circuit reopened, and half-opened
    # again) gets a new probe.
    assert guard.circuits is not None
    guard.circuits._circuits["payments"] = CircuitView(
        CircuitPhase.HALF_OPEN, since=since + timedelta(seconds=10)
    )
    assert guard.admit() is True


async def test_injected_fault_fails_calls_and_counts_them_in_the_service_db(
    store: FaultStore,
) -> None:
    faults = FaultCache(store)
    await faults.apply("authorize_payment")  # no fault stored: nothing happens
    state = store.configure_fault(ConfigureFaultInput("payments", error_ratio=1.0, latency_ms=5))
    assert (state.error_ratio, state.latency_ms, state.injected_errors) == (1.0, 5, 0)
    # Set through this process: in force at once, without waiting for the next re-read.
    for _ in range(3):
        with pytest.raises(ApplicationError) as failed:
            await faults.apply("authorize_payment")
        assert failed.value.type == INJECTED_FAULT and not failed.value.non_retryable
    assert store.read().injected_errors == 3

    store.configure_fault(ConfigureFaultInput("payments", clear=True))
    await faults.apply("authorize_payment")
    assert store.read().error_ratio == 0 and store.read().injected_errors == 0

    # Set by another process of the same service: in force after the next re-read.
    other = FaultCache(FaultStore(store._open_session, "payments"))
    store.configure_fault(ConfigureFaultInput("payments", error_ratio=1.0))
    await other.apply("authorize_payment")
    await other.refresh()
    with pytest.raises(ApplicationError):
        await other.apply("authorize_payment")


async def test_fault_can_target_one_activity_and_fail_it_for_good(store: FaultStore) -> None:
    faults = FaultCache(store)
    store.configure_fault(
        ConfigureFaultInput(
            "payments", error_ratio=1.0, activity="void_payment", non_retryable=True
        )
    )
    await faults.apply("authorize_payment")  # other operations are untouched
    with pytest.raises(ApplicationError) as failed:
        await faults.apply("void_payment")
    assert failed.value.non_retryable
    assert "void_payment" in str(failed.value)
    assert store.read().injected_errors == 1


# --- calls through the guard: heartbeats, and what counts as an infrastructure error ------


class Beats(ActivityOutboundInterceptor):
    """The SDK's outbound side, reduced to counting heartbeats."""

    def __init__(self, enough: int = 3) -> None:  # no `next`: nothing is sent anywhere
        self.count = 0
        self.enough = threading.Event()
        self._enough_at = enough

    def heartbeat(self, *details: Any) -> None:
        self.count += 1
        if self.count >= self._enough_at:
            self.enough.set()


class Service(ActivityInboundInterceptor):
    """The activity behind the guard: `body` runs in a thread, as sync activities do."""

    def __init__(self, body: Callable[[], Any]) -> None:  # the innermost: no `next`
        self.body = body

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        pass

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        return await asyncio.to_thread(self.body)


async def call_through(
    guard: ServiceGuard, body: Callable[[], Any], beats: Beats, heartbeat_s: float | None
) -> Any:
    env = ActivityEnvironment()
    timeout = timedelta(seconds=heartbeat_s) if heartbeat_s else None
    env.info = dataclasses.replace(
        env.info, activity_type="reserve_stock", heartbeat_timeout=timeout
    )

    async def run() -> Any:
        guarded = guard.intercept_activity(Service(body))
        guarded.init(beats)
        return await guarded.execute_activity(
            ExecuteActivityInput(fn=body, args=[], executor=None, headers={})
        )

    return await env.run(run)


async def test_a_call_heartbeats_while_its_thread_waits_on_the_database(
    store: FaultStore,
) -> None:
    beats = Beats(enough=3)

    def waits_on_the_database() -> str:
        # Blocked, as on a lock, until the guard has heartbeaten three times meanwhile.
        assert beats.enough.wait(timeout=10), "no heartbeats while the call was blocked"
        return "done"

    result = await call_through(guard_with(None, store), waits_on_the_database, beats, 0.15)
    assert result == "done"
    after = beats.count
    await asyncio.sleep(0.2)  # four heartbeat intervals: none may follow the call
    assert beats.count == after


async def test_a_step_without_heartbeat_timeout_is_not_heartbeaten(store: FaultStore) -> None:
    beats = Beats()
    assert await call_through(guard_with(None, store), lambda: "done", beats, None) == "done"
    assert beats.count == 0


def refused_by_the_database() -> None:
    raise OverflowError("Python int too large to convert to SQLite INTEGER")


def poison_reserve(sqlite_url: Callable[[str], str]) -> Callable[[], Any]:
    engine = make_engine(sqlite_url("inventory"))
    create_tables(engine, inventory.TABLES)
    inventory.seed_catalogue(session_factory(engine))
    service = InventoryActivities(session_factory(engine))
    items = [OrderItem("SKU-1", 2**63)]
    return lambda: service.reserve_stock(ReserveStockInput("o1:reserve_stock", "o1", items))


def locked() -> None:
    raise OperationalError("UPDATE inventory_product", {}, Exception("database is locked"))


async def test_poison_pills_are_not_infrastructure_errors(
    store: FaultStore, sqlite_url: Callable[[str], str]
) -> None:
    guard = guard_with(None, store)
    with pytest.raises(ApplicationError) as refused:
        await call_through(guard, poison_reserve(sqlite_url), Beats(), None)
    assert refused.value.type == BusinessError.INVALID_INPUT
    with pytest.raises(OverflowError):  # even raw, the guard knows it for what it is
        await call_through(guard, refused_by_the_database, Beats(), None)
    with pytest.raises(OperationalError):  # the database being unavailable is one
        await call_through(guard, locked, Beats(), None)

    report = guard.buffer.drain()
    assert report is not None
    [sample] = report.services
    assert (sample.calls, sample.errors) == (3, 1)
    assert sample.last_error is not None and sample.last_error.startswith("OperationalError")
