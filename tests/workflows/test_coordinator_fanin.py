"""The sharded fan-in's arithmetic (workflows/coordination_fanin.py), in plain Python.

The schedules are what keeps every workflow under Temporal's ~5 signals a second in each
single second; these tests replay them over simulated minutes and count per second.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.stack import REPO_ROOT
from workflows.coordination_fanin import (
    MIN_FORWARD_S,
    ROOT_SIGNALS_PER_S,
    SHARD_SIGNALS_PER_S,
    ShardBuffer,
    ShardSlots,
    forward_interval_s,
    forward_phase_s,
    member_key,
    next_report_at,
    next_slot,
    shard_for,
)
from workflows.coordination_models import (
    LATENCY_BOUNDS_MS,
    CoordinatorConfig,
    SagaSnapshot,
    ServiceSample,
    ShardPace,
    WorkerReport,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
IDENTITIES = [f"payments {pid}@host-{pid % 7}" for pid in range(1000, 1400)]


def _busiest_second(times: list[float]) -> int:
    return max(Counter(math.floor(t) for t in times).values())


def test_shard_for_is_stable_across_processes_and_spreads() -> None:
    # Python's hash() of a str changes with every process (PYTHONHASHSEED); the shard must
    # not, or a restarted API or worker would look for a worker in the wrong shard.
    mine = [shard_for(identity, 8) for identity in IDENTITIES]
    code = (
        "import sys; from workflows.coordination_fanin import shard_for;"
        f"print([shard_for(i, 8) for i in {IDENTITIES!r}])"
    )
    theirs = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert theirs.strip() == str(mine)
    counts = Counter(mine)
    assert set(counts) == set(range(8))
    assert all(count > 25 for count in counts.values()), counts  # 50 each on average
    assert {shard_for(identity, 1) for identity in IDENTITIES} == {0}


def _run(
    pace_of: dict[str, ShardPace], workers: list[str], start: float, end: float
) -> list[float]:
    """Every report `workers` send between `start` and `end` by the schedules given."""
    sends = []
    for worker in workers:
        at, _ = next_report_at(pace_of[worker], worker, 1.0, start, None)
        while at < end:
            sends.append(at)
            at, _ = next_report_at(pace_of[worker], worker, 1.0, at, at)
    return sends


def _filled(count: int, now: float = 0.0) -> ShardSlots:
    slots = ShardSlots.for_interval(1.0)
    for worker in IDENTITIES[:count]:
        slots.join(worker, now)
    return slots


@pytest.mark.parametrize("members", [1, 3, 4, 7, 20, 25, 33, 60])
def test_a_shards_members_stay_under_the_limit_every_second(members: int) -> None:
    workers = IDENTITIES[:members]
    slots = _filled(members)
    pace = slots.pace(now_s=1e12)
    assert pace.interval_s >= max(1.0, members / SHARD_SIGNALS_PER_S)
    assert set(pace.phases) == {member_key(w) for w in workers}  # hashed names only
    assert len(set(slots.slots.values())) == members  # a slot each
    start = 1_700_000_000.0
    sends = _run(dict.fromkeys(workers, pace), workers, start, start + 600)
    assert len(sends) >= members * 600 / pace.interval_s - members
    # One more than the rate only where a slot falls on a second's very boundary.
    assert _busiest_second(sends) <= math.ceil(SHARD_SIGNALS_PER_S) + 1


def rolling_start(processes: int, shards: int, over_s: float) -> dict[int, list[float]]:
    """Report times per shard: processes starting one after another, run as the agents
    run (each reads its shard's schedule after each report, and before its first) against
    shards that list each newcomer as its first report arrives."""
    start = 1_700_000_000.0
    workers = [f"{('inventory', 'orders')[i % 2]} {30_000 + i}@host-{i}" for i in range(processes)]
    slots = {n: ShardSlots.for_interval(1.0) for n in range(shards)}
    queue: list[tuple[float, str, float | None]] = [
        (start + i * over_s / processes, w, None) for i, w in enumerate(workers)
    ]
    sends: dict[int, list[float]] = {n: [] for n in range(shards)}
    started: set[str] = set()
    while queue:
        queue.sort(key=lambda item: item[0])
        at, worker, phase = queue.pop(0)
        if at > start + over_s + 180:
            break
        shard = shard_for(worker, shards)
        if worker not in started:  # as the agent: a slot of the shard's schedule first
            started.add(worker)
            pace = slots[shard].pace(at) if slots[shard].slots else None
            first, phase = next_report_at(pace, worker, 1.0, at, None)
            if pace is not None:
                queue.append((first, worker, phase))
                continue
        sends[shard].append(at)
        slots[shard].join(worker, at, phase)
        following, phase = next_report_at(slots[shard].pace(at), worker, 1.0, at, at)
        queue.append((following, worker, phase))
    return sends


@pytest.mark.parametrize(
    ("processes", "shards", "over_s"), [(40, 2, 60), (100, 4, 60), (100, 6, 60), (200, 8, 90)]
)
def test_a_rolling_start_stays_under_the_limit(processes: int, shards: int, over_s: int) -> None:
    # Up to two dozen processes a shard (the README's sizing), started over a minute or so,
    # as the bench starts its reporters: newcomers' first reports may share a slot now and
    # then, never enough to pass 5 in a second; once all are listed, at most the rate.
    sends = rolling_start(processes, shards, over_s)
    for times in sends.values():
        assert _busiest_second(times) <= 5
        settled = [t for t in times if t > min(times) + over_s + 60]
        assert _busiest_second(settled) <= math.ceil(SHARD_SIGNALS_PER_S)


def test_doubling_keeps_each_member_on_every_other_one_of_its_old_times() -> None:
    slots = _filled(10)
    before = slots.pace(0.0)
    while slots.pace(0.0).interval_s == before.interval_s:
        slots.join(IDENTITIES[len(slots.slots)], 0.0)
    after = slots.pace(0.0)
    assert after.interval_s == 2 * before.interval_s
    start = 1_700_000_000.0
    for worker in IDENTITIES[:10]:
        old = set(_run({worker: before}, [worker], start, start + 300))
        new = set(_run({worker: after}, [worker], start, start + 300))
        assert new <= old and len(new) >= len(old) // 2 - 1
    # Until the members have read it, the new slots over a taken one are not offered.
    taken = set(slots.slots.values())
    half = slots.count // 2
    offered = {round(phase * SHARD_SIGNALS_PER_S) for phase in after.free_phases}
    assert not {slot for slot in offered if slot >= half and slot - half in taken}
    later = slots.pace(slots.settling_until_s)
    assert len(later.free_phases) > len(after.free_phases)


def test_a_newcomer_is_given_the_free_slot_it_reported_in() -> None:
    slots = _filled(9)
    pace = slots.pace(0.0)
    newcomer = IDENTITIES[50]
    at, phase = next_report_at(pace, newcomer, 1.0, 1_700_000_000.0, None)
    assert phase in pace.free_phases
    assert at - 1_700_000_000.0 < pace.interval_s + 5
    slots.join(newcomer, at, phase)
    assert slots.pace(at).phases[member_key(newcomer)] == phase
    # A slot taken meanwhile by another newcomer: it is given another one.
    other = IDENTITIES[51]
    slots.join(other, at, phase)
    assert slots.slots[other] != slots.slots[newcomer]


def test_leaving_frees_slots_and_a_quarter_full_schedule_halves() -> None:
    slots = _filled(40)
    big = slots.pace(0.0).interval_s
    assert slots.leave(IDENTITIES[:30], 0.0)
    assert not slots.leave(IDENTITIES[:30], 0.0)  # gone already
    assert slots.pace(0.0).interval_s < big  # a quarter full or less: halved
    kept = slots.slots
    assert set(kept) == set(IDENTITIES[30:40])
    assert len(set(kept.values())) == 10 and max(kept.values()) < slots.count
    assert slots.leave(IDENTITIES, 0.0)
    assert slots.pace(0.0).interval_s == 1.0  # back to the base


def test_no_member_means_no_phase_and_the_base_interval_is_a_floor() -> None:
    assert ShardSlots.for_interval(1.0).pace(0.0).interval_s == 1.0
    assert ShardSlots.for_interval(1.0).pace(0.0).phases == {}
    slots = ShardSlots.for_interval(5.0)
    slots.join(IDENTITIES[0], 0.0)
    assert slots.pace(0.0).interval_s == 5.0


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 6, 8, 16, 32])
def test_forwards_reach_the_root_evenly_at_most_once_a_second_each(shards: int) -> None:
    every = forward_interval_s(shards)
    assert every >= MIN_FORWARD_S
    start = 1_700_000_000.0
    arrivals = []
    for shard in range(shards):
        phase = forward_phase_s(shard, shards)
        at, last = next_slot(start, every, phase, start), None
        while at < start + 300:
            if last is not None:
                assert at - last >= MIN_FORWARD_S - 1e-6
            arrivals.append(at)
            last = at
            at = next_slot(at, every, phase, at + every / 2)
    # Evenly spaced at ROOT_SIGNALS_PER_S: one more only where a slot falls on a second's
    # very boundary, still under Temporal's 5.
    assert _busiest_second(arrivals) <= min(math.ceil(ROOT_SIGNALS_PER_S) + 1, 4)


def test_next_slot_is_the_first_phase_at_or_after_the_bound() -> None:
    assert next_slot(100.2, 2.0, 0.5, 0) == 100.5
    assert next_slot(100.5, 2.0, 0.5, 0) == 100.5
    assert next_slot(100.6, 2.0, 0.5, 0) == 102.5
    assert next_slot(100.0, 2.0, 0.5, 101.0) == 102.5


def _sample(service: str, calls: int, errors: int, slow: int, in_flight: int) -> ServiceSample:
    buckets = [0] * len(LATENCY_BOUNDS_MS)
    buckets[2], buckets[6] = calls - slow, slow
    return ServiceSample(service, calls, errors, 0, buckets, in_flight, "boom" if errors else None)


def test_the_buffer_merges_reports_and_puts_back_what_was_not_taken() -> None:
    buffer = ShardBuffer()
    assert not buffer
    pending = SagaSnapshot("o-1", "PENDING", "reserve_stock", T0)
    done = SagaSnapshot("o-1", "COMPLETED", None, T0 + timedelta(seconds=1), terminal=True)
    buffer.add(WorkerReport("w1", [_sample("payments", 4, 1, 1, 2)], [done]), T0)
    buffer.add(WorkerReport("w2", [_sample("payments", 6, 0, 0, 5)], [pending]), T0)
    buffer.add(WorkerReport("w1", [_sample("payments", 1, 0, 0, 1)]), T0 + timedelta(seconds=2))
    delta = buffer.take(shard=3, seq=7)
    assert not buffer  # taken: empty until the next report
    assert (delta.shard, delta.seq) == (3, 7)
    workers = {w.worker: w for w in delta.workers}
    assert {w: (s.reports, s.in_flight) for w, s in workers.items()} == {
        "w1": (2, {"payments": 1}),  # its latest count, not a sum
        "w2": (1, {"payments": 5}),
    }
    assert workers["w1"].last_report_at == T0 + timedelta(seconds=2)
    [payments] = delta.services
    assert (payments.calls, payments.errors, payments.last_error) == (11, 1, "boom")
    assert sum(payments.latency_buckets) == 11 and payments.latency_buckets[6] == 1
    # Two workers reported the same saga out of order: the later snapshot is kept.
    assert [(s.order_id, s.status) for s in delta.sagas] == [("o-1", "COMPLETED")]

    # The root was not there: the delta goes back under what arrived meanwhile.
    buffer.add(WorkerReport("w1", [_sample("payments", 2, 0, 0, 0)]), T0 + timedelta(seconds=3))
    buffer.restore(delta)
    again = buffer.take(shard=3, seq=8)
    workers = {w.worker: w for w in again.workers}
    assert workers["w1"].reports == 3 and workers["w1"].in_flight == {"payments": 0}
    assert workers["w1"].last_report_at == T0 + timedelta(seconds=3)
    assert workers["w2"].reports == 1
    assert again.services[0].calls == 13
    assert [s.status for s in again.sagas] == ["COMPLETED"]


def test_the_buffer_forwards_the_newest_configuration_its_members_brought() -> None:
    def config(minutes: int) -> CoordinatorConfig:
        return CoordinatorConfig([f"s{minutes}"], issued_at=T0 + timedelta(minutes=minutes))

    buffer = ShardBuffer()
    buffer.add(WorkerReport("w1", config=config(5)), T0)
    buffer.add(WorkerReport("w2", config=config(1)), T0)  # started before w1: older
    buffer.add(WorkerReport("w3"), T0)
    delta = buffer.take(shard=0, seq=1)
    assert delta.config == config(5)
    assert buffer.take(shard=0, seq=2).config is None  # forwarded once
    # Not taken by the root: put back, unless something newer arrived meanwhile.
    buffer.add(WorkerReport("w4", config=config(9)), T0)
    buffer.restore(delta)
    assert buffer.take(shard=0, seq=2).config == config(9)
    buffer.restore(delta)
    assert buffer.take(shard=0, seq=3).config == config(5)
