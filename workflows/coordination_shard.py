"""CoordinatorShardWorkflow: one shard of the coordinator's fan-in.

With `SAGAWORKS_COORDINATOR_SHARDS` above 1, each worker process reports (signal-with-
start) to the shard its identity hashes to, ID `<coordinator id>-shard-<n>`. A shard
merges what its members send and forwards one delta to the root at its own slot of a
common interval (`coordination_fanin.py`), so the root's `state` stays the one system-
wide view while no workflow takes more than a few signals a second. The shard also
publishes when each member should report (`ShardPace`, memo `pace`).

It starts the root if the root is missing (the first forward on a new system, or after
an operator terminated it), continues-as-new on its own carrying what it has not
forwarded yet, and ends once nobody has reported for a long while: the next report
starts it again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    # The root's input nests a Book; its field types resolve through the sandbox's
    # sys.modules, which holds only the modules imported here by name.
    import workflows.coordination_book  # noqa: F401
    from workflows.coordination_fanin import (
        MIN_FORWARD_S,
        ShardBuffer,
        ShardSlots,
        forward_interval_s,
        forward_phase_s,
        next_slot,
    )
    from workflows.coordination_models import ShardPace, WorkerReport
    from workflows.coordinator import (
        HOLD_SIGNAL,
        REPORT_SIGNAL,
        SHARD_SIGNAL,
        TASK_TIMEOUT,
        CoordinatorInput,
    )

PACE_MEMO = "pace"
START_ROOT_ACTIVITY = "start_coordinator"
# A member silent this long (or three of its intervals, if longer) leaves the schedule.
MEMBER_TTL = timedelta(seconds=60)
# A shard nobody reported to for this long ends; the next report starts it again.
IDLE_END = timedelta(minutes=30)


@dataclass
class ShardInput:
    root_id: str
    shard: int
    shards: int
    # How to start the root when it is missing: what a direct report would start it with.
    root: CoordinatorInput
    # The members' shortest report interval (settings.report_interval_s).
    report_interval_s: float = 1.0
    # As low as the root's, for the same reason (CoordinatorConfig.max_history_events).
    max_history_events: int = 1_000
    # Carried across continue-as-new.
    buffer: ShardBuffer = field(default_factory=ShardBuffer)
    # Each member's last report, in epoch seconds: a datetime field declared in a workflow
    # module would be the sandbox's proxy class, which the converter cannot read.
    members: dict[str, float] = field(default_factory=dict)
    slots: ShardSlots | None = None
    seq: int = 0
    last_forward_s: float | None = None
    run: int = 0
    # A hold the root asked for outlives this shard's own continue-as-new (epoch seconds).
    hold_until_s: float = 0.0


@dataclass
class StartCoordinatorInput:
    workflow_id: str
    task_queue: str
    input: CoordinatorInput


@dataclass
class StartedCoordinator:
    run_id: str | None


@dataclass
class ShardView:
    shard: int
    shards: int
    run: int
    forwards: int
    members: int
    pace: ShardPace
    forward_every_s: float
    pending_reports: int
    root_missing: bool


@workflow.defn
class CoordinatorShardWorkflow:
    @workflow.init
    def __init__(self, input: ShardInput) -> None:
        self._input = input
        # Starts a missing root with the newest configuration a member brought.
        self._root = input.root
        self._buffer = input.buffer
        self._members = input.members
        self._slots = input.slots or ShardSlots.for_interval(input.report_interval_s)
        self._seq = input.seq
        self._pace: ShardPace | None = None
        self._last_slot_s: float | None = None
        self._last_forward_s = input.last_forward_s
        self._root_missing = False
        self._last_report_at = workflow.now()
        self._idle = False
        # Epoch seconds until which the root asked for no forward (its continue-as-new).
        self._hold_until_s = input.hold_until_s
        self._holds = 0  # counts hold and release signals, to wake a wait for a slot

    @workflow.run
    async def run(self, input: ShardInput) -> None:
        every = forward_interval_s(input.shards)
        phase = forward_phase_s(input.shard, input.shards)
        self._publish_pace()
        self._watch = asyncio.create_task(self._watch_idle())
        while not self._history_too_long():
            await workflow.wait_condition(
                lambda: bool(self._buffer) or self._idle or self._history_too_long()
            )
            if self._idle and not self._buffer:
                await workflow.wait_condition(workflow.all_handlers_finished)
                return  # the next report starts this shard again
            if not self._buffer:
                continue  # woken to continue-as-new
            # At this shard's own phase of the interval, once per interval; and never
            # within a second of the last forward: one that ran late delays this one.
            now_s = workflow.now().timestamp()
            not_before = self._last_slot_s + every / 2 if self._last_slot_s is not None else 0
            slot = next_slot(now_s, every, phase, max(not_before, self._hold_until_s))
            at = max(slot, (self._last_forward_s or 0) + MIN_FORWARD_S)
            if at > now_s and await self._hold_changed_within(at - now_s):
                continue  # held or released while waiting: the slot after that
            if workflow.now().timestamp() < self._hold_until_s:
                continue
            self._last_slot_s = slot
            self._last_forward_s = workflow.now().timestamp()
            await self._forward()
            self._prune_members()
        # Signal handlers are synchronous; one that arrives with the command makes the
        # server retry the task, so nothing received is left behind.
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            ShardInput(
                root_id=input.root_id,
                shard=input.shard,
                shards=input.shards,
                root=self._root,
                report_interval_s=input.report_interval_s,
                max_history_events=input.max_history_events,
                buffer=self._buffer,
                members=self._members,
                slots=self._slots,
                seq=self._seq,
                last_forward_s=self._last_forward_s,
                run=input.run + 1,
                hold_until_s=self._hold_until_s,
            ),
            task_timeout=TASK_TIMEOUT,
        )

    @workflow.signal(name=REPORT_SIGNAL)
    def report(self, report: WorkerReport) -> None:
        now = workflow.now()
        self._last_report_at = now
        self._buffer.add(report, now)
        if report.config is not None and report.config.supersedes(self._root.config):
            self._root = replace(self._root, config=report.config)
        self._members[report.worker] = now.timestamp()
        if self._slots.join(report.worker, now.timestamp(), report.phase_s):
            self._publish_pace()

    @workflow.signal(name=HOLD_SIGNAL)
    def hold(self, until_s: float) -> None:
        """No forward until `until_s` (epoch seconds); 0 releases at once."""
        self._hold_until_s = until_s
        self._holds += 1

    async def _hold_changed_within(self, seconds: float) -> bool:
        holds = self._holds
        try:
            await workflow.wait_condition(lambda: self._holds != holds, timeout=seconds)
        except TimeoutError:
            return False
        return True

    @workflow.query
    def view(self) -> ShardView:
        return ShardView(
            shard=self._input.shard,
            shards=self._input.shards,
            run=self._input.run,
            forwards=self._seq,
            members=len(self._members),
            pace=self._pace or ShardPace(self._input.report_interval_s),
            forward_every_s=forward_interval_s(self._input.shards),
            pending_reports=sum(w.reports for w in self._buffer.workers.values()),
            root_missing=self._root_missing,
        )

    async def _watch_idle(self) -> None:
        # One timer per IDLE_END, not one per forward.
        while True:
            await workflow.sleep(IDLE_END)
            if workflow.now() - self._last_report_at >= IDLE_END and not self._buffer:
                self._idle = True
                return

    async def _forward(self) -> None:
        delta = self._buffer.take(self._input.shard, self._seq + 1)
        root = workflow.get_external_workflow_handle(self._input.root_id)
        try:
            await root.signal(SHARD_SIGNAL, delta)
        except FailureError as err:
            # Not running (never started, or terminated): keep the delta, start the root,
            # and forward at the next slot.
            self._buffer.restore(delta)
            self._root_missing = True
            workflow.logger.warning("root %s not signalled: %s", self._input.root_id, err)
            await self._start_root()
            return
        self._root_missing = False
        self._seq += 1

    async def _start_root(self) -> None:
        try:
            await workflow.execute_activity(
                START_ROOT_ACTIVITY,
                StartCoordinatorInput(self._input.root_id, workflow.info().task_queue, self._root),
                result_type=StartedCoordinator,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as err:
            workflow.logger.warning("could not start root %s: %s", self._input.root_id, err)

    def _prune_members(self) -> None:
        interval = self._pace.interval_s if self._pace else self._input.report_interval_s
        ttl = max(MEMBER_TTL, timedelta(seconds=3 * interval))
        since = (workflow.now() - ttl).timestamp()
        gone = [worker for worker, seen in self._members.items() if seen < since]
        for worker in gone:
            del self._members[worker]
        if self._slots.leave(gone, workflow.now().timestamp()):
            self._publish_pace()

    def _publish_pace(self) -> None:
        pace = self._slots.pace(workflow.now().timestamp())
        if pace == self._pace:
            return
        self._pace = pace
        workflow.upsert_memo({PACE_MEMO: pace})
        workflow.set_current_details(
            f"### coordinator shard {self._input.shard} of {self._input.shards}\n"
            f"{len(self._members)} worker processes, each reporting every "
            f"{pace.interval_s:g}s; forwarding to `{self._input.root_id}` every "
            f"{forward_interval_s(self._input.shards):g}s"
        )

    def _history_too_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self._input.max_history_events
        )
