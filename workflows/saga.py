"""A reusable saga: register compensations, run steps, undo on failure (DESIGN §4).

Nothing here knows about orders. Use it from workflow code:

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
- ``compensate()`` finishes even when the workflow is cancelled while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    RetryState,
)

T = TypeVar("T")

Compensation = Callable[[RetryPolicy], Awaitable[Any]]


@dataclass
class CompensationRecord:
    name: str
    status: str = "pending"  # pending | running | succeeded | stuck | failed | not_needed
    rounds: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


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
        return all(r.record.status == "succeeded" for r in self._registered)

    def complete(self) -> None:
        """The saga reached its goal: its compensations will never be needed."""
        self._compensated = True
        for registered in self._registered:
            if registered.record.status == "pending":
                registered.record.status = "not_needed"

    @property
    def failed(self) -> list[CompensationRecord]:
        return [r.record for r in self._registered if r.record.status == "failed"]

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
        failed = [r for r in reversed(self._registered) if r.record.status == "failed"]
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
        retry = [r for r in pending if r.record.status == "stuck"]
        rounds = 1
        while retry and (self.policy.max_rounds is None or rounds < self.policy.max_rounds):
            await workflow.sleep(self.policy.pause_between_rounds)
            for registered in retry:
                await self._one_round(registered)
            retry = [r for r in retry if r.record.status == "stuck"]
            rounds += 1

    async def _until_settled(self, registered: _Registered) -> None:
        await self._one_round(registered)
        while registered.record.status == "stuck" and (
            self.policy.max_rounds is None or registered.record.rounds < self.policy.max_rounds
        ):
            await workflow.sleep(self.policy.pause_between_rounds)
            await self._one_round(registered)

    async def _one_round(self, registered: _Registered) -> None:
        record = registered.record
        record.rounds += 1
        record.started_at = record.started_at or workflow.now()
        if record.status in ("pending", "failed"):
            record.status = "running"
        self._changed()
        try:
            await registered.compensation(self.policy.retry_policy())
        except FailureError as err:
            record.error = _describe(err)
            record.status = "failed" if _is_permanent(err) else "stuck"
            workflow.logger.warning("compensation %s %s: %s", record.name, record.status, err)
        else:
            record.status = "succeeded"
            record.error = None
            record.finished_at = workflow.now()
        if record.status == "failed":
            record.finished_at = workflow.now()
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def _is_permanent(err: FailureError) -> bool:
    if isinstance(err, ActivityError | ChildWorkflowError):
        if err.retry_state == RetryState.NON_RETRYABLE_FAILURE:
            return True
        cause = err.cause
        return isinstance(cause, ApplicationError) and cause.non_retryable
    return isinstance(err, ApplicationError) and err.non_retryable


def _describe(err: BaseException) -> str:
    cause = err.__cause__ or getattr(err, "cause", None)
    while cause is not None and (cause.__cause__ or getattr(cause, "cause", None)) is not None:
        cause = cause.__cause__ or getattr(cause, "cause", None)
    root = cause or err
    return f"{type(root).__name__}: {root}"
