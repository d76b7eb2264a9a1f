"""Dataclasses of the Coordination State Layer (DESIGN §3): reports in, state out.

Pure data, shared by the coordinator workflow, the worker-side reporters and the API.
`CoordinationState` is the public, versioned view: bump `SCHEMA_VERSION` when a field
changes meaning or disappears (adding a field is compatible).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

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


class OperatorAction(StrEnum):
    TRIP = "trip"
    RESET = "reset"
    PAUSE_INTAKE = "pause_intake"
    RESUME_INTAKE = "resume_intake"


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
    status: str  # stuck (still retrying) | failed (gave up; the order is FAILED)
    rounds: int
    attempts: int
    error: str | None
    since: datetime | None = None


@dataclass
class SagaSnapshot:
    """The latest state of one saga, as its workflow last published it."""

    order_id: str
    status: str
    step: str | None
    at: datetime
    terminal: bool = False
    stuck: list[StuckCompensation] = field(default_factory=list)


@dataclass
class WorkerReport:
    worker: str
    services: list[ServiceSample] = field(default_factory=list)
    sagas: list[SagaSnapshot] = field(default_factory=list)


# --- operator actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class OperateRequest:
    action: str
    service: str | None = None
    reason: str | None = None


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
    max_history_events: int = 10_000
    recent_terminals: int = 200


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
