"""OrderWorkflow: the checkout saga (reserve stock, authorize, approve, ship, capture)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import lifecycle
    from workflows.compensations import undo_activities
    from workflows.coordination_models import SagaSnapshot
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
        HoldForApprovalInput,
        HoldForApprovalResult,
        OrderInput,
        OrderState,
        OrderStatus,
        ReleaseApprovalHoldInput,
        ReleaseApprovalHoldResult,
        ReleaseStockInput,
        ReserveStockInput,
        ReserveStockResult,
        RetryCompensationsRequest,
        SendConfirmationInput,
        SendConfirmationResult,
        VoidPaymentInput,
    )
    from workflows.saga import Saga
    from workflows.search_attributes import CUSTOMER_ID, FAILURE_REASON, ORDER_STATUS
    from workflows.steps import (
        CUSTOMER_CANCELLED,
        IGNORED_CANCEL_NOTE,
        OPTIONAL_RETRY,
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

# Importable from here as before the toolkit existed (api, tests, bench import them).
__all__ = [
    "CUSTOMER_ID",
    "FAILURE_REASON",
    "IGNORED_CANCEL_NOTE",
    "ORDER_STATUS",
    "OrderWorkflow",
    "SagaAborted",
    "details_markdown",
    "escape_markdown",
]

BUSINESS_FAILURES = {
    BusinessError.OUT_OF_STOCK: FailureReason.OUT_OF_STOCK,
    BusinessError.PAYMENT_DECLINED: FailureReason.PAYMENT_DECLINED,
    BusinessError.UNDELIVERABLE: FailureReason.UNDELIVERABLE,
    BusinessError.INVALID_INPUT: FailureReason.INVALID_INPUT,
    BusinessError.HOLD_LIMIT: FailureReason.HOLD_LIMIT_REACHED,
}

# What the order status says about a failure, by its code (the ApplicationError type):
# messages written here, never the exception's own text, which can carry SQL parameters,
# card tokens or addresses. Unknown codes get a generic message (workflows/failures.py).
SAFE_MESSAGES = {
    BusinessError.OUT_OF_STOCK: "not enough stock for this order",
    BusinessError.PAYMENT_DECLINED: "the card was declined",
    BusinessError.UNDELIVERABLE: "no carrier delivers to this address",
    BusinessError.INVALID_INPUT: "the service refused a value of this order",
    "GatewayUnavailable": "the payment gateway is unavailable",
    "NotCapturable": "the authorization can no longer be captured",
    "IdempotencyKeyReused": "a step key was used before for another operation",
    "CircuitOpen": "the service's circuit is open",
    "InjectedFault": "injected fault (chaos drill)",
    BusinessError.HOLD_LIMIT: "this customer already has the most waiting for approval at once",
}

# Step names: also the suffix of each step's idempotency key, so never rename one.
RESERVE, AUTHORIZE, HOLD, APPROVAL, END_HOLD, SHIP, CAPTURE, NOTIFY = (
    "reserve_stock",
    "authorize_payment",
    "hold_for_approval",
    "await_approval",
    "release_approval_hold",
    "create_shipment",
    "capture_payment",
    "send_confirmation",
)

# Each step's compensating activity, as declared once for every saga (metrics time these).
UNDO = undo_activities("OrderWorkflow")

# Sagas started before the confirmation step existed must replay without it (README,
# "Changing workflow code safely"). Remove once no such saga can still be running.
NOTIFY_PATCH = "send-confirmation-step"
# Sagas that ended FAILED before operators could retry compensations completed at once.
OPERATOR_RETRY_PATCH = "operator-retries-failed-compensations"
# Past the pivot (the shipment exists) a Temporal cancel request is recorded and ignored;
# before this patch it rolled everything back, refunding a shipped order.
PIVOT_PATCH = "no-cancel-past-the-pivot"
# Step keys carry the order's nonce: `<workflow_id>:<nonce>:<step>`. Sagas started with
# `<workflow_id>:<step>` keep those for their whole run, or their compensations would
# look for effects under keys nothing was recorded with.
NONCE_KEYS_PATCH = "step-keys-carry-order-nonce"
# Steps heartbeat (a killed worker's step is retried within seconds) and the steps before
# the pivot have a retry ceiling.
STEP_LIMITS_PATCH = "step-heartbeat-and-retry-ceiling"
# Past the pivot a step that fails for good leaves the order FAILED and open until an
# operator's retry runs it again; before this patch it rolled the shipped order back.
FORWARD_ONLY_PATCH = "forward-step-failed-waits-for-operator"
# Waiting FAILED for an operator survives a Temporal cancel request (recorded, ignored);
# before this patch the cancel closed the workflow with its failed work left undone.
SURVIVE_CANCEL_PATCH = "operator-wait-survives-cancel"
# An approval signal counts only while the order waits for approval; before this patch
# one sent earlier decided the order in advance.
EARLY_SIGNAL_PATCH = "approval-signal-only-while-held"
# A hold for approval takes a slot in the payments service's hold ledger, serialized per
# customer; before this patch the cap was a visibility count that a burst could pass.
HOLD_LEDGER_PATCH = "approval-hold-ledger"


@workflow.defn
class OrderWorkflow:
    @workflow.init
    def __init__(self, input: OrderInput) -> None:
        self._input = input
        self._status = OrderStatus(order_id=input.order_id, customer_id=input.customer_id)
        self._decision: ApprovalDecision | None = None
        self._shipping_started = False
        self._saga = Saga(on_change=self._touch, messages=SAFE_MESSAGES)
        self._steps = Steps(
            self._status,
            self._saga,
            business_failures=BUSINESS_FAILURES,
            exhausted=FailureReason.STEP_EXHAUSTED,
            cancelled=FailureReason.CANCELLED_BY_CUSTOMER,
            messages=SAFE_MESSAGES,
            on_change=self._touch,
        )
        self._retries = OperatorRetries(
            self._steps, survive_cancel=lambda: workflow.patched(SURVIVE_CANCEL_PATCH)
        )
        # Decided once per run by `workflow.patched` (see the patch IDs above).
        self._nonce_keys = False

    @workflow.run
    async def run(self, input: OrderInput) -> OrderStatus:
        self._status.created_at = workflow.now()
        self._nonce_keys = input.nonce is not None and workflow.patched(NONCE_KEYS_PATCH)
        self._steps.limits = StepLimits(
            timeout_s=input.step_timeout_s,
            max_attempts=input.step_max_attempts,
            heartbeat_timeout_s=input.step_heartbeat_timeout_s,
            enabled=workflow.patched(STEP_LIMITS_PATCH),
        )
        workflow.upsert_search_attributes([CUSTOMER_ID.value_set(input.customer_id)])
        self._set_state(OrderState.PENDING)
        try:
            await self._checkout()
        except SagaAborted as abort:
            await self._roll_back(abort.reason)
            await self._await_operator_retries()
        except asyncio.CancelledError:
            # Temporal cancellation before the pivot: undo, then report it cancelled. Past
            # the pivot the steps swallow it (workflows/steps.py), so it never gets here.
            await self._roll_back(FailureReason.CANCELLED_BY_CUSTOMER)
            if self._saga.failed and workflow.patched(SURVIVE_CANCEL_PATCH):
                # A compensation failed for good: the cancel must not close the order
                # with it undone. It waits FAILED for an operator like any other.
                await self._await_operator_retries()
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
        await self._retries.request()
        return self._status

    @retry_compensations.validator
    def _validate_retry_compensations(self, request: RetryCompensationsRequest) -> None:
        self._validate_failed()
        if not self._saga.failed:
            raise ValueError("no compensation of this order failed; there is nothing to retry")

    @workflow.update
    async def retry(self, request: RetryCompensationsRequest) -> OrderStatus:
        """Run again whatever failed for good: a step past the pivot, or compensations."""
        workflow.logger.info("operator %s retries what failed", request.operator)
        await self._retries.request()
        return self._status

    @retry.validator
    def _validate_retry(self, request: RetryCompensationsRequest) -> None:
        self._validate_failed()
        if not self._saga.failed and self._steps.failed_step is None:
            raise ValueError("nothing of this order failed for good; there is nothing to retry")

    def _validate_failed(self) -> None:
        if self._status.status != OrderState.FAILED or self._retries.requested:
            state = self._status.status
            raise ValueError(
                "a retry of this order is already under way"
                if state == OrderState.FAILED
                else f"order is {state.value}; only a FAILED order can be retried"
            )

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
        # Signals cannot be refused, so an early, late or repeated one is logged and ignored:
        # one sent before the order is held must not decide it in advance.
        status = self._status.status
        held = status == OrderState.AWAITING_APPROVAL
        undecided = self._decision is None and not status.is_terminal
        if undecided and (held or not workflow.patched(EARLY_SIGNAL_PATCH)):
            self._decision = decision
            return
        workflow.logger.info("ignoring approval signal in state %s", status)

    # --- the saga ------------------------------------------------------------------------

    async def _checkout(self) -> None:
        input, queues, steps = self._input, self._input.task_queues, self._steps
        limits = steps.limits
        reservation = await steps.compensated(
            RESERVE,
            action=lambda: workflow.execute_activity(
                RESERVE,
                ReserveStockInput(self._key(RESERVE), input.order_id, input.items),
                result_type=ReserveStockResult,
                **limits.options(queues.inventory, limits.bounded_retry()),
            ),
            compensation=lambda retry: workflow.execute_activity(
                UNDO[RESERVE],
                ReleaseStockInput(self._undo_key(RESERVE), self._key(RESERVE), input.order_id),
                **limits.options(queues.inventory, retry),
            ),
        )
        self._status.total_cents = reservation.total_cents

        await steps.compensated(
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
                **limits.options(queues.payments, limits.bounded_retry()),
            ),
            compensation=lambda retry: workflow.execute_activity(
                UNDO[AUTHORIZE],
                VoidPaymentInput(self._undo_key(AUTHORIZE), self._key(AUTHORIZE), input.order_id),
                **limits.options(queues.payments, retry),
            ),
        )

        self._status.reservation_id = reservation.reservation_id
        if reservation.total_cents > input.approval_threshold_cents:
            if workflow.patched(HOLD_LEDGER_PATCH):
                await self._held_for_approval(reservation.total_cents)
            else:
                await self._await_approval()

        self._shipping_started = True
        shipment = await steps.compensated(
            SHIP,
            action=lambda: workflow.execute_activity(
                SHIP,
                CreateShipmentInput(
                    self._key(SHIP), input.order_id, input.shipping_address, input.items
                ),
                result_type=CreateShipmentResult,
                **limits.options(queues.shipping, limits.bounded_retry()),
            ),
            compensation=lambda retry: workflow.execute_activity(
                UNDO[SHIP],
                CancelShipmentInput(self._undo_key(SHIP), self._key(SHIP), input.order_id),
                **limits.options(queues.shipping, retry),
            ),
            # The shipment is the pivot: a cancel arriving as it is made is ignored too.
            pivot=lambda: workflow.patched(PIVOT_PATCH),
        )
        self._status.tracking_number = shipment.tracking_number
        # The pivot (ARCHITECTURE.md, "Saga rules", rule 5): the shipment exists, so from
        # here the saga only goes forward, retrying without a ceiling, and no cancel of any
        # kind refunds it.
        steps.past_pivot = steps.past_pivot or workflow.patched(PIVOT_PATCH)

        def capture() -> Awaitable[CapturePaymentResult]:
            return workflow.execute_activity(
                CAPTURE,
                CapturePaymentInput(self._key(CAPTURE), self._key(AUTHORIZE), input.order_id),
                result_type=CapturePaymentResult,
                **limits.options(queues.payments, STEP_RETRY),
            )

        if steps.past_pivot and workflow.patched(FORWARD_ONLY_PATCH):
            await steps.forward(
                CAPTURE,
                capture,
                self._retries,
                on_failed=self._forward_step_failed,
                on_retried=self._forward_step_retried,
            )
        else:
            await steps.run(CAPTURE, capture, forward_only=steps.past_pivot)
        if workflow.patched(NOTIFY_PATCH):
            await steps.optional(
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
                    start_to_close_timeout=timedelta(seconds=limits.timeout_s),
                    schedule_to_close_timeout=timedelta(seconds=input.notification_timeout_s),
                    retry_policy=OPTIONAL_RETRY,
                    **limits.heartbeat(),
                ),
            )
        self._status.current_step = None
        self._saga.complete()
        self._set_state(OrderState.COMPLETED)

    async def _held_for_approval(self, total_cents: int) -> None:
        """Take a slot in the customer's hold ledger, wait for a decision, free the slot.

        The ledger (payments) serializes a customer's holds, so a burst of parallel orders
        cannot pass the cap as it could a visibility count; an order beyond it rolls back
        with HOLD_LIMIT_REACHED. The slot is freed as soon as the order is decided, and by
        the compensation when it rolls back instead.
        """
        input, steps = self._input, self._steps
        limits = steps.limits
        hold_key = self._key(HOLD)
        await steps.compensated(
            HOLD,
            action=lambda: workflow.execute_activity(
                HOLD,
                HoldForApprovalInput(
                    hold_key,
                    input.order_id,
                    input.customer_id,
                    self._key(AUTHORIZE),
                    total_cents,
                    max_held_orders=input.max_held_orders,
                    max_held_cents=input.max_held_cents,
                ),
                result_type=HoldForApprovalResult,
                **limits.options(input.task_queues.payments, limits.bounded_retry()),
            ),
            compensation=lambda retry: workflow.execute_activity(
                UNDO[HOLD],
                ReleaseApprovalHoldInput(self._undo_key(HOLD), hold_key, input.order_id),
                result_type=ReleaseApprovalHoldResult,
                **limits.options(input.task_queues.payments, retry),
            ),
        )
        await self._await_approval()
        await steps.run(
            END_HOLD,
            lambda: workflow.execute_activity(
                END_HOLD,
                ReleaseApprovalHoldInput(self._key(END_HOLD), hold_key, input.order_id),
                result_type=ReleaseApprovalHoldResult,
                **limits.options(input.task_queues.payments, limits.bounded_retry()),
            ),
        )

    async def _await_approval(self) -> None:
        steps = self._steps
        record = steps.begin(APPROVAL)
        self._set_state(OrderState.AWAITING_APPROVAL)
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None or self._status.cancel_requested,
                timeout=timedelta(seconds=self._input.approval_timeout_s),
            )
        except TimeoutError as err:
            timed_out = SafeError("ApprovalTimeout", "no decision before the approval timeout")
            steps.end(record, StepStatus.FAILED, error=timed_out)
            raise SagaAborted(FailureReason.APPROVAL_TIMEOUT) from err
        except asyncio.CancelledError:
            steps.end(record, StepStatus.CANCELLED, error=WORKFLOW_CANCELLED)
            raise
        if self._status.cancel_requested:
            steps.end(record, StepStatus.CANCELLED, error=CUSTOMER_CANCELLED)
            raise SagaAborted(FailureReason.CANCELLED_BY_CUSTOMER)
        assert self._decision is not None
        if not self._decision.approved:
            rejected = SafeError("Rejected", "rejected by an operator")
            steps.end(record, StepStatus.FAILED, error=rejected)
            raise SagaAborted(FailureReason.REJECTED_BY_OPERATOR)
        steps.end(record, StepStatus.SUCCEEDED)
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
        `retry` (or `retry_compensations`) update runs it again; then the order can end
        COMPENSATED. A Temporal cancel meanwhile is recorded and ignored.
        """
        if not self._saga.failed or not workflow.patched(OPERATOR_RETRY_PATCH):
            return
        while self._saga.failed:
            await self._retries.wait(None)
            self._status.current_step = "compensating"
            self._set_state(OrderState.COMPENSATING)
            await self._saga.retry_failed()
            self._finish_roll_back(self._status.failure_reason)

    def _forward_step_failed(self, record: StepRecord) -> None:
        self._status.failure_reason = FailureReason.CAPTURE_FAILED
        self._set_state(OrderState.FAILED)

    def _forward_step_retried(self) -> None:
        self._status.failure_reason = None
        self._set_state(OrderState.PENDING)

    # --- bookkeeping ---------------------------------------------------------------------

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
        """The change hook: every change to the status reaches the Web UI and the coordinator."""
        self._status.updated_at = workflow.now()
        self._status.compensations = self._saga.records
        workflow.set_current_details(details_markdown(self._status))
        lifecycle.publish(self._snapshot())

    def _snapshot(self) -> SagaSnapshot:
        status = self._status
        return SagaSnapshot(
            order_id=status.order_id,
            status=status.status.value,
            step=status.current_step,
            at=workflow.now(),
            terminal=status.status.is_terminal,
            stuck=dead_letters(
                status.order_id,
                status.compensations,
                self._saga.policy.attempts_per_round,
                self._steps.failed_step,
            ),
            saga_type=workflow.info().workflow_type,
            retries=self._retries.taken,
        )

    def _key(self, step: str) -> str:
        return step_key(step, self._input.nonce if self._nonce_keys else None)

    def _undo_key(self, step: str) -> str:
        return undo_key(step, self._input.nonce if self._nonce_keys else None)


def details_markdown(status: OrderStatus) -> str:
    """The Web UI's "current details" of an order: its state, step, total and reason."""
    step = escape_markdown(status.current_step or "-")
    lines = [f"**{escape_markdown(status.status.value)}** · step {step}"]
    if status.total_cents is not None:
        lines.append(escape_markdown(f"total {status.total_cents / 100:.2f}"))
    if status.failure_reason:
        lines.append(f"reason {escape_markdown(status.failure_reason.value)}")
    if status.cancel_ignored:
        notes = {s.note for s in status.steps if s.note} or {IGNORED_CANCEL_NOTE}
        lines += [escape_markdown(note) for note in sorted(notes)]
    stuck = [c.name for c in status.compensations if c.status.needs_attention]
    if stuck:
        lines.append(f"compensations needing attention: {escape_markdown(', '.join(stuck))}")
    return "\n\n".join(lines)
