"""The worker side of the coordination layer, without Temporal: the report buffer, the
circuit guard's admission rule, and injected faults over a real service database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError

from activities.faults import FaultStore, InjectedFault
from common.db import create_tables, make_engine, session_factory
from workers.guard import CIRCUIT_OPEN, INJECTED_FAULT, CircuitCache, FaultCache, ServiceGuard
from workers.reporting import ReportBuffer
from workflows.coordination_models import CircuitPhase, CircuitView, SagaSnapshot
from workflows.models import ConfigureFaultInput


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
