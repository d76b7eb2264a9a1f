"""Building a service worker: its own database, its own task queue, its activities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.faults import FaultStore, InjectedFault
from common import migrate
from common.db import SessionFactory, make_engine, session_factory
from common.settings import Settings
from workers.agent import CoordinationAgent
from workers.guard import CircuitCache, FaultCache, ServiceGuard
from workers.identity import report_key
from workers.reporting import ReportBuffer
from workers.runner import Runtime


def build_service_worker(
    client: Client,
    settings: Settings,
    *,
    service: str,
    tables: Sequence[Any],
    activities: Callable[[SessionFactory], Sequence[Callable[..., Any]]],
    on_start: Callable[[SessionFactory], object] | None = None,
) -> Runtime:
    engine = make_engine(settings.database_url(service))
    # The service's migration history (migrations/<service>/), under a lock: two processes
    # of one service may start at once.
    migrate.upgrade(service, engine)
    migrate.require_tables(engine, [t.__tablename__ for t in [*tables, InjectedFault]])
    open_session = session_factory(engine)
    if on_start is not None:
        on_start(open_session)
    fault_store = FaultStore(open_session, service)
    faults = FaultCache(fault_store)
    faults.fault = fault_store.read()  # a fault set before a restart applies from the start
    coordinated = settings.coordination_enabled
    # The guard always measures (cheap); only a coordinated process sends what it measured.
    buffer = ReportBuffer(report_key(service, client))
    circuits = CircuitCache() if coordinated and settings.circuit_breaker_enabled else None
    guard = ServiceGuard(service, buffer, faults, circuits, open_s=settings.circuit_open_s)
    worker = Worker(
        client,
        task_queue=getattr(settings, f"{service}_task_queue"),
        activities=[*activities(open_session), fault_store.configure_fault],
        # Sync activities (blocking DB calls) run here; its size is the bulkhead.
        activity_executor=ThreadPoolExecutor(max_workers=settings.max_concurrent_activities),
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=10),
        interceptors=[guard],
    )
    reports = buffer if coordinated else None
    agent = CoordinationAgent(client, settings, reports, circuits=circuits, faults=faults)
    return Runtime(worker, agent)
