"""Dataclasses of the Coordination State Layer (ARCHITECTURE.md): reports in, state out.

Pure data, shared by the coordinator workflow, the worker-side reporters and the API.
`CoordinationState` is the public, versioned view: bump `SCHEMA_VERSION` when a field
changes meaning or disappears (adding a field is compatible).
"""

# No `from __future__ import annotations` here: Temporal's converter resolves each
# dataclass's type hints on every decode, and string annotations cost it a compile each
# (a report or a shard's delta decoded three times slower, a coordinator's replay too).
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from workflows.saga import CompensationStatus

SCHEMA_VERSION = 1

# Upper bounds (ms) of the latency histogram buckets workers report; the last is open.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    float("inf"),
)


class CircuitPhase(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# --- load: which sagas load the system ---------------------------------------------------


@dataclass(frozen=True)
class Parked:
    """When a saga of one type waits for a person or a parcel instead of running steps."""

    statuses: frozenset[str] = frozenset()
    steps: frozenset[str] = frozenset()


# A saga FAILED for good waits for an operator's retry, whatever its type (DESIGN §3).
AWAITING_OPERATOR = "FAILED"
# The one definition of "parked", per saga type (workflows/registry.py names), from its
# status and current step: an order held for approval; a return waiting days for its
# parcel. Written as strings because the sagas import this module;
# tests/workflows/test_coordinator_load.py keeps them equal to the sagas' own constants.
PARKED: dict[str, Parked] = {
    "OrderWorkflow": Parked(statuses=frozenset({"AWAITING_APPROVAL"})),
    "ReturnWorkflow": Parked(steps=frozenset({"await_parcel"})),
}


def is_parked(saga_type: str, status: str, step: str | None) -> bool:
    """Whether a saga waits rather than runs steps: it then never counts toward shedding.

    Args:
        saga_type: its workflow type, as in workflows/registry.py.
        status: its own status value.
        step: its current step, if any.

    Returns:
        True for a saga parked for a person or a parcel, or failed and awaiting an operator.
    """
    if status == AWAITING_OPERATOR:
        return True
    rule = PARKED.get(saga_type)
    return rule is not None and (status in rule.statuses or step in rule.steps)


class OperatorAction(StrEnum):
    TRIP = "trip"
    RESET = "reset"
    PAUSE_INTAKE = "pause_intake"
    RESUME_INTAKE = "resume_intake"


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class CircuitPolicy:
    min_calls: int = 10
    error_ratio: float = 0.5
    window_s: int = 30
    open_s: int = 10


@dataclass
class CoordinatorConfig:
    services: list[str]
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)
    stats_window_s: int = 60
    # Continue-as-new at Temporal's suggestion, or at this many events, whichever is first.
    # Low because a lost cache (a restart, a continue-as-new refused for a new signal) means
    # replaying the whole run, about 1 ms of CPU per event, within the 10 s workflow task
    # timeout: in the 10,000-order soak a 4,100-event replay took 14 s on 2 loaded cores,
    # timed out, and each retry had more to replay (test_coordinator_run_length.py).
    max_history_events: int = 1_000
    recent_terminals: int = 200
    # Drift: every `reconcile_s` seconds the in-flight sagas are checked against Temporal
    # visibility (running executions of each of `saga_types`); 0 turns it off.
    reconcile_s: int = 30
    saga_types: list[str] = field(default_factory=lambda: ["OrderWorkflow"])
    saga_task_queue: str | None = None
    # The shards feeding it (settings.coordinator_shards); 1: reports come straight here.
    shards: int = 1
    # A worker process silent this long leaves the `workers` list (and its calls in flight).
    forget_worker_s: int = 600
    # When the process that built it started: a running coordinator adopts a configuration
    # a later process brings (a deploy with new settings), never an older one. None: a
    # configuration from before this field, which any stamped one replaces.
    issued_at: datetime | None = None

    def supersedes(self, current: "CoordinatorConfig | None") -> bool:
        """Whether this configuration, brought by a worker, replaces `current`.

        A coordinator runs for months and signal-with-start ignores its input once it
        runs, so newer settings arrive in reports. The process started last wins: during
        a rolling deploy the old processes, started earlier, cannot undo the new settings.

        Args:
            current: the configuration in use (None: none yet).

        Returns:
            True when this one is stamped and issued after `current`, and differs from it.
        """
        if current is None:
            return True
        if self.issued_at is None or self == current:
            return False
        return current.issued_at is None or self.issued_at > current.issued_at


# --- reports: what worker processes send, at most once a second each ---------------------


@dataclass
class ServiceSample:
    """One worker process's calls into one service since its previous report."""

    service: str
    calls: int = 0
    # Infrastructure failures only: a business refusal (declined card) is a healthy answer.
    errors: int = 0
    # Failed fast by an open circuit: these never reached the service.
    rejected: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_MS))
    in_flight: int = 0
    last_error: str | None = None


@dataclass
class StuckCompensation:
    """A compensation still failing after a full round of retries: the dead-letter list."""

    order_id: str
    compensation: str
    # stuck (still retrying) | failed (gave up; the saga is FAILED, waiting for an operator)
    status: CompensationStatus
    rounds: int
    attempts: int
    error: str | None
    since: datetime | None = None


@dataclass
class SagaSnapshot:
    """The latest state of one saga, as its workflow last published it."""

    # The saga's workflow ID: an order's ID, a return's ID.
    order_id: str
    # The saga's own status value (OrderState, ReturnState, ...).
    status: str
    step: str | None
    at: datetime
    terminal: bool = False
    stuck: list[StuckCompensation] = field(default_factory=list)
    # Its workflow type (workflows/registry.py); older reports carried orders only.
    saga_type: str = "OrderWorkflow"
    # Operator retries the saga has taken so far: a terminal status reached again in the
    # same round is the same end published again, in a later round it is a new end.
    retries: int = 0


@dataclass
class WorkerReport:
    worker: str
    services: list[ServiceSample] = field(default_factory=list)
    sagas: list[SagaSnapshot] = field(default_factory=list)
    # Sharded fan-in: the slot of its shard's schedule it was sent in (`ShardPace`).
    phase_s: float | None = None
    # The process's coordinator configuration, until a report carrying it got through: the
    # coordinator adopts one issued later than its own (`CoordinatorConfig.issued_at`).
    config: CoordinatorConfig | None = None


# --- the sharded fan-in: what a shard forwards to the root, and how it paces its workers --


@dataclass
class WorkerDelta:
    """One worker process as a shard saw it since the shard's previous forward."""

    worker: str
    reports: int
    # When the shard received its latest report (the shard's workflow time).
    last_report_at: datetime
    # Its latest calls in flight, per service.
    in_flight: dict[str, int] = field(default_factory=dict)


@dataclass
class ShardDelta:
    """Every report a shard received since its previous forward, merged into one signal."""

    shard: int
    # Counts the shard's forwards across its runs, so the root can tell a gap or a repeat.
    seq: int
    workers: list[WorkerDelta] = field(default_factory=list)
    # Summed over the shard's workers; their `in_flight` is carried per worker instead.
    services: list[ServiceSample] = field(default_factory=list)
    # The latest snapshot of each saga.
    sagas: list[SagaSnapshot] = field(default_factory=list)
    # The newest configuration its workers brought (`WorkerReport.config`).
    config: CoordinatorConfig | None = None


@dataclass
class ShardPace:
    """When each of a shard's workers reports: published in the shard's memo.

    Members report every `interval_s` seconds, each at its own phase of the interval
    (seconds after a multiple of the interval, in epoch time), so their signals are
    spread evenly instead of bunching in the same second.
    """

    interval_s: float
    # Keyed by `member_key(worker)`, a short hash: the memo names no host or process.
    phases: dict[str, float] = field(default_factory=dict)
    # The free slots: a process the schedule does not list yet sends its first report in
    # the one its hash picks (`choose_free`), which the shard then gives it.
    free_phases: list[float] = field(default_factory=list)


# --- drift reconciliation against Temporal visibility (activities/visibility.py) ----------


@dataclass
class ReconcileRequest:
    saga_types: list[str]
    # Sagas the coordinator counts in flight that have not changed for a whole interval.
    candidates: list[str]
    # The sagas' task queue: a namespace shared by several deployments counts only its own.
    task_queue: str | None = None
    # Sagas that ended FAILED with a dead letter, waiting for an operator: still open?
    waiting: list[str] = field(default_factory=list)


@dataclass
class EndedSaga:
    order_id: str
    # The saga's last OrderStatus search attribute; else Temporal's status (TERMINATED...).
    status: str
    closed_at: datetime | None = None


@dataclass
class ReconcileResult:
    # Running executions of each saga type, as visibility lists them.
    running: dict[str, int]
    # Candidates Temporal no longer runs: their end was never reported.
    ended: list[EndedSaga] = field(default_factory=list)
    # Of the request's `waiting`, those Temporal no longer runs (terminated, deleted).
    gone: list[str] = field(default_factory=list)


# --- operator actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class OperateRequest:
    action: str
    service: str | None = None
    reason: str | None = None


# --- the public, versioned view ------------------------------------------------------------


@dataclass
class CircuitView:
    state: CircuitPhase = CircuitPhase.CLOSED
    reason: str = "no failures seen"
    since: datetime | None = None
    # While open: when it half-opens. None while closed, half-open, or tripped by hand.
    retry_at: datetime | None = None
    manual: bool = False
    opened_count: int = 0


@dataclass
class ServiceView:
    window_s: int
    calls: int
    calls_per_s: float
    errors: int
    error_ratio: float
    rejected: int
    p50_ms: float | None
    p95_ms: float | None
    in_flight: int
    last_error: str | None
    circuit: CircuitView


@dataclass
class SagaCounts:
    in_flight: int
    compensating: int
    by_status: dict[str, int]
    by_step: dict[str, int]
    finished_total: dict[str, int]
    # Running sagas per workflow type (OrderWorkflow, ReturnWorkflow, ...).
    by_type: dict[str, int] = field(default_factory=dict)
    # What load shedding counts, per workflow type: sagas actively running steps...
    active_by_type: dict[str, int] = field(default_factory=dict)
    # ...and sagas parked (`is_parked`): held for approval, waiting for a parcel, or FAILED
    # and waiting for an operator (these have ended, so they are not in `in_flight`).
    parked_by_type: dict[str, int] = field(default_factory=dict)
    # The caps on active sagas per type that intake sheds at (the API's settings; empty
    # when read from the workflow directly).
    active_caps: dict[str, int] = field(default_factory=dict)


@dataclass
class Throughput:
    window_s: int
    started: int
    finished: int
    finished_per_s: float
    by_status: dict[str, int]


@dataclass
class Intake:
    paused: bool
    reason: str | None
    since: datetime | None


@dataclass
class TerminalRecord:
    order_id: str
    status: str
    finished_at: datetime
    observed_at: datetime


@dataclass
class WorkerSeen:
    worker: str
    last_report_at: datetime
    reports: int
    # The shard its reports come through; None when it reports to the root directly.
    shard: int | None = None


@dataclass
class Reconciliation:
    """The coordinator's last check of its in-flight sagas against Temporal visibility."""

    at: datetime | None = None
    # Running executions per saga type, as visibility listed them then.
    running: dict[str, int] = field(default_factory=dict)
    # Sagas taken out of the in-flight count because Temporal had ended them unreported.
    corrected_total: int = 0
    failures: int = 0


@dataclass
class CoordinationState:
    schema_version: int
    # Increases with every change; equal revisions mean an identical state.
    revision: int
    as_of: datetime
    # How many times the coordinator has continued-as-new.
    run: int
    reports: int
    intake: Intake
    sagas: SagaCounts
    throughput: Throughput
    services: dict[str, ServiceView]
    dead_letters: list[StuckCompensation]
    recent_terminals: list[TerminalRecord]
    workers: list[WorkerSeen]
    reconciliation: Reconciliation = field(default_factory=Reconciliation)
