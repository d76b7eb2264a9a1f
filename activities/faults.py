"""Injected faults for chaos drills, stored in each service's own database.

The operator sets a service's error ratio and added latency through the API, which runs
`configure_fault` on that service's task queue (workflows/faults.py), so the setting lands
in the service's database and outlives worker restarts until it is cleared. The worker's
activity interceptor (workers/guard.py) reads it back at most once a second.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Field, SQLModel
from temporalio import activity

from activities.idempotency import utcnow
from common.db import SessionFactory
from workflows.models import ConfigureFaultInput, FaultState


class InjectedFault(SQLModel, table=True):
    __tablename__ = "injected_fault"

    service: str = Field(primary_key=True, max_length=64)
    error_ratio: float = 0.0
    latency_ms: int = 0
    activity: str | None = Field(default=None, max_length=64)
    non_retryable: bool = False
    injected_errors: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class FaultStore:
    def __init__(self, open_session: SessionFactory, service: str) -> None:
        self._open_session = open_session
        self.service = service
        # Told of every change made through this process, so the worker that applied an
        # operator's request acts on it at once (others re-read within a second).
        self.listeners: list[Callable[[FaultState], None]] = []

    @activity.defn(name="configure_fault")
    def configure_fault(self, input: ConfigureFaultInput) -> FaultState:
        with self._open_session() as session:
            row = session.get(InjectedFault, self.service)
            if input.clear:
                if row is not None:
                    session.delete(row)
                    session.commit()
                state = FaultState(self.service)
            else:
                row = row or InjectedFault(service=self.service)
                row.error_ratio = input.error_ratio
                row.latency_ms = input.latency_ms
                row.activity = input.activity
                row.non_retryable = input.non_retryable
                row.updated_at = utcnow()
                session.add(row)
                session.commit()
                state = _state(row)
        for listener in self.listeners:
            listener(state)
        return state

    def read(self) -> FaultState:
        with self._open_session() as session:
            row = session.get(InjectedFault, self.service)
            return _state(row) if row is not None else FaultState(self.service)

    def count_injected_error(self) -> None:
        with self._open_session() as session:
            session.execute(
                update(InjectedFault)  # type: ignore[arg-type]
                .where(InjectedFault.service == self.service)  # type: ignore[arg-type]
                .values(injected_errors=InjectedFault.injected_errors + 1)
            )
            session.commit()


def _state(row: InjectedFault) -> FaultState:
    return FaultState(
        service=row.service,
        error_ratio=row.error_ratio,
        latency_ms=row.latency_ms,
        activity=row.activity,
        non_retryable=row.non_retryable,
        injected_errors=row.injected_errors,
        updated_at=row.updated_at,
    )
