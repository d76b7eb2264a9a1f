"""The saga pattern: register a compensation for each step, undo them all on failure.

The textbook version, and nothing else: nothing here knows about orders or returns, and
the running of steps (records, attempts, cancels, retry ceilings) lives beside it in
`workflows/steps.py`. The rules are ARCHITECTURE.md, "Saga rules". Use it from workflow
code:

    saga = Saga()
    reservation = await saga.step(
        "reserve",
        action=lambda: workflow.execute_activity("reserve", ...),
        compensation=lambda retry: workflow.execute_activity("release", ..., retry_policy=retry),
    )
    ...
    except BaseException:
        await saga.compensate()   # shielded from cancellation; re-raise afterwards
        raise

Rules it enforces:
- a compensation is registered *before* its step runs, so a step that commits and then
  times out is still undone (compensations must therefore be safe no-ops);
- compensations run in reverse order by default, or all at once with ``parallel=True``;
- a failing compensation never stops the others: each gets a round of retries, then the
  pass moves on, and the ones still failing are marked ``stuck`` and retried in further
  rounds until they succeed or fail with a non-retryable error (``failed``);
- ``compensate()`` finishes even when the workflow is cancelled while it runs;
- a failure is recorded as a stable code and a short safe message (`safe_error`), never
  as raw exception text, which can carry bound SQL parameters, card tokens or addresses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

# Re-exported: callers imported them from here before they moved to workflows/failures.py.
from workflows.failures import SafeError, is_permanent, safe_error

__all__ = [
    "Compensation",
    "CompensationPolicy",
    "CompensationRecord",
    "CompensationStatus",
    "SafeError",
    "Saga",
    "safe_error",
]

T = TypeVar("T")

Compensation = Callable[[RetryPolicy], Awaitable[Any]]


class CompensationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    # Still failing after a round of retries: retried in further rounds, a dead letter.
    STUCK = "stuck"
    # Failed for good (non-retryable): the saga stays open until an operator retries it.
    FAILED = "failed"
    # The saga reached its goal, so this compensation will never run.
    NOT_NEEDED = "not_needed"

    @property
    def needs_attention(self) -> bool:
        return self in (CompensationStatus.STUCK, CompensationStatus.FAILED)


@dataclass
class CompensationRecord:
    name: str
    status: CompensationStatus = CompensationStatus.PENDING
    rounds: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None  # "<code>: <short safe message>"
    error_code: str | None = None


@dataclass(frozen=True)
class CompensationPolicy:
    """How compensations retry. They have no overall deadline: they retry until done."""

    attempts_per_round: int = 5
    initial_interval: timedelta = timedelta(seconds=1)
    maximum_interval: timedelta = timedelta(seconds=30)
    pause_between_rounds: timedelta = timedelta(minutes=1)
    max_rounds: int | None = None  # None: keep retrying forever, visibly stuck

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=self.initial_interval,
            maximum_interval=self.maximum_interval,
            maximum_attempts=self.attempts_per_round,
        )


@dataclass
class _Registered:
    record: CompensationRecord
    compensation: Compensation


@dataclass
class Saga:
    parallel: bool = False
    policy: CompensationPolicy = field(default_factory=CompensationPolicy)
    on_change: Callable[[], None] | None = None
    # Safe messages by error code, for the failures this saga's services raise.
    messages: Mapping[str, str] = field(default_factory=dict)
    _registered: list[_Registered] = field(default_factory=list)
    _compensated: bool = False

    def add_compensation(self, name: str, compensation: Compensation) -> None:
        self._registered.append(_Registered(CompensationRecord(name=name), compensation))

    async def step(
        self, name: str, action: Callable[[], Awaitable[T]], compensation: Compensation
    ) -> T:
        """Register `compensation` first, then run `action`: the order is the point."""
        self.add_compensation(name, compensation)
        return await action()

    @property
    def records(self) -> list[CompensationRecord]:
        return [r.record for r in self._registered]

    @property
    def all_succeeded(self) -> bool:
        return all(r.record.status == CompensationStatus.SUCCEEDED for r in self._registered)

    def complete(self) -> None:
        """The saga reached its goal: its compensations will never be needed."""
        self._compensated = True
        for registered in self._registered:
            if registered.record.status == CompensationStatus.PENDING:
                registered.record.status = CompensationStatus.NOT_NEEDED

    @property
    def failed(self) -> list[CompensationRecord]:
        return [r.record for r in self._registered if r.record.status == CompensationStatus.FAILED]

    async def compensate(self) -> list[CompensationRecord]:
        """Run every registered compensation once; shielded from workflow cancellation."""
        if self._compensated:
            return self.records
        self._compensated = True
        return await self._shielded(self._settle(list(reversed(self._registered))))

    async def retry_failed(self) -> list[CompensationRecord]:
        """Run the compensations that failed for good again, once an operator fixed the cause.

        They get the same treatment as the first time: rounds of retries, `stuck` between
        rounds, `failed` again on a non-retryable error.
        """
        failed = [
            r for r in reversed(self._registered) if r.record.status == CompensationStatus.FAILED
        ]
        for registered in failed:
            registered.record.finished_at = None
        return await self._shielded(self._settle(failed))

    async def _shielded(self, work: Awaitable[None]) -> list[CompensationRecord]:
        task = asyncio.ensure_future(work)
        while True:
            try:
                # shield() keeps the inner task alive when the workflow is cancelled; we
                # then keep waiting for it rather than leaving with work half undone.
                await asyncio.shield(task)
                return self.records
            except asyncio.CancelledError:
                if task.cancelled():
                    raise
                if task.done():
                    return self.records

    async def _settle(self, pending: list[_Registered]) -> None:
        if self.parallel:
            await asyncio.gather(*(self._until_settled(r) for r in pending))
            return
        for registered in pending:
            await self._one_round(registered)
        retry = [r for r in pending if r.record.status == CompensationStatus.STUCK]
        rounds = 1
        while retry and (self.policy.max_rounds is None or rounds < self.policy.max_rounds):
            await workflow.sleep(self.policy.pause_between_rounds)
            for registered in retry:
                await self._one_round(registered)
            retry = [r for r in retry if r.record.status == CompensationStatus.STUCK]
            rounds += 1

    async def _until_settled(self, registered: _Registered) -> None:
        await self._one_round(registered)
        while registered.record.status == CompensationStatus.STUCK and (
            self.policy.max_rounds is None or registered.record.rounds < self.policy.max_rounds
        ):
            await workflow.sleep(self.policy.pause_between_rounds)
            await self._one_round(registered)

    async def _one_round(self, registered: _Registered) -> None:
        record = registered.record
        record.rounds += 1
        record.started_at = record.started_at or workflow.now()
        if record.status in (CompensationStatus.PENDING, CompensationStatus.FAILED):
            record.status = CompensationStatus.RUNNING
        self._changed()
        try:
            await registered.compensation(self.policy.retry_policy())
        except FailureError as err:
            safe = safe_error(err, self.messages)
            record.error, record.error_code = str(safe), safe.code
            permanent = is_permanent(err)
            record.status = CompensationStatus.FAILED if permanent else CompensationStatus.STUCK
            workflow.logger.warning("compensation %s %s: %s", record.name, record.status, err)
        else:
            record.status = CompensationStatus.SUCCEEDED
            record.error = record.error_code = None
            record.finished_at = workflow.now()
        if record.status == CompensationStatus.FAILED:
            record.finished_at = workflow.now()
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
