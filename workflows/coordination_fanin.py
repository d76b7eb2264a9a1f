"""The sharded fan-in's arithmetic: pure and deterministic, shared by workflows and workers.

Temporal advises about 5 signals a second into one workflow. With many worker processes,
reports go to shard workflows (`workflows/coordination_shard.py`), which merge them and
forward one delta at a time to the root. Two schedules keep every workflow under the limit
in every single second, not just on average:

- each shard forwards at its own phase of a common interval, so the root receives
  `ROOT_SIGNALS_PER_S` signals a second, evenly spaced, whatever the shard count;
- each shard gives each of its members a slot of a schedule of SHARD_SIGNALS_PER_S
  slots a second (`ShardSlots`): hashing places workers unevenly, and reports sent at
  random moments bunch, either of which would put some seconds over the limit. It
  publishes the schedule in its memo; workers read it with `describe`, which the server
  answers alone. A shard of up to 2 processes has them report every second; as its
  processes double, so does their interval (2, 4, 8, 16 s: README, "Sharding the fan-in").
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from workflows.coordination_models import (
    LATENCY_BOUNDS_MS,
    CoordinatorConfig,
    SagaSnapshot,
    ServiceSample,
    ShardDelta,
    ShardPace,
    WorkerDelta,
    WorkerReport,
)

T = TypeVar("T")

# Below Temporal's 5 a second, with room for a late timer, a slow network, a newcomer.
ROOT_SIGNALS_PER_S = 3.0
SHARD_SIGNALS_PER_S = 3.0
SLOT_S = 1 / SHARD_SIGNALS_PER_S
# A newcomer's first report: at least this far ahead (time to sleep to it), in one of the
# next few free slots.
NEWCOMER_LEAD_S = 0.5
NEWCOMER_CHOICES = 8
# A shard forwards at most once a second, however few shards there are: its slots come
# at least FORWARD_FLOOR_S apart, and a forward that ran late delays the next one rather
# than let it come within MIN_FORWARD_S of it.
MIN_FORWARD_S = 1.0
FORWARD_FLOOR_S = 1.25


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def shard_for(identity: str, shards: int) -> int:
    """The shard a worker reports to: stable across processes and restarts (not `hash()`)."""
    return int.from_bytes(_digest(identity)[:8], "big") % shards


def shard_workflow_id(root_id: str, shard: int) -> str:
    return f"{root_id}-shard-{shard}"


def member_key(worker: str) -> str:
    """A worker's name in a shard's memo: short, and naming no host or process."""
    return _digest(worker)[:6].hex()


def forward_interval_s(shards: int) -> float:
    """How often each shard forwards: the root then receives ROOT_SIGNALS_PER_S a second."""
    return max(FORWARD_FLOOR_S, shards / ROOT_SIGNALS_PER_S)


def forward_phase_s(shard: int, shards: int) -> float:
    """Shard n forwards n/shards of the way into each interval, so forwards never bunch."""
    return forward_interval_s(shards) * shard / shards


def next_slot(now_s: float, interval_s: float, phase_s: float, not_before_s: float) -> float:
    """The first moment at or after `not_before_s` that is `phase_s` into an interval."""
    start = max(now_s, not_before_s)
    return phase_s + interval_s * math.ceil((start - phase_s) / interval_s - 1e-9)


@dataclass
class ShardSlots:
    """Which slot of its shard's schedule each member reports in; carried across runs.

    The schedule is `count` slots of SLOT_S seconds, one member each, so a shard takes at
    most SHARD_SIGNALS_PER_S signals in any second however its members were placed. A
    member keeps its slot while it reports. A newcomer sends its first report in a free
    slot of its choosing (`next_report_at`) and names it in the report (`phase_s`); the
    shard then gives it that slot if it is still free. Before the last few slots go, the
    count doubles: each member's times on the doubled schedule are every other one of its
    old times, so members who have not read the new schedule yet collide with nobody; the
    new slots over a taken one are offered once those members have (`settling_until_s`).
    """

    base_count: int = 3
    count: int = 3
    slots: dict[str, int] = field(default_factory=dict)
    settling_until_s: float = 0.0

    @classmethod
    def for_interval(cls, base_interval_s: float) -> ShardSlots:
        base = max(1, round(base_interval_s / SLOT_S))
        return cls(base_count=base, count=base)

    def join(self, worker: str, now_s: float, phase_s: float | None = None) -> bool:
        """Give `worker` a slot, the one it reported in if free; False if it had one."""
        if worker in self.slots:
            return False
        free = self._free(now_s)
        wanted = None if phase_s is None else round(phase_s / SLOT_S)
        self.slots[worker] = wanted if wanted in free else choose_free(worker, free)
        if self.count - len(self.slots) <= self.count // 8:
            self.settling_until_s = now_s + self.count * SLOT_S + 1.0  # one old interval
            self.count *= 2
        return True

    def leave(self, workers: Iterable[str], now_s: float) -> bool:
        gone = [worker for worker in workers if self.slots.pop(worker, None) is not None]
        # Halve once a quarter full: those in the upper half move down (a move may
        # collide for one interval; it happens only when the shard shrinks fourfold).
        while self.count > self.base_count and len(self.slots) <= self.count // 4:
            self.count //= 2
            for worker in [w for w, slot in self.slots.items() if slot >= self.count]:
                del self.slots[worker]
                self.slots[worker] = choose_free(worker, self._free(now_s))
        return bool(gone)

    def pace(self, now_s: float) -> ShardPace:
        return ShardPace(
            interval_s=round(self.count * SLOT_S, 3),
            phases={member_key(w): round(slot * SLOT_S, 3) for w, slot in self.slots.items()},
            free_phases=[round(slot * SLOT_S, 3) for slot in self._free(now_s)],
        )

    def _free(self, now_s: float) -> list[int]:
        taken = set(self.slots.values())
        free = [slot for slot in range(self.count) if slot not in taken]
        if now_s >= self.settling_until_s:
            return free
        half = self.count // 2
        settled = [slot for slot in free if slot < half or slot - half not in taken]
        return settled or free


def choose_free(worker: str, free: list[T]) -> T:
    """A pick among free slots by the worker's hash: the same on the shard and the worker."""
    return free[int.from_bytes(_digest(worker)[10:14], "big") % len(free)]


def fallback_phase_s(worker: str, interval_s: float) -> float:
    """Where a process reports while it cannot read its shard's schedule: its own hash."""
    return interval_s * int.from_bytes(_digest(worker)[6:10], "big") / 2**32


def next_report_at(
    pace: ShardPace | None,
    worker: str,
    base_interval_s: float,
    now_s: float,
    sent_at_s: float | None,
) -> tuple[float, float]:
    """When a member sends its next report (epoch seconds), and at which phase.

    Never twice within a second, nor within half an interval: a schedule that just
    changed moves this member's next report, not its last one. A member the schedule
    does not list yet picks, by its hash, one of the next NEWCOMER_CHOICES times a free
    slot comes round: soon, so the slot is taken before the schedule others read goes
    stale, and spread, so newcomers starting together do not pick the same one (with few
    slots free, the choices reach into later intervals).
    """
    interval = base_interval_s if pace is None else pace.interval_s
    not_before = now_s if sent_at_s is None else sent_at_s + max(1.0, interval / 2)
    listed = None if pace is None else pace.phases.get(member_key(worker))
    if listed is not None:
        return next_slot(now_s, interval, listed, not_before), listed
    if pace is None or not pace.free_phases:
        phase = fallback_phase_s(worker, interval)
        return next_slot(now_s, interval, phase, not_before), phase
    rounds = math.ceil(NEWCOMER_CHOICES / len(pace.free_phases))
    coming = sorted(
        (next_slot(now_s, interval, phase, not_before + NEWCOMER_LEAD_S) + k * interval, phase)
        for phase in pace.free_phases
        for k in range(rounds)
    )
    return choose_free(worker, coming[:NEWCOMER_CHOICES])


@dataclass
class ShardBuffer:
    """What a shard received since its last forward, merged; carried across continue-as-new."""

    workers: dict[str, WorkerDelta] = field(default_factory=dict)
    services: dict[str, ServiceSample] = field(default_factory=dict)
    sagas: dict[str, SagaSnapshot] = field(default_factory=dict)
    # The newest configuration a member brought, for the root (`CoordinatorConfig.supersedes`).
    config: CoordinatorConfig | None = None

    def __bool__(self) -> bool:
        return bool(self.workers or self.services or self.sagas)

    def add(self, report: WorkerReport, now: datetime) -> None:
        seen = self.workers.get(report.worker)
        if seen is None:
            seen = self.workers[report.worker] = WorkerDelta(report.worker, 0, now)
        seen.reports += 1
        seen.last_report_at = now
        for sample in report.services:
            seen.in_flight[sample.service] = sample.in_flight
            _add_sample(self.services, sample)
        for snapshot in report.sagas:
            _keep_latest(self.sagas, snapshot)
        self._keep_newest(report.config)

    def _keep_newest(self, config: CoordinatorConfig | None) -> None:
        if config is not None and config.supersedes(self.config):
            self.config = config

    def take(self, shard: int, seq: int) -> ShardDelta:
        """The merged delta, leaving the buffer empty."""
        delta = ShardDelta(
            shard=shard,
            seq=seq,
            workers=list(self.workers.values()),
            services=list(self.services.values()),
            sagas=list(self.sagas.values()),
            config=self.config,
        )
        self.workers, self.services, self.sagas, self.config = {}, {}, {}, None
        return delta

    def restore(self, delta: ShardDelta) -> None:
        """Put back a delta the root did not take, under anything received since."""
        for old in delta.workers:
            seen = self.workers.get(old.worker)
            if seen is None:
                self.workers[old.worker] = old
                continue
            seen.reports += old.reports
            seen.in_flight = {**old.in_flight, **seen.in_flight}
        for sample in delta.services:
            _add_sample(self.services, sample, older=True)
        for snapshot in delta.sagas:
            _keep_latest(self.sagas, snapshot)
        self._keep_newest(delta.config)


def _add_sample(
    into: dict[str, ServiceSample], sample: ServiceSample, *, older: bool = False
) -> None:
    total = into.get(sample.service)
    if total is None:
        total = into[sample.service] = ServiceSample(sample.service)
    total.calls += sample.calls
    total.errors += sample.errors
    total.rejected += sample.rejected
    total.latency_buckets = [
        a + b
        for a, b in zip(
            total.latency_buckets or [0] * len(LATENCY_BOUNDS_MS),
            sample.latency_buckets,
            strict=True,
        )
    ]
    if older:
        total.last_error = total.last_error or sample.last_error
    else:
        total.last_error = sample.last_error or total.last_error


def _keep_latest(into: dict[str, SagaSnapshot], snapshot: SagaSnapshot) -> None:
    known = into.get(snapshot.order_id)
    if known is None or snapshot.at >= known.at:
        into[snapshot.order_id] = snapshot
