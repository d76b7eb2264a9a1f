"""ReturnWorkflow: the returns saga (claim, label, wait for the parcel, restock, refund).

Built on the saga toolkit (saga.py, steps.py) like the checkout:

1. `claim_return` (inventory) records the returned quantities in the order's claim
   ledger, refused when they exceed what was bought minus what other returns claim; it
   also fixes the refund, the returned items' share of the captured amount.
2. `issue_return_label` (shipping) issues the label for the parcel.
3. `await_parcel`: until an operator says the warehouse has it (the `receive` update), the
   customer cancels (`cancel`), or the parcel timeout passes (EXPIRED).
4. The pivot: the goods are back. From here the saga only goes forward, without a retry
   ceiling, and ignores Temporal cancels: `restock_items` (inventory), then
   `refund_return` (payments, a partial refund). A step that fails for good leaves the
   return FAILED and open, in the coordinator's dead letters, until an operator's `retry`.

Before the pivot a failure, a cancel or the timeout rolls back: the label is cancelled
and the claim released, so its quantities can be returned again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import lifecycle
    from workflows.compensations import undo_activities
    from workflows.coordination_models import SagaSnapshot
    from workflows.models import BusinessError, CancelRequest, RetryCompensationsRequest
    from workflows.return_models import (
        CancelReturnLabelInput,
        ClaimReturnInput,
        ClaimReturnResult,
        IssueReturnLabelInput,
        IssueReturnLabelResult,
        ReceiveRequest,
        RefundReturnInput,
        RefundReturnResult,
        ReleaseReturnClaimInput,
        RestockItemsInput,
        RestockItemsResult,
        ReturnError,
        ReturnFailure,
        ReturnInput,
        ReturnState,
        ReturnStatus,
    )
    from workflows.saga import Saga
    from workflows.search_attributes import CUSTOMER_ID, FAILURE_REASON, ORDER_ID, RETURN_STATUS
    from workflows.steps import (
        CUSTOMER_CANCELLED,
        STEP_RETRY,
        WORKFLOW_CANCELLED,
        OperatorRetries,
        SafeError,
        SagaAborted,
        StepLimits,
        StepRecord,
        Steps,
        StepStatus,
        dead_letters,
        escape_markdown,
        step_key,
        undo_key,
    )

# Step names: also the suffix of each step's idempotency key, so never rename one.
CLAIM, LABEL, AWAIT_PARCEL, RESTOCK, REFUND = (
    "claim_return",
    "issue_return_label",
    "await_parcel",
    "restock_items",
    "refund_return",
)
COMPENSATING = "compensating"
# Each step's compensating activity, as declared once for every saga (metrics time these).
UNDO = undo_activities("ReturnWorkflow")

BUSINESS_FAILURES = {
    ReturnError.EXCEEDS_ORDER: ReturnFailure.EXCEEDS_ORDER,
    ReturnError.NOT_RETURNABLE: ReturnFailure.NOT_RETURNABLE,
    BusinessError.INVALID_INPUT: ReturnFailure.INVALID_INPUT,
}
# A forward step that failed for good, and what the return says about it.
FORWARD_FAILURES = {RESTOCK: ReturnFailure.REFUND_FAILED, REFUND: ReturnFailure.REFUND_FAILED}

SAFE_MESSAGES = {
    ReturnError.EXCEEDS_ORDER: "more than the order has left to return",
    ReturnError.NOT_RETURNABLE: "the order has nothing a return could take back",
    ReturnError.REFUND_EXCEEDS_CAPTURE: "the refund would exceed what was captured",
    BusinessError.INVALID_INPUT: "the service refused a value of this return",
    "IdempotencyKeyReused": "a step key was used before for another operation",
    "CircuitOpen": "the service's circuit is open",
    "InjectedFault": "injected fault (chaos drill)",
}
PARCEL_TIMEOUT = SafeError("ParcelTimeout", "no parcel arrived before the parcel timeout")

# Waiting FAILED for an operator survives a Temporal cancel request (recorded, ignored);
# before this patch a cancel closed a return whose compensation had failed for good.
SURVIVE_CANCEL_PATCH = "operator-wait-survives-cancel"


@workflow.defn
class ReturnWorkflow:
    @workflow.init
    def __init__(self, input: ReturnInput) -> None:
        self._input = input
        self._status = ReturnStatus(
            return_id=input.return_id,
            order_id=input.order_id,
            customer_id=input.customer_id,
            items=list(input.items),
            reason=input.reason,
        )
        self._saga = Saga(on_change=self._touch, messages=SAFE_MESSAGES)
        self._steps = Steps(
            self._status,
            self._saga,
            business_failures=BUSINESS_FAILURES,
            exhausted=ReturnFailure.STEP_EXHAUSTED,
            cancelled=ReturnFailure.CANCELLED_BY_CUSTOMER,
            messages=SAFE_MESSAGES,
            on_change=self._touch,
        )
        # None while the claim runs; then whether the ledger took it (the API's 202 or 409).
        self._claimed: bool | None = None
        self._retries = OperatorRetries(
            self._steps, survive_cancel=lambda: workflow.patched(SURVIVE_CANCEL_PATCH)
        )

    @workflow.run
    async def run(self, input: ReturnInput) -> ReturnStatus:
        self._status.created_at = workflow.now()
        self._steps.limits = StepLimits(
            timeout_s=input.step_timeout_s,
            max_attempts=input.step_max_attempts,
            heartbeat_timeout_s=input.step_heartbeat_timeout_s,
        )
        workflow.upsert_search_attributes(
            [CUSTOMER_ID.value_set(input.customer_id), ORDER_ID.value_set(input.order_id)]
        )
        self._set_state(ReturnState.AWAITING_PARCEL)
        try:
            await self._return()
        except SagaAborted as abort:
            await self._roll_back(abort.reason)
            await self._await_compensation_retries()
        except asyncio.CancelledError:
            # A Temporal cancel before the pivot: undo, then report it cancelled. Past the
            # pivot the steps ignore it, so it never gets here.
            await self._roll_back(ReturnFailure.CANCELLED_BY_CUSTOMER)
            if self._saga.failed and workflow.patched(SURVIVE_CANCEL_PATCH):
                # A compensation failed for good: wait FAILED for an operator first.
                await self._await_compensation_retries()
            raise
        # An update may still be answering (admission, receive): let it finish first.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    # --- queries and updates -------------------------------------------------------------

    @workflow.query
    def status(self) -> ReturnStatus:
        return self._status

    @workflow.update
    async def admission(self) -> ReturnStatus:
        """Answers once the claim is decided: taken (the return goes on) or refused."""
        await workflow.wait_condition(lambda: self._claimed is not None)
        return self._status

    @workflow.update
    def cancel(self, request: CancelRequest) -> ReturnStatus:
        workflow.logger.info("return cancel accepted: %s", request.reason)
        self._status.cancel_requested = True
        self._touch()
        return self._status

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._status.received:
            raise ValueError("the parcel was received; the return can no longer be cancelled")
        if self._status.status != ReturnState.AWAITING_PARCEL or self._rolling_back:
            raise ValueError(f"return is already {self._status.status.value}")

    @workflow.update
    async def receive(self, request: ReceiveRequest) -> ReturnStatus:
        workflow.logger.info("operator %s received the parcel", request.operator)
        self._status.received = True
        self._touch()
        if self._status.current_step == AWAIT_PARCEL:
            # Answer with the refund under way, as the caller's next question would be.
            await workflow.wait_condition(
                lambda: self._status.status != ReturnState.AWAITING_PARCEL
            )
        return self._status

    @receive.validator
    def _validate_receive(self, request: ReceiveRequest) -> None:
        status = self._status
        if status.received:
            raise ValueError("the parcel was already received")
        if status.status != ReturnState.AWAITING_PARCEL or self._rolling_back:
            raise ValueError(f"return is {status.status.value}, not awaiting its parcel")
        if status.cancel_requested:
            raise ValueError("the return was cancelled")
        if self._claimed is not True:
            raise ValueError("the return is still being admitted; try again in a moment")
        if status.current_step != AWAIT_PARCEL:
            # Received while the label step runs, the parcel would be lost if that step then
            # failed and rolled the return back: it is taken only once the label exists.
            raise ValueError("the return label is still being issued; try again in a moment")

    @workflow.update
    async def retry(self, request: RetryCompensationsRequest) -> ReturnStatus:
        workflow.logger.info("operator %s retries what failed", request.operator)
        await self._retries.request()
        return self._status

    @retry.validator
    def _validate_retry(self, request: RetryCompensationsRequest) -> None:
        if self._status.status != ReturnState.FAILED or self._retries.requested:
            raise ValueError(f"return is {self._status.status.value}, not FAILED")
        if not self._saga.failed and self._steps.failed_step is None:
            raise ValueError("nothing of this return failed for good; there is nothing to retry")

    @property
    def _rolling_back(self) -> bool:
        return self._status.failure_reason is not None

    # --- the saga ------------------------------------------------------------------------

    async def _return(self) -> None:
        input, queues, steps = self._input, self._input.task_queues, self._steps
        limits = steps.limits
        try:
            claim = await steps.compensated(
                CLAIM,
                action=lambda: workflow.execute_activity(
                    CLAIM,
                    ClaimReturnInput(
                        self._key(CLAIM),
                        input.order_id,
                        input.return_id,
                        input.items,
                        reservation_id=input.reservation_id,
                    ),
                    result_type=ClaimReturnResult,
                    **limits.options(queues.inventory, limits.bounded_retry()),
                ),
                compensation=lambda retry: workflow.execute_activity(
                    UNDO[CLAIM],
                    ReleaseReturnClaimInput(
                        undo_key(CLAIM, input.nonce),
                        self._key(CLAIM),
                        input.order_id,
                        input.return_id,
                    ),
                    **limits.options(queues.inventory, retry),
                ),
            )
        except BaseException:
            self._claimed = False
            raise
        self._claimed = True
        self._status.refund_cents = claim.refund_cents

        label = await steps.compensated(
            LABEL,
            action=lambda: workflow.execute_activity(
                LABEL,
                IssueReturnLabelInput(self._key(LABEL), input.order_id, input.return_id),
                result_type=IssueReturnLabelResult,
                **limits.options(queues.shipping, limits.bounded_retry()),
            ),
            compensation=lambda retry: workflow.execute_activity(
                UNDO[LABEL],
                CancelReturnLabelInput(
                    undo_key(LABEL, input.nonce), self._key(LABEL), input.order_id, input.return_id
                ),
                **limits.options(queues.shipping, retry),
            ),
        )
        self._status.tracking_number = label.tracking_number

        await self._await_parcel()
        # The pivot (ARCHITECTURE.md, "Saga rules", rule 5): the goods are back, so the
        # label and the claim stand, and the saga goes forward whatever is cancelled.
        steps.past_pivot = True
        self._saga.complete()
        self._set_state(ReturnState.REFUNDING)

        await self._forward(
            RESTOCK,
            lambda: workflow.execute_activity(
                RESTOCK,
                RestockItemsInput(self._key(RESTOCK), self._key(CLAIM), input.return_id),
                result_type=RestockItemsResult,
                **limits.options(queues.inventory, STEP_RETRY),
            ),
        )
        refund = claim.refund_cents
        await self._forward(
            REFUND,
            lambda: workflow.execute_activity(
                REFUND,
                RefundReturnInput(self._key(REFUND), input.order_id, input.return_id, refund),
                result_type=RefundReturnResult,
                **limits.options(queues.payments, STEP_RETRY),
            ),
        )
        self._status.current_step = None
        self._set_state(ReturnState.REFUNDED)

    async def _await_parcel(self) -> None:
        steps, status = self._steps, self._status
        record = steps.begin(AWAIT_PARCEL)
        try:
            await workflow.wait_condition(
                lambda: status.received or status.cancel_requested,
                timeout=timedelta(seconds=self._input.parcel_timeout_s),
            )
        except TimeoutError as err:
            steps.end(record, StepStatus.FAILED, error=PARCEL_TIMEOUT)
            raise SagaAborted(ReturnFailure.PARCEL_TIMEOUT) from err
        except asyncio.CancelledError:
            steps.end(record, StepStatus.CANCELLED, error=WORKFLOW_CANCELLED)
            raise
        if not status.received:
            steps.end(record, StepStatus.CANCELLED, error=CUSTOMER_CANCELLED)
            raise SagaAborted(ReturnFailure.CANCELLED_BY_CUSTOMER)
        steps.end(record, StepStatus.SUCCEEDED)

    async def _forward(self, name: str, action: Callable[[], Awaitable[Any]]) -> None:
        """A step past the pivot: it retries without a ceiling; failed for good, an operator
        retries it once the cause is fixed, as often as it takes."""
        await self._steps.forward(
            name,
            action,
            self._retries,
            on_failed=self._forward_step_failed,
            on_retried=self._forward_step_retried,
        )

    def _forward_step_failed(self, record: StepRecord) -> None:
        self._status.failure_reason = FORWARD_FAILURES[record.name]
        self._set_state(ReturnState.FAILED)

    def _forward_step_retried(self) -> None:
        self._status.failure_reason = None
        self._set_state(ReturnState.REFUNDING)

    async def _roll_back(self, reason: ReturnFailure | None) -> None:
        self._status.failure_reason = reason
        self._status.current_step = COMPENSATING
        self._touch()
        await self._saga.compensate()
        self._finish_roll_back()

    def _finish_roll_back(self) -> None:
        self._status.current_step = None
        reason = self._status.failure_reason
        # FAILED: a compensation failed for good (open for a retry), or the return was
        # refused (EXCEEDS_ORDER, NOT_RETURNABLE, ...) or failed unexplained (closed).
        state = ReturnState.FAILED
        if self._saga.all_succeeded and reason == ReturnFailure.PARCEL_TIMEOUT:
            state = ReturnState.EXPIRED
        elif self._saga.all_succeeded and reason == ReturnFailure.CANCELLED_BY_CUSTOMER:
            state = ReturnState.CANCELLED
        self._set_state(state)

    async def _await_compensation_retries(self) -> None:
        """A compensation failed for good: FAILED and open until an operator retries it."""
        while self._saga.failed:
            await self._retries.wait(None)
            self._status.current_step = COMPENSATING
            self._touch()
            await self._saga.retry_failed()
            self._finish_roll_back()

    # --- bookkeeping ---------------------------------------------------------------------

    def _set_state(self, state: ReturnState) -> None:
        self._status.status = state
        reason = self._status.failure_reason
        workflow.upsert_search_attributes(
            [
                RETURN_STATUS.value_set(state.value),
                FAILURE_REASON.value_set(reason.value) if reason else FAILURE_REASON.value_unset(),
            ]
        )
        self._touch()

    def _touch(self) -> None:
        """The change hook: every change reaches the Web UI and the coordinator."""
        self._status.updated_at = workflow.now()
        self._status.compensations = self._saga.records
        workflow.set_current_details(details_markdown(self._status))
        lifecycle.publish(self._snapshot())

    def _snapshot(self) -> SagaSnapshot:
        status = self._status
        # A failed forward step is a dead letter too: it waits for an operator.
        stuck = dead_letters(
            status.return_id,
            status.compensations,
            self._saga.policy.attempts_per_round,
            self._steps.failed_step,
        )
        return SagaSnapshot(
            order_id=status.return_id,
            status=status.status.value,
            step=status.current_step,
            at=workflow.now(),
            terminal=status.status.is_terminal,
            stuck=stuck,
            saga_type=workflow.info().workflow_type,
            retries=self._retries.taken,
        )

    def _key(self, step: str) -> str:
        return step_key(step, self._input.nonce)


def details_markdown(status: ReturnStatus) -> str:
    """The Web UI's "current details" of a return: state, step, order, refund and reason."""
    step = escape_markdown(status.current_step or "-")
    lines = [
        f"**{escape_markdown(status.status.value)}** · step {step}",
        f"return of {escape_markdown(status.order_id)}",
    ]
    if status.refund_cents is not None:
        lines.append(escape_markdown(f"refund {status.refund_cents / 100:.2f}"))
    if status.received:
        lines.append("parcel received")
    if status.failure_reason:
        lines.append(f"reason {escape_markdown(status.failure_reason.value)}")
    stuck = [c.name for c in status.compensations if c.status.needs_attention]
    if stuck:
        lines.append(f"compensations needing attention: {escape_markdown(', '.join(stuck))}")
    return "\n\n".join(lines)
