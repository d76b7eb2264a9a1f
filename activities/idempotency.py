"""Idempotency keys, enforced by the database (ARCHITECTURE.md, Saga rules, rule 2).

Each service keeps an `idempotency_record` table in its own database. A mutating activity
runs its effect and inserts its key in one transaction, so the primary key's uniqueness
makes a repeat return the first result instead of applying the effect twice.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.db import SessionFactory, is_poison
from workflows.models import BusinessError

ResultT = TypeVar("ResultT")
F = TypeVar("F", bound=Callable[..., Any])


def service_activity(name: str) -> Callable[[F], F]:
    """`activity.defn` for a service's step: a cancel never interrupts its transaction.

    Steps heartbeat (workers/guard.py), so a cancel reaches a running attempt; by default
    the SDK would then raise inside the activity's thread at any bytecode, even inside the
    database driver. The step is short and atomic: it runs to its end, and the saga, which
    no longer waits for it, undoes it through its compensation if it committed.
    """
    define = activity.defn(name=name, no_thread_cancel_exception=True)

    def mark(fn: F) -> F:
        setattr(fn, _SERVICE_ACTIVITY, name)
        return define(fn)

    return mark


# Set on every step `service_activity` defines, so `activities_of` finds them.
_SERVICE_ACTIVITY = "__sagaworks_service_activity__"


def activity_name(fn: Callable[..., Any]) -> str:
    """The activity type a service's step is registered as."""
    name: str = getattr(fn, _SERVICE_ACTIVITY)
    return name


def activities_of(*services: object) -> list[Callable[..., Any]]:
    """Every activity a service's classes define, bound: what its worker registers.

    So a new activity is served as soon as its class defines it; no worker lists names.
    """
    found: list[Callable[..., Any]] = []
    for service in services:
        for name in dir(type(service)):
            member = getattr(service, name)
            if callable(member) and hasattr(member, _SERVICE_ACTIVITY):
                found.append(member)
    return found


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_record"

    key: str = Field(primary_key=True, max_length=300)
    operation: str = Field(max_length=64)
    result_json: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def utcnow() -> datetime:
    return datetime.now(UTC)


def current_attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1


def run_once(
    open_session: SessionFactory,
    key: str,
    operation: str,
    result_type: type[ResultT],
    effect: Callable[[Session], ResultT],
) -> ResultT:
    """Apply `effect` at most once per `key`; later calls return the stored first result.

    `effect` must not commit. Raising from it rolls everything back and stores nothing,
    so a business failure leaves no trace and a retry evaluates afresh. A value the
    database refuses (a poison pill) fails for good, as `InvalidInput`: retrying the same
    input could only fail again, holding the saga's other effects all the while.
    """
    try:
        return _run_once(open_session, key, operation, result_type, effect)
    except Exception as err:
        if not is_poison(err):
            raise
        refused = getattr(err, "orig", None) or err
        # The class only: the database's own text can quote the refused value.
        raise ApplicationError(
            f"{operation}: the database refused a value ({type(refused).__name__})",
            type=BusinessError.INVALID_INPUT,
            non_retryable=True,
        ) from err


def _run_once(
    open_session: SessionFactory,
    key: str,
    operation: str,
    result_type: type[ResultT],
    effect: Callable[[Session], ResultT],
) -> ResultT:
    with open_session() as session:
        stored = _load(session, key, operation, result_type)
        if stored is not None:
            return stored
        result = effect(session)
        session.add(
            IdempotencyRecord(
                key=key, operation=operation, result_json=json.dumps(_to_json(result))
            )
        )
        try:
            session.commit()
        except IntegrityError:
            # A concurrent attempt with the same key won the race (possible on PostgreSQL);
            # its result is the one that counts.
            session.rollback()
            stored = _load(session, key, operation, result_type)
            if stored is None:
                raise
            return stored
        return result


def _load(session: Session, key: str, operation: str, result_type: type[ResultT]) -> ResultT | None:
    record = session.get(IdempotencyRecord, key)
    if record is None:
        return None
    if record.operation != operation:
        raise ApplicationError(
            f"idempotency key {key!r} was first used for {record.operation!r}, not {operation!r}",
            type="IdempotencyKeyReused",
            non_retryable=True,
        )
    return result_type(**json.loads(record.result_json))


def _to_json(result: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        raise TypeError(f"activity results must be dataclasses, got {type(result)!r}")
    return dataclasses.asdict(result)
