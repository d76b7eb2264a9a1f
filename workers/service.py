"""Building a service worker: its own database, its own task queue, its activities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from common.db import SessionFactory, create_tables, make_engine, session_factory
from common.settings import Settings


def build_service_worker(
    client: Client,
    settings: Settings,
    *,
    service: str,
    tables: Sequence[Any],
    activities: Callable[[SessionFactory], Sequence[Callable[..., Any]]],
    on_start: Callable[[SessionFactory], object] | None = None,
) -> Worker:
    engine = make_engine(settings.database_url(service))
    create_tables(engine, list(tables))
    open_session = session_factory(engine)
    if on_start is not None:
        on_start(open_session)
    return Worker(
        client,
        task_queue=getattr(settings, f"{service}_task_queue"),
        activities=activities(open_session),
        # Sync activities (blocking DB calls) run here; its size is the bulkhead.
        activity_executor=ThreadPoolExecutor(max_workers=settings.max_concurrent_activities),
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
