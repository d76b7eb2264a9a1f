"""The Idempotency-Key ledger: which saga each caller's key started, kept past retention.

A key names a saga through its deterministic ID (`order_id_for`, `return_id_for`), and
Temporal's ID uniqueness keeps a repeat from starting a second saga, but only while
Temporal still has the first one. Once the namespace's retention deletes a closed saga
(24 h on `temporal server start-dev`), the same ID could start again. So the gateway
records, in its own database, every key that started a saga: the saga ID, a hash of the
request body and when. For `SAGAWORKS_IDEMPOTENCY_KEY_TTL_DAYS` after that, a repeat is
answered from the saga if Temporal still has it, else refused with 409, never started
again. After that the key is forgotten and may start a new saga.

The row is written once the saga has started, so a start that failed leaves no row and
the same key can be retried. A repeat that finds the saga in Temporal but no row (a start
whose row was lost, or one from before the ledger) writes the row then.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col
from starlette.concurrency import run_in_threadpool
from temporalio.client import WorkflowExecutionDescription

from api.errors import ApiError, UnprocessableRequest
from api.temporal_calls import IDEMPOTENCY_SECRET

log = logging.getLogger("sagaworks.api")


class IdempotencyKeyUse(SQLModel, table=True):
    """One caller's Idempotency-Key that started a saga (migrations/gateway/ 0002)."""

    __tablename__ = "idempotency_keys"

    # The saga ID is the keyed HMAC of the scope and key (and, for a return, the order), so
    # it is unique exactly when (scope, key) is, and the saga's own name for the row.
    saga_id: str = Field(primary_key=True)
    scope: str
    idempotency_key: str
    request_sha256: str
    started_at: datetime
    # Indexed: expired rows are deleted by range on each write.
    expires_at: datetime = Field(index=True)


@dataclass(frozen=True)
class KeyUse:
    """What the ledger remembers of a key's first start."""

    saga_id: str
    request_sha256: str
    started_at: datetime
    expires_at: datetime


# The memo a keyed saga starts with: the hash of the request that started it, so a repeat
# with another body is told apart (422) from a replay.
REQUEST_HASH_MEMO = "request_sha256"

# For the routes' OpenAPI 409 entries.
FORGOTTEN = (
    "an Idempotency-Key repeated after its saga expired from Temporal (retention) but "
    "within SAGAWORKS_IDEMPOTENCY_KEY_TTL_DAYS: the detail names the saga, never started again"
)


class SagaForgotten(ApiError):
    """A repeated key whose saga Temporal no longer has: refused, never started again."""

    status_code = 409

    def __init__(self, use: KeyUse) -> None:
        super().__init__(
            f"Idempotency-Key already started {use.saga_id} at "
            f"{use.started_at.isoformat(timespec='seconds')}; its record expired from "
            "Temporal (retention), so it is not started again. The gateway remembers the "
            f"key until {use.expires_at.isoformat(timespec='seconds')}; use a new key for "
            "a new request"
        )


def key_reused(noun: str) -> UnprocessableRequest:
    """The 422 for a key repeated with another body than the one that started its saga."""
    return UnprocessableRequest(
        f"Idempotency-Key was already used with a different request body; "
        f"use a new key for a new {noun}"
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class IdempotencyLedger:
    """The gateway database's record of Idempotency-Keys, kept for `ttl` after each start.

    The public methods are coroutines that run the database work in the thread pool, so a
    slow database never blocks the event loop; the `*_at` methods are their synchronous
    bodies, with the clock as an argument.
    """

    def __init__(self, engine: Engine, ttl: timedelta) -> None:
        self._engine = engine
        self.ttl = ttl

    async def earlier_use(self, saga_id: str) -> KeyUse | None:
        """The key's start still remembered, or None (never used, or expired)."""
        return await run_in_threadpool(self.earlier_use_at, saga_id, _now())

    async def record(self, saga_id: str, scope: str, key: str, request_sha256: str) -> None:
        """Remember that `key` from `scope` started `saga_id`; a repeat keeps the first row."""
        await run_in_threadpool(self.record_at, saga_id, scope, key, request_sha256, _now())

    def earlier_use_at(self, saga_id: str, now: datetime) -> KeyUse | None:
        with Session(self._engine) as session:
            row = session.get(IdempotencyKeyUse, saga_id)
        if row is None or _aware(row.expires_at) <= now:
            return None  # an expired row is as good as none; the next write deletes it
        return KeyUse(
            row.saga_id, row.request_sha256, _aware(row.started_at), _aware(row.expires_at)
        )

    def record_at(
        self, saga_id: str, scope: str, key: str, request_sha256: str, now: datetime
    ) -> None:
        with Session(self._engine) as session:
            # Lazy expiry: each write first clears every expired row, this key's included.
            expired = delete(IdempotencyKeyUse).where(col(IdempotencyKeyUse.expires_at) <= now)
            session.execute(expired)
            if session.get(IdempotencyKeyUse, saga_id) is None:
                session.add(
                    IdempotencyKeyUse(
                        saga_id=saga_id,
                        scope=scope,
                        idempotency_key=key,
                        request_sha256=request_sha256,
                        started_at=now,
                        expires_at=now + self.ttl,
                    )
                )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # a concurrent repeat recorded the same start first


@dataclass(frozen=True)
class KeyedRequest:
    """A request that carries an Idempotency-Key: the saga it names, and its earlier start."""

    ledger: IdempotencyLedger
    saga_id: str
    scope: str
    key: str
    # The key's start the ledger remembers: the request is then a repeat, never a start.
    earlier: KeyUse | None

    @classmethod
    async def of(
        cls, ledger: IdempotencyLedger, saga_id: str, scope: str, key: str | None
    ) -> KeyedRequest | None:
        """The keyed request, with what the ledger knows of it; None without a key."""
        if key is None:
            return None
        return cls(ledger, saga_id, scope, key, await ledger.earlier_use(saga_id))

    async def record(self, request_sha256: str) -> None:
        """Remember the start (or the repeat of one the ledger had not recorded).

        The saga has started by now, so a database that fails here must not turn the
        answer into a 5xx: the start stands, Temporal still deduplicates the key while it
        keeps the saga, and the next repeat of the key records it (see the module's doc).
        """
        try:
            await self.ledger.record(self.saga_id, self.scope, self.key, request_sha256)
        except SQLAlchemyError as err:
            log.warning("Idempotency-Key of %s not recorded: %s", self.saga_id, err)

    async def replayed(
        self,
        describe_saga: Callable[[], Awaitable[WorkflowExecutionDescription]],
        request_sha256: str,
        noun: str,
    ) -> WorkflowExecutionDescription:
        """The saga an earlier request with this key started, for a replay of it.

        Args:
            describe_saga: the gateway's describe of the saga, raising its 404 when unknown.
            request_sha256: this request's hash.
            noun: what the saga is called in an answer ("order", "return").

        Returns:
            The saga's description, started by a request with the same body.

        Raises:
            UnprocessableRequest: the key started its saga with another body (422).
            SagaForgotten: the ledger remembers the key, Temporal no longer the saga (409).
            ApiError: the describe's own 404 when neither knows it.
        """
        try:
            existing = await describe_saga()
        except ApiError as err:
            if err.status_code != 404 or self.earlier is None:
                raise
            if self.earlier.request_sha256 != request_sha256:
                raise key_reused(noun) from None
            raise SagaForgotten(self.earlier) from None
        if await existing.memo_value(REQUEST_HASH_MEMO, None) != request_sha256:
            raise key_reused(noun)
        return existing


async def idempotency_secret(request: Request) -> bytes:
    """The gateway secret that turns Idempotency-Keys into saga IDs, read off the event loop."""
    keys = request.app.state.gatekeeper.keys
    secret: bytes = await run_in_threadpool(keys.secret, IDEMPOTENCY_SECRET)
    return secret
