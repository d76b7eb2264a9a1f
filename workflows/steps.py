"""Running a saga's steps: the machinery every saga shares, beside `Saga` (saga.py).

`Steps` runs one step at a time for a saga workflow and keeps its record in the saga's
status (`Progress`): the attempts, the outcome, a safe error. It also knows:

- **compensated steps**: the compensation is registered *before* the step runs
  (ARCHITECTURE.md, "Saga rules", rule 1);
- **cancels**: before the pivot, a customer cancel (the status's `cancel_requested`) or a
  Temporal cancel abandons the running step; past the pivot (`past_pivot`) a Temporal
  cancel is recorded and ignored, and the step runs to its end (rule 5);
- **business failures**: a non-retryable `ApplicationError` whose type the saga maps to a
  failure reason aborts the saga with that reason (rule 6); a step that reaches its retry
  ceiling (`StepLimits.max_attempts`) aborts it as exhausted;
- **optional steps**: a failure is recorded as `skipped`, never fails the saga;
- **the change hook**: every change calls `on_change`, which the saga uses to refresh its
  search attributes, its Web UI details and its lifecycle snapshot.

A step's outcome raises `SagaAborted(reason)` for the saga to roll back; the saga decides
what the reason means for its own status.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, RetryState

from workflows.coordination_models import StuckCompensation
from workflows.failures import SafeError, application_error, attempt_from, safe_error
from workflows.saga import Compensation, CompensationRecord, CompensationStatus, Saga

T = TypeVar("T")
# A saga's own failure reasons (a StrEnum of its status), carried by SagaAborted.
R = TypeVar("R", bound=StrEnum)

# Infrastructure failures retry (rule 6); business failures and poison pills are raised
# non-retryable by the services themselves. Steps before the pivot stop at
# StepLimits.max_attempts; the steps after it never give up.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)

# An optional step tries a little, then gives up within its schedule-to-close timeout.
OPTIONAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=3,
)

WORKFLOW_CANCELLED = SafeError("Cancelled", "workflow cancelled")
CUSTOMER_CANCELLED = SafeError("CancelledByCustomer", "cancelled by customer")
IGNORED_CANCEL_NOTE = "cancel ignored past the pivot"
# A Temporal cancel while the saga waits FAILED for an operator: obeying it would close the
# workflow with the failed work still undone (an authorization held, a parcel uncharged).
IGNORED_WHILE_FAILED_NOTE = "cancel ignored while waiting for an operator's retry"


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # An optional step that failed: recorded, and the saga went on.
    SKIPPED = "skipped"


@dataclass
class StepRecord:
    name: str
    status: StepStatus = StepStatus.RUNNING
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # "<code>: <short safe message>", never raw exception text (it can carry values).
    error: str | None = None
    error_code: str | None = None
    # What happened to the step besides its outcome, e.g. a cancel ignored past the pivot.
    note: str | None = None


class Progress(Protocol):
    """The part of a saga's status that `Steps` keeps: its steps and cancel flags."""

    steps: list[StepRecord]
    current_step: str | None
    cancel_requested: bool
    cancel_ignored: bool


class SagaAborted(Exception, Generic[R]):
    """Control flow inside the workflow: stop the steps and roll back, for `reason`."""

    def __init__(self, reason: R | None) -> None:
        super().__init__(reason or "unexpected failure")
        self.reason = reason


@dataclass(frozen=True)
class StepLimits:
    """Timeouts, heartbeats and the retry ceiling, carried in the saga's input."""

    timeout_s: int = 30
    # Steps before the pivot give up after this many attempts and the saga rolls back.
    max_attempts: int = 20
    # A step whose worker stops heartbeating this long is retried elsewhere (0: off).
    heartbeat_timeout_s: int = 5
    # False for sagas started before the ceiling and heartbeats existed (a patch decides).
    enabled: bool = True

    def options(self, task_queue: str, retry: RetryPolicy) -> dict[str, Any]:
        """`execute_activity` keyword arguments for one step on `task_queue`."""
        return {
            "task_queue": task_queue,
            "start_to_close_timeout": timedelta(seconds=self.timeout_s),
            "retry_policy": retry,
            **self.heartbeat(),
        }

    def bounded_retry(self) -> RetryPolicy:
        """Before the pivot a step that keeps failing gives up, and the saga rolls back."""
        if not self.enabled:
            return STEP_RETRY
        return dataclasses.replace(STEP_RETRY, maximum_attempts=self.max_attempts)

    def heartbeat(self) -> dict[str, Any]:
        # Service workers heartbeat every activity (workers/guard.py): a killed worker's
        # step is retried after this long instead of after its whole start-to-close timeout.
        if not self.enabled or self.heartbeat_timeout_s <= 0:
            return {}
        return {"heartbeat_timeout": timedelta(seconds=self.heartbeat_timeout_s)}


def step_key(step: str, nonce: str | None) -> str:
    """A step's idempotency key: `<workflow_id>:<nonce>:<step>` (rule 2).

    The workflow ID, never the run ID: a reset or continue-as-new keeps the same keys. The
    nonce, chosen by the API per saga: a later saga reusing the workflow ID (once retention
    deleted this history) must not find this one's results under its keys.
    """
    workflow_id = workflow.info().workflow_id
    return f"{workflow_id}:{nonce}:{step}" if nonce is not None else f"{workflow_id}:{step}"


def undo_key(step: str, nonce: str | None) -> str:
    return f"{step_key(step, nonce)}:undo"


class Steps(Generic[R]):
    def __init__(
        self,
        progress: Progress,
        saga: Saga,
        *,
        business_failures: Mapping[str, R],
        exhausted: R,
        cancelled: R,
        messages: Mapping[str, str],
        on_change: Callable[[], None],
    ) -> None:
        self._progress = progress
        self._saga = saga
        self._business_failures = business_failures
        self._exhausted = exhausted
        self._cancelled = cancelled
        self._messages = messages
        self._on_change = on_change
        self.limits = StepLimits()
        # Set once the saga passed its point of no return: cancels are ignored from then.
        self.past_pivot = False
        # A step past the pivot that failed for good and waits for an operator's retry.
        self.failed_step: StepRecord | None = None

    async def compensated(
        self,
        name: str,
        action: Callable[[], Awaitable[T]],
        compensation: Compensation,
        *,
        pivot: Callable[[], bool] | None = None,
    ) -> T:
        """A step that can be undone: its compensation is registered first (rule 1)."""
        self._saga.add_compensation(name, compensation)
        return await self.run(name, action, pivot=pivot)

    async def run(
        self,
        name: str,
        action: Callable[[], Awaitable[T]],
        *,
        forward_only: bool = False,
        pivot: Callable[[], bool] | None = None,
    ) -> T:
        """Run one step; a failure raises `SagaAborted` with the saga's reason for it.

        `forward_only`: past the pivot, a Temporal cancel is recorded, never obeyed.
        `pivot`: this step is the pivot; when a Temporal cancel arrives just as it
        succeeded, `pivot()` (a `workflow.patched` check) says whether it is already
        behind the saga, and the cancel is then ignored like any later one.
        """
        record = self.begin(name)
        step = asyncio.ensure_future(action())
        if forward_only:
            await self._despite_cancel(step, record)
        else:
            await self._unless_cancelled(step, record, pivot)
        try:
            result = step.result()
        except ActivityError as err:
            raise self._failed(record, err) from err
        record.attempts = getattr(result, "attempt", 1)
        self.end(record, StepStatus.SUCCEEDED)
        return result

    async def optional(self, name: str, action: Callable[[], Awaitable[Any]]) -> None:
        """Graceful degradation: a failed optional step is recorded as skipped, no more."""
        record = self.begin(name)
        try:
            if self.past_pivot:
                step = asyncio.ensure_future(action())
                await self._despite_cancel(step, record)
                result = step.result()
            else:
                result = await action()
        except ActivityError as err:
            self.end(record, StepStatus.SKIPPED, error=safe_error(err, self._messages))
            workflow.logger.warning("optional step %s skipped: %s", name, err.cause or err)
            return
        record.attempts = getattr(result, "attempt", 1)
        self.end(record, StepStatus.SUCCEEDED)

    def _failed(self, record: StepRecord, err: ActivityError) -> SagaAborted[R]:
        app_error = application_error(err)
        record.attempts = attempt_from(app_error) or record.attempts
        error = safe_error(err, self._messages)
        reason = self._business_failures.get(app_error.type or "") if app_error else None
        if (
            reason is None
            and self.limits.enabled
            and err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
        ):
            reason = self._exhausted
            record.attempts = self.limits.max_attempts
            error = SafeError(
                error.code, f"{error.message}; gave up after {record.attempts} attempts"
            )
        self.end(record, StepStatus.FAILED, error=error)
        return SagaAborted(reason)

    async def _unless_cancelled(
        self,
        step: asyncio.Future[Any],
        record: StepRecord,
        pivot: Callable[[], bool] | None,
    ) -> None:
        """Wait for a step before the pivot; a customer or Temporal cancel abandons it."""
        progress = self._progress
        cancel = asyncio.ensure_future(workflow.wait_condition(lambda: progress.cancel_requested))
        try:
            await workflow.wait([step, cancel], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if pivot is not None and _succeeded(step) and pivot():
                # The pivot step succeeded in the same breath as the cancel arrived: the
                # pivot is behind us, so the cancel is ignored like any later one.
                self.past_pivot = True
                self.ignore_cancel(record)
                return
            step.cancel()
            self.end(record, StepStatus.CANCELLED, error=WORKFLOW_CANCELLED)
            raise
        finally:
            cancel.cancel()
        if not step.done():
            step.cancel()
            # The abandoned step ends in an ActivityError; retrieve it so asyncio does not
            # log "Task exception was never retrieved" on every customer cancel.
            step.add_done_callback(lambda task: task.cancelled() or task.exception())
            self.end(record, StepStatus.CANCELLED, error=CUSTOMER_CANCELLED)
            raise SagaAborted(self._cancelled)

    async def _despite_cancel(self, step: asyncio.Future[Any], record: StepRecord) -> None:
        """Wait for a step past the pivot: a Temporal cancel is recorded, never obeyed.

        `workflow.wait` leaves the step's task alone when the wait itself is cancelled, so
        the activity is not cancelled either; the saga waits again and goes on forward.
        """
        while not step.done():
            try:
                await workflow.wait([step])
            except asyncio.CancelledError:
                self.ignore_cancel(record)

    async def forward(
        self,
        name: str,
        action: Callable[[], Awaitable[T]],
        retries: OperatorRetries,
        *,
        on_failed: Callable[[StepRecord], None],
        on_retried: Callable[[], None],
    ) -> T:
        """A step past the pivot: it retries without a ceiling, and never rolls back.

        A failure for good (non-retryable: a poison pill, a business refusal) calls
        `on_failed` (the saga shows FAILED, with this step as a dead letter) and waits for
        an operator's retry, which runs the step again, as often as it takes.
        """
        while True:
            try:
                return await self.run(name, action, forward_only=True)
            except SagaAborted:
                self.failed_step = self._progress.steps[-1]
            on_failed(self.failed_step)
            await retries.wait(self.failed_step)
            self.failed_step = None
            on_retried()

    def ignore_cancel(self, record: StepRecord | None, why: str = IGNORED_CANCEL_NOTE) -> None:
        """Record a Temporal cancel request that is not obeyed, on `record` (by default the
        saga's last step), so the status and the Web UI say why."""
        workflow.logger.warning("Temporal cancel request ignored: %s", why)
        self._progress.cancel_ignored = True
        steps = self._progress.steps
        record = record or (steps[-1] if steps else None)
        if record is not None:
            record.note = why
        self._on_change()

    # --- records -------------------------------------------------------------------------

    def begin(self, name: str) -> StepRecord:
        record = StepRecord(name=name, attempts=1, started_at=workflow.now())
        self._progress.steps.append(record)
        self._progress.current_step = name
        self._on_change()
        return record

    def end(self, record: StepRecord, outcome: StepStatus, error: SafeError | None = None) -> None:
        record.status = outcome
        record.error = str(error) if error else None
        record.error_code = error.code if error else None
        record.finished_at = workflow.now()
        self._on_change()


class OperatorRetries:
    """Where a FAILED saga waits for an operator: the `retry` updates set `requested`.

    Waiting survives a Temporal cancel request (Web UI, CLI): the request is recorded on
    the status (`cancel_ignored`) and the saga keeps waiting, when `survive_cancel()` (a
    `workflow.patched` check, so older histories replay as they ran) says so.
    """

    def __init__(self, steps: Steps[Any], survive_cancel: Callable[[], bool]) -> None:
        self._steps = steps
        self._survive_cancel = survive_cancel
        self.requested = False
        # How many retries an operator asked for (each one is a new round of the saga).
        self.taken = 0

    async def request(self) -> None:
        """An operator's retry (the sagas' `retry` updates): returns once it has begun,
        so the update answers with the saga already moving again."""
        self.requested = True
        await workflow.wait_condition(lambda: not self.requested)

    async def wait(self, record: StepRecord | None) -> None:
        """Until an operator asks for a retry; `record` is the failed step, if one is."""
        while not self.requested:
            try:
                await workflow.wait_condition(lambda: self.requested)
            except asyncio.CancelledError:
                if record is not None and self._steps.past_pivot:
                    self._steps.ignore_cancel(record)
                elif self._survive_cancel():
                    self._steps.ignore_cancel(record, IGNORED_WHILE_FAILED_NOTE)
                else:
                    raise
        self.requested = False
        self.taken += 1


def _succeeded(step: asyncio.Future[Any]) -> bool:
    return step.done() and not step.cancelled() and step.exception() is None


# --- what a saga shows: the Web UI's Markdown, the coordinator's dead letters ------------

# Characters with a meaning in Markdown; escaped so a value can never become a link,
# an image or a table cell in the Web UI.
_MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~")


def escape_markdown(text: str) -> str:
    """`text` as literal Markdown: every special character backslash-escaped, on one line."""
    flat = " ".join(text.split())
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in flat)


def dead_letters(
    saga_id: str,
    compensations: Sequence[CompensationRecord],
    attempts_per_round: int,
    failed_step: StepRecord | None = None,
) -> list[StuckCompensation]:
    """What of one saga needs an operator's eye: stuck or failed compensations, and a
    forward step past the pivot that failed for good (`failed_step`)."""
    failed = []
    if failed_step is not None:
        failed.append(
            StuckCompensation(
                order_id=saga_id,
                compensation=failed_step.name,
                status=CompensationStatus.FAILED,
                rounds=1,
                attempts=failed_step.attempts,
                error=failed_step.error,
                since=failed_step.started_at,
            )
        )
    return failed + [
        StuckCompensation(
            order_id=saga_id,
            compensation=c.name,
            status=c.status,
            rounds=c.rounds,
            attempts=c.rounds * attempts_per_round,
            error=c.error,
            since=c.started_at,
        )
        for c in compensations
        if c.status.needs_attention
    ]
