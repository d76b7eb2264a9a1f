"""OrderWorkflow: the checkout saga (reserve stock, authorize, approve, ship, capture)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import lifecycle
    from workflows.coordination_models import SagaSnapshot, StuckCompensation
    from workflows.models import (
        ApprovalDecision,
        AuthorizePaymentInput,
        AuthorizePaymentResult,
        BusinessError,
        CancelRequest,
        CancelShipmentInput,
        CapturePaymentInput,
        CapturePaymentResult,
        CreateShipmentInput,
        CreateShipmentResult,
        FailureReason,
        OrderInput,
        OrderState,
        OrderStatus,
        ReleaseStockInput,
        ReserveStockInput,
        ReserveStockResult,
        RetryCompensationsRequest,
        SendConfirmationInput,
        SendConfirmationResult,
        StepRecord,
        VoidPaymentInput,
    )
    from workflows.saga import Saga

T = TypeVar("T")

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
FAILURE_REASON = SearchAttributeKey.for_keyword("FailureReason")

# Infrastructure failures retry without limit (DESIGN §4 rule 5); business failures are
# raised non-retryable by the services themselves.
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

BUSINESS_FAILURES = {
    BusinessError.OUT_OF_STOCK: FailureReason.OUT_OF_STOCK,
    BusinessError.PAYMENT_DECLINED: FailureReason.PAYMENT_DECLINED,
    BusinessError.UNDELIVERABLE: FailureReason.UNDELIVERABLE,
}

# Step names: also the suffix of each step's idempotency key, so never rename one.
RESERVE, AUTHORIZE, APPROVAL, SHIP, CAPTURE, NOTIFY = (
    "reserve_stock",
    "authorize_payment",
    "await_approval",
    "create_shipment",
    "capture_payment",
    "send_confirmation",
)

# Sagas started before the confirmation step existed must replay without it (README,
# "Changing workflow code safely"). Remove once no such saga can still be running.
NOTIFY_PATCH = "send-confirmation-step"
# Sagas that ended FAILED before operators could retry compensations completed at once.
OPERATOR_RETRY_PATCH = "operator-retries-failed-compensations"


class SagaAborted(Exception):
    """Control flow inside the workflow: stop the steps and roll back."""

    def __init__(self, reason: FailureReason | None) -> None:
        super().__init__(reason or "unexpected failure")
        self.reason = reason


@workflow.defn
class OrderWorkflow:
    @workflow.init
    def __init__(self, input: OrderInput) -> None:
        self._input = input
        self._status = OrderStatus(order_id=input.order_id, customer_id=input.customer_id)
        self._decision: ApprovalDecision | None = None
        self._shipping_started = False
        self._retry_requested = False
        self._saga = Saga(on_change=self._touch)

    @workflow.run
    async def run(self, input: OrderInput) -> OrderStatus:
        self._status.created_at = workflow.now()
        workflow.upsert_search_attributes([CUSTOMER_ID.value_set(input.customer_id)])
        self._set_state(OrderState.PENDING)
        try:
            await self._checkout()
        except SagaAborted as abort:
            await self._roll_back(abort.reason)
            await self._await_operator_retries()
        except asyncio.CancelledError:
            # Temporal cancellation of the whole workflow: undo, then report it cancelled.
            await self._roll_back(FailureReason.CANCELLED_BY_CUSTOMER)
            raise
        return self._status

    # --- queries, signals and updates ------------------------------------------------------

    @workflow.query
    def status(self) -> OrderStatus:
        return self._status

    @workflow.update
    def cancel(self, request: CancelRequest) -> OrderStatus:
        self._accept_cancel(request)
        return self._status

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._status.status.is_terminal or self._status.status == OrderState.COMPENSATING:
            raise ValueError(f"order is already {self._status.status.value}")
        if self._shipping_started:
            raise ValueError("order has shipped; it can no longer be cancelled")

    @workflow.signal
    def request_cancel(self, request: CancelRequest) -> None:
        # The fire-and-forget twin of the `cancel` update, for callers that cannot wait:
        # honoured on the same terms, and ignored (logged) where the update would refuse.
        try:
            self._validate_cancel(request)
        except ValueError as refused:
            workflow.logger.info("ignoring cancel signal: %s", refused)
            return
        self._accept_cancel(request)

    def _accept_cancel(self, request: CancelRequest) -> None:
        workflow.logger.info("cancel accepted: %s", request.reason)
        self._status.cancel_requested = True
        self._touch()

    @workflow.update
    async def retry_compensations(self, request: RetryCompensationsRequest) -> OrderStatus:
        workflow.logger.info("operator %s retries failed compensations", request.operator)
        self._retry_requested = True
        # Answer once the retry has begun; the caller follows it through the status.
        await workflow.wait_condition(lambda: self._status.status != OrderState.FAILED)
        return self._status

    @retry_compensations.validator
    def _validate_retry(self, request: RetryCompensationsRequest) -> None:
        if self._status.status != OrderState.FAILED or self._retry_requested:
            raise ValueError(f"order is {self._status.status.value}, not FAILED")
        if not self._saga.failed:
            raise ValueError("no compensation of this order failed; there is nothing to retry")

    @workflow.update
    async def decide(self, decision: ApprovalDecision) -> OrderStatus:
        self._decision = decision
        self._touch()
        # Answer with the saga already moving on (PENDING, or COMPENSATING after a
        # rejection), so the caller sees the effect of the decision, not the wait before it.
        await workflow.wait_condition(lambda: self._status.status != OrderState.AWAITING_APPROVAL)
        return self._status

    @decide.validator
    def _validate_decide(self, decision: ApprovalDecision) -> None:
        if self._status.status != OrderState.AWAITING_APPROVAL or self._decision is not None:
            raise ValueError(f"order is not awaiting approval (it is {self._status.status.value})")

    @workflow.signal
    def approve(self) -> None:
        self._record_signal_decision(ApprovalDecision(approved=True, operator="signal"))

    @workflow.signal
    def reject(self) -> None:
        self._record_signal_decision(ApprovalDecision(approved=False, operator="signal"))

    def _record_signal_decision(self, decision: ApprovalDecision) -> None:
        # Signals cannot be refused, so a late or repeated one is logged and ignored.
        if self._decision is None and not self._status.status.is_terminal:
            self._decision = decision
        else:
            workflow.logger.info("ignoring approval signal in state %s", self._status.status)

    # --- the saga ------------------------------------------------------------------------

    async def _checkout(self) -> None:
        input, queues = self._input, self._input.task_queues
        reservation = await self._step(
            RESERVE,
            action=lambda: workflow.execute_activity(
                RESERVE,
                ReserveStockInput(self._key(RESERVE), input.order_id, input.items),
                result_type=ReserveStockResult,
                **self._options(queues.inventory),
            ),
            compensation=lambda retry: workflow.execute_activity(
                "release_stock",
                ReleaseStockInput(self._undo_key(RESERVE), self._key(RESERVE), input.order_id),
                **self._options(queues.inventory, retry),
            ),
        )
        self._status.total_cents = reservation.total_cents

        await self._step(
            AUTHORIZE,
            action=lambda: workflow.execute_activity(
                AUTHORIZE,
                AuthorizePaymentInput(
                    self._key(AUTHORIZE),
                    input.order_id,
                    input.card_token,
                    reservation.total_cents,
                ),
                result_type=AuthorizePaymentResult,
                **self._options(queues.payments),
            ),
            compensation=lambda retry: workflow.execute_activity(
                "void_payment",
                VoidPaymentInput(self._undo_key(AUTHORIZE), self._key(AUTHORIZE), input.order_id),
                **self._options(queues.payments, retry),
            ),
        )

        if reservation.total_cents > input.approval_threshold_cents:
            await self._await_approval()

        self._shipping_started = True
        shipment = await self._step(
            SHIP,
            action=lambda: workflow.execute_activity(
                SHIP,
                CreateShipmentInput(
                    self._key(SHIP), input.order_id, input.shipping_address, input.items
                ),
                result_type=CreateShipmentResult,
                **self._options(queues.shipping),
            ),
            compensation=lambda retry: workflow.execute_activity(
                "cancel_shipment",
                CancelShipmentInput(self._undo_key(SHIP), self._key(SHIP), input.order_id),
                **self._options(queues.shipping, retry),
            ),
        )
        self._status.tracking_number = shipment.tracking_number

        await self._run_step(
            CAPTURE,
            lambda: workflow.execute_activity(
                CAPTURE,
                CapturePaymentInput(self._key(CAPTURE), self._key(AUTHORIZE), input.order_id),
                result_type=CapturePaymentResult,
                **self._options(queues.payments),
            ),
        )
        if workflow.patched(NOTIFY_PATCH):
            await self._optional_step(
                NOTIFY,
                lambda: workflow.execute_activity(
                    NOTIFY,
                    SendConfirmationInput(
                        self._key(NOTIFY),
                        input.order_id,
                        input.customer_id,
                        shipment.tracking_number,
                    ),
                    result_type=SendConfirmationResult,
                    task_queue=queues.notifications,
                    start_to_close_timeout=timedelta(seconds=self._input.step_timeout_s),
                    schedule_to_close_timeout=timedelta(seconds=input.notification_timeout_s),
                    retry_policy=OPTIONAL_RETRY,
                ),
            )
        self._status.current_step = None
        self._saga.complete()
        self._set_state(OrderState.COMPLETED)

    async def _optional_step(self, name: str, action: Callable[[], Awaitable[Any]]) -> None:
        """Graceful degradation: a failed optional step is recorded as skipped, no more."""
        record = self._begin_step(name)
        try:
            result = await action()
        except ActivityError as err:
            self._end_step(record, "skipped", error=str(err.cause or err))
            workflow.logger.warning("optional step %s skipped: %s", name, err.cause or err)
            return
        record.attempts = getattr(result, "attempt", 1)
        self._end_step(record, "succeeded")

    async def _step(
        self,
        name: str,
        action: Callable[[], Awaitable[T]],
        compensation: Callable[[RetryPolicy], Awaitable[Any]],
    ) -> T:
        self._saga.add_compensation(name, compensation)  # before the step: DESIGN §4 rule 1
        return await self._run_step(name, action)

    async def _run_step(self, name: str, action: Callable[[], Awaitable[T]]) -> T:
        record = self._begin_step(name)
        step = asyncio.ensure_future(action())
        cancel = asyncio.ensure_future(
            workflow.wait_condition(lambda: self._status.cancel_requested)
        )
        try:
            await workflow.wait([step, cancel], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            step.cancel()
            self._end_step(record, "cancelled", error="workflow cancelled")
            raise
        finally:
            cancel.cancel()
        if not step.done():
            step.cancel()
            # The abandoned step ends in an ActivityError; retrieve it so asyncio does not
            # log "Task exception was never retrieved" on every customer cancel.
            step.add_done_callback(lambda task: task.cancelled() or task.exception())
            self._end_step(record, "cancelled", error="cancelled by customer")
            raise SagaAborted(FailureReason.CANCELLED_BY_CUSTOMER)
        try:
            result = step.result()
        except ActivityError as err:
            cause = err.cause
            app_error = cause if isinstance(cause, ApplicationError) else None
            record.attempts = _attempt_from(app_error) or record.attempts
            self._end_step(record, "failed", error=str(cause or err))
            reason = BUSINESS_FAILURES.get(app_error.type or "") if app_error else None
            raise SagaAborted(reason) from err
        record.attempts = getattr(result, "attempt", 1)
        self._end_step(record, "succeeded")
        return result

    async def _await_approval(self) -> None:
        record = self._begin_step(APPROVAL)
        self._set_state(OrderState.AWAITING_APPROVAL)
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None or self._status.cancel_requested,
                timeout=timedelta(seconds=self._input.approval_timeout_s),
            )
        except TimeoutError as err:
            self._end_step(record, "failed", error="no decision before the approval timeout")
            raise SagaAborted(FailureReason.APPROVAL_TIMEOUT) from err
        except asyncio.CancelledError:
            self._end_step(record, "cancelled", error="workflow cancelled")
            raise
        if self._status.cancel_requested:
            self._end_step(record, "cancelled", error="cancelled by customer")
            raise SagaAborted(FailureReason.CANCELLED_BY_CUSTOMER)
        assert self._decision is not None
        if not self._decision.approved:
            self._end_step(record, "failed", error=f"rejected by {self._decision.operator}")
            raise SagaAborted(FailureReason.REJECTED_BY_OPERATOR)
        self._end_step(record, "succeeded")
        self._set_state(OrderState.PENDING)

    async def _roll_back(self, reason: FailureReason | None) -> None:
        self._status.failure_reason = reason
        self._status.current_step = "compensating"
        self._set_state(OrderState.COMPENSATING)
        await self._saga.compensate()
        self._finish_roll_back(reason)

    def _finish_roll_back(self, reason: FailureReason | None) -> None:
        self._status.current_step = None
        # FAILED means an operator must look: a compensation failed for good, or a step
        # failed in a way no business rule explains.
        clean = self._saga.all_succeeded and reason is not None
        self._set_state(OrderState.COMPENSATED if clean else OrderState.FAILED)

    async def _await_operator_retries(self) -> None:
        """A compensation failed for good: stay open, FAILED, until an operator retries it.

        The failure is never swallowed: the order shows FAILED with the failed compensation
        (and the coordinator lists it as a dead letter) until the cause is fixed and the
        `retry_compensations` update runs it again; then the order can end COMPENSATED.
        """
        if not self._saga.failed or not workflow.patched(OPERATOR_RETRY_PATCH):
            return
        while self._saga.failed:
            await workflow.wait_condition(lambda: self._retry_requested)
            self._status.current_step = "compensating"
            self._set_state(OrderState.COMPENSATING)
            self._retry_requested = False
            await self._saga.retry_failed()
            self._finish_roll_back(self._status.failure_reason)

    # --- bookkeeping ---------------------------------------------------------------------

    def _begin_step(self, name: str) -> StepRecord:
        record = StepRecord(name=name, attempts=1, started_at=workflow.now())
        self._status.steps.append(record)
        self._status.current_step = name
        self._touch()
        return record

    def _end_step(self, record: StepRecord, outcome: str, error: str | None = None) -> None:
        record.status = outcome
        record.error = error
        record.finished_at = workflow.now()
        self._touch()

    def _set_state(self, state: OrderState) -> None:
        self._status.status = state
        reason = self._status.failure_reason
        workflow.upsert_search_attributes(
            [
                ORDER_STATUS.value_set(state.value),
                FAILURE_REASON.value_set(reason.value) if reason else FAILURE_REASON.value_unset(),
            ]
        )
        self._touch()

    def _touch(self) -> None:
        self._status.updated_at = workflow.now()
        self._status.compensations = self._saga.records
        step = self._status.current_step or "-"
        lines = [f"**{self._status.status.value}** · step `{step}`"]
        if self._status.total_cents is not None:
            lines.append(f"total {self._status.total_cents / 100:.2f}")
        if self._status.failure_reason:
            lines.append(f"reason {self._status.failure_reason.value}")
        stuck = [c.name for c in self._status.compensations if c.status in ("stuck", "failed")]
        if stuck:
            lines.append(f"compensations needing attention: {', '.join(stuck)}")
        workflow.set_current_details("\n\n".join(lines))
        lifecycle.publish(self._snapshot())

    def _snapshot(self) -> SagaSnapshot:
        status, attempts_per_round = self._status, self._saga.policy.attempts_per_round
        return SagaSnapshot(
            order_id=status.order_id,
            status=status.status.value,
            step=status.current_step,
            at=workflow.now(),
            terminal=status.status.is_terminal,
            stuck=[
                StuckCompensation(
                    order_id=status.order_id,
                    compensation=c.name,
                    status=c.status,
                    rounds=c.rounds,
                    attempts=c.rounds * attempts_per_round,
                    error=c.error,
                    since=c.started_at,
                )
                for c in status.compensations
                if c.status in ("stuck", "failed")
            ],
        )

    def _key(self, step: str) -> str:
        # The workflow ID, never the run ID: a reset or continue-as-new keeps the same keys.
        return f"{workflow.info().workflow_id}:{step}"

    def _undo_key(self, step: str) -> str:
        return f"{self._key(step)}:undo"

    def _options(self, task_queue: str, retry: RetryPolicy = STEP_RETRY) -> dict[str, Any]:
        return {
            "task_queue": task_queue,
            "start_to_close_timeout": timedelta(seconds=self._input.step_timeout_s),
            "retry_policy": retry,
        }


def _attempt_from(error: ApplicationError | None) -> int | None:
    if error is None or not error.details:
        return None
    details = error.details[0]
    return details.get("attempt") if isinstance(details, dict) else None
