"""A toy saga workflow for tests/workflows/test_saga.py: Saga alone, no business logic.

Its own module because the workflow sandbox re-imports the module a workflow lives in.
Activities are called by name: the test module defines them and records what they did.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from workflows.saga import CompensationPolicy, CompensationRecord, Saga

STEP_ACTIVITY = "toy_step"
UNDO_ACTIVITY = "toy_undo"


@dataclass(frozen=True)
class ToySagaInput:
    steps: list[str]
    task_queue: str
    parallel: bool = False
    attempts_per_round: int = 1
    pause_between_rounds_s: int = 3600
    max_rounds: int | None = None


@dataclass
class ToySagaResult:
    failed_step: str | None
    compensations: list[CompensationRecord]


@workflow.defn
class ToySagaWorkflow:
    def __init__(self) -> None:
        self._saga = Saga()

    @workflow.query
    def compensations(self) -> list[CompensationRecord]:
        return self._saga.records

    @workflow.run
    async def run(self, input: ToySagaInput) -> ToySagaResult:
        self._saga = Saga(
            parallel=input.parallel,
            policy=CompensationPolicy(
                attempts_per_round=input.attempts_per_round,
                initial_interval=timedelta(seconds=1),
                pause_between_rounds=timedelta(seconds=input.pause_between_rounds_s),
                max_rounds=input.max_rounds,
            ),
        )
        current: str | None = None
        try:
            for name in input.steps:
                current = name
                await self._saga.step(
                    name,
                    action=partial(_do, input, name),
                    compensation=partial(_undo, input, name),
                )
        except (ActivityError, asyncio.CancelledError) as err:
            await self._saga.compensate()
            # Cancelled while awaiting an activity surfaces as ActivityError(CancelledError);
            # re-raising either form makes Temporal report the workflow cancelled.
            if is_cancelled_exception(err):
                raise
            return ToySagaResult(failed_step=current, compensations=self._saga.records)
        self._saga.complete()
        return ToySagaResult(failed_step=None, compensations=self._saga.records)


def _do(input: ToySagaInput, name: str) -> Any:
    return workflow.execute_activity(
        STEP_ACTIVITY,
        name,
        task_queue=input.task_queue,
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=RetryPolicy(maximum_attempts=1),
    )


def _undo(input: ToySagaInput, name: str, retry: RetryPolicy) -> Any:
    return workflow.execute_activity(
        UNDO_ACTIVITY,
        name,
        task_queue=input.task_queue,
        start_to_close_timeout=timedelta(seconds=60),
        retry_policy=retry,
    )
