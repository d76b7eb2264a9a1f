"""The Saga helper, driven by a toy workflow whose activities only record what they did."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from tests.workflows.helpers import new_id, result_of, running_worker
from tests.workflows.toy_saga import (
    STEP_ACTIVITY,
    UNDO_ACTIVITY,
    ToySagaInput,
    ToySagaResult,
    ToySagaWorkflow,
)
from workflows.saga import CompensationRecord

BARRIER_TIMEOUT_S = 10.0


class Toy:
    """Activities for ToySagaWorkflow, scripted per test, that log every call in order."""

    def __init__(
        self,
        *,
        failing_steps: Iterable[str] = (),
        hanging_steps: Iterable[str] = (),
        broken_undos: Iterable[str] = (),
        undo_failures: dict[str, int] | None = None,
        undo_barrier: int = 0,
    ) -> None:
        self.failing_steps = set(failing_steps)
        self.hanging_steps = set(hanging_steps)
        self.broken_undos = set(broken_undos)  # fail non-retryably, every time
        self.undo_failures = undo_failures or {}  # fail retryably on the first n calls
        self.undo_barrier = undo_barrier  # undos wait until this many have started
        self.log: list[str] = []
        self.undo_calls: Counter[str] = Counter()
        self.started: dict[str, asyncio.Event] = {}
        self._undos_started = 0
        self._all_undos_started = asyncio.Event()

    def step_started(self, name: str) -> asyncio.Event:
        return self.started.setdefault(name, asyncio.Event())

    @activity.defn(name=STEP_ACTIVITY)
    async def step(self, name: str) -> str:
        self.log.append(f"do:{name}")
        self.step_started(name).set()
        if name in self.hanging_steps:
            await asyncio.Event().wait()  # until the worker shuts down and cancels us
        if name in self.failing_steps:
            raise ApplicationError(f"{name} failed", type="ToyFailure", non_retryable=True)
        return name

    @activity.defn(name=UNDO_ACTIVITY)
    async def undo(self, name: str) -> None:
        self.undo_calls[name] += 1
        self.log.append(f"undo-start:{name}")
        if name in self.broken_undos:
            raise ApplicationError(f"undo {name} broken", type="ToyBroken", non_retryable=True)
        if self.undo_calls[name] <= self.undo_failures.get(name, 0):
            raise ApplicationError(f"undo {name} unavailable", type="ToyUnavailable")
        if self.undo_barrier:
            self._undos_started += 1
            if self._undos_started >= self.undo_barrier:
                self._all_undos_started.set()
            try:
                await asyncio.wait_for(self._all_undos_started.wait(), BARRIER_TIMEOUT_S)
            except TimeoutError:
                raise ApplicationError(
                    f"undo {name}: the other undos never started alongside it",
                    type="NotParallel",
                    non_retryable=True,
                ) from None
        self.log.append(f"undo:{name}")

    @property
    def undone(self) -> list[str]:
        return [entry.split(":", 1)[1] for entry in self.log if entry.startswith("undo:")]

    @property
    def done(self) -> list[str]:
        return [entry.split(":", 1)[1] for entry in self.log if entry.startswith("do:")]


def statuses(records: list[CompensationRecord]) -> list[tuple[str, str]]:
    return [(r.name, r.status) for r in records]


async def start(
    env: WorkflowEnvironment, input: ToySagaInput
) -> WorkflowHandle[ToySagaWorkflow, ToySagaResult]:
    return await env.client.start_workflow(
        ToySagaWorkflow.run, input, id=new_id("toy-saga"), task_queue=input.task_queue
    )


async def run_toy(env: WorkflowEnvironment, toy: Toy, input: ToySagaInput) -> ToySagaResult:
    async with running_worker(
        env.client, input.task_queue, [toy.step, toy.undo], workflows=[ToySagaWorkflow]
    ):
        return await result_of(await start(env, input))


async def test_completed_saga_needs_no_compensation(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    toy = Toy()
    result = await run_toy(ts_env, toy, ToySagaInput(["a", "b"], task_queue))

    assert result.failed_step is None
    assert statuses(result.compensations) == [("a", "not_needed"), ("b", "not_needed")]
    assert toy.undone == []


async def test_compensations_run_in_reverse_order(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    toy = Toy(failing_steps={"d"})
    result = await run_toy(ts_env, toy, ToySagaInput(["a", "b", "c", "d", "e"], task_queue))

    assert result.failed_step == "d"
    assert toy.done == ["a", "b", "c", "d"]
    assert toy.undone == ["d", "c", "b", "a"]
    assert statuses(result.compensations) == [(n, "succeeded") for n in "abcd"]
    assert all(r.rounds == 1 for r in result.compensations)


async def test_compensation_registered_before_its_step_runs_when_the_step_raises(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    toy = Toy(failing_steps={"b"})
    result = await run_toy(ts_env, toy, ToySagaInput(["a", "b"], task_queue))

    assert result.failed_step == "b"
    # b may have committed before it failed, so its (idempotent) undo must run too.
    assert toy.undone == ["b", "a"]
    assert statuses(result.compensations) == [("a", "succeeded"), ("b", "succeeded")]


async def test_parallel_compensations_all_start_before_any_finishes(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    steps = ["a", "b", "c", "d"]
    toy = Toy(failing_steps={"d"}, undo_barrier=len(steps))
    result = await run_toy(ts_env, toy, ToySagaInput(steps, task_queue, parallel=True))

    # Each undo waits for all the others to start, so only concurrent undos can succeed.
    assert statuses(result.compensations) == [(n, "succeeded") for n in steps]
    assert sorted(toy.undone) == steps
    starts = [i for i, entry in enumerate(toy.log) if entry.startswith("undo-start:")]
    ends = [i for i, entry in enumerate(toy.log) if entry.startswith("undo:")]
    assert max(starts) < min(ends)


async def test_a_permanently_failing_compensation_does_not_stop_the_others(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    toy = Toy(failing_steps={"d"}, broken_undos={"b"})
    # max_rounds bounds the test should "failed" ever be mistaken for retryable "stuck".
    input = ToySagaInput(["a", "b", "c", "d"], task_queue, max_rounds=3)
    result = await run_toy(ts_env, toy, input)

    assert statuses(result.compensations) == [
        ("a", "succeeded"),
        ("b", "failed"),
        ("c", "succeeded"),
        ("d", "succeeded"),
    ]
    broken = result.compensations[1]
    assert (broken.error_code, broken.error) == (
        "ToyBroken",
        "ToyBroken: the service refused the request",
    )
    assert broken.finished_at is not None
    # Not retried in further rounds: a non-retryable failure is final.
    assert (broken.rounds, toy.undo_calls["b"]) == (1, 1)
    assert toy.undone == ["d", "c", "a"]


async def test_a_transiently_failing_compensation_is_stuck_then_succeeds_next_round(
    ts_env: WorkflowEnvironment, task_queue: str
) -> None:
    toy = Toy(failing_steps={"c"}, undo_failures={"b": 1})
    async with running_worker(
        ts_env.client, task_queue, [toy.step, toy.undo], workflows=[ToySagaWorkflow]
    ):
        input = ToySagaInput(
            ["a", "b", "c"], task_queue, attempts_per_round=1, pause_between_rounds_s=3600
        )
        handle = await start(ts_env, input)
        # Outside result() the test server does not skip time: the saga sits in its pause.
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            records = await handle.query(ToySagaWorkflow.compensations)
            if statuses(records) == [("a", "succeeded"), ("b", "stuck"), ("c", "succeeded")]:
                break
            assert asyncio.get_running_loop().time() < deadline, f"never stuck: {records}"
            await asyncio.sleep(0.05)
        stuck = records[1]
        assert stuck.rounds == 1
        assert (stuck.error_code, stuck.error) == (
            "ToyUnavailable",
            "ToyUnavailable: the call failed",
        )
        # The others were not held up by the stuck one.
        assert toy.undone == ["c", "a"]

        result = await result_of(handle)  # skips the hour-long pause

    assert statuses(result.compensations) == [(n, "succeeded") for n in "abc"]
    retried = result.compensations[1]
    assert (retried.rounds, retried.error, retried.error_code) == (2, None, None)
    assert toy.undo_calls == Counter({"a": 1, "b": 2, "c": 1})
    assert toy.undone == ["c", "a", "b"]


async def test_cancelled_workflow_runs_all_registered_compensations(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    # On the dev server: the test server leaks its time-skipping lock for an activity still
    # outstanding when a workflow closes (temporalio/sdk-java#1138), stalling later tests.
    toy = Toy(hanging_steps={"c"})
    async with running_worker(
        dev_env.client, task_queue, [toy.step, toy.undo], workflows=[ToySagaWorkflow]
    ):
        handle = await start(dev_env, ToySagaInput(["a", "b", "c", "d"], task_queue))
        await asyncio.wait_for(toy.step_started("c").wait(), 20)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(handle)
        records = await handle.query(ToySagaWorkflow.compensations)

    assert isinstance(failure.value.cause, CancelledError)
    assert toy.done == ["a", "b", "c"]
    assert toy.undone == ["c", "b", "a"]
    assert statuses(records) == [(n, "succeeded") for n in "abc"]
