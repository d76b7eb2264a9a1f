"""The app's own Prometheus metrics, one definition for every process.

ARCHITECTURE.md, Observability.

Each process registers all of them on prometheus_client's default registry and moves the
ones its role touches: the API counts starts, HTTP answers, shed and rate-limited
requests and mirrors the coordination state into gauges; the orders worker counts
finished sagas; service workers time steps and compensations. Labels are bounded sets
(service, activity, route template, status, reason): never an order ID.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio import workflow

from workflows import compensations
from workflows.coordination_models import (
    LATENCY_BOUNDS_MS,
    CircuitPhase,
    CoordinationState,
    SagaSnapshot,
)
from workflows.saga import CompensationStatus
from workflows.search_attributes import FAILURE_REASON

log = logging.getLogger("sagaworks.metrics")

# The same bucket bounds the workers report to the coordinator, in seconds.
LATENCY_BUCKETS_S = tuple(bound / 1000 for bound in LATENCY_BOUNDS_MS)
# Activities that undo a step, as the sagas declare them: timed as compensations, the rest
# (a return's refund included: a forward step past its pivot) as steps.
COMPENSATIONS = compensations.ACTIVITIES
NO_REASON = "none"
UNMATCHED_ROUTE = "unmatched"
_ROLE_END = re.compile(r"[ -]")

# No `_created` series beside every counter and histogram: they double the page for
# nothing Prometheus uses.
disable_created_metrics()

# --- sagas -------------------------------------------------------------------------------------

SAGAS_STARTED = Counter(
    "sagaworks_sagas_started_total",
    "Sagas the API started (a replayed POST is not counted)",
    ["type"],
)
SAGAS_FINISHED = Counter(
    "sagaworks_sagas_finished_total",
    "Sagas that reached a terminal status, by status and failure reason (orders worker)",
    ["type", "status", "reason"],
)

# --- service calls (service workers) -----------------------------------------------------------

STEP_SECONDS = Histogram(
    "sagaworks_step_duration_seconds",
    "Latency of saga steps inside the service, by outcome (ok, business_error, error)",
    ["service", "activity", "outcome"],
    buckets=LATENCY_BUCKETS_S,
)
COMPENSATION_SECONDS = Histogram(
    "sagaworks_compensation_duration_seconds",
    "Latency of compensations inside the service, by outcome (ok, business_error, error)",
    ["service", "activity", "outcome"],
    buckets=LATENCY_BUCKETS_S,
)
CALLS_REJECTED = Counter(
    "sagaworks_calls_rejected_total",
    "Activity calls failed fast by an open circuit; they never reached the service",
    ["service"],
)

# --- the gateway (API) -------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "sagaworks_http_requests_total",
    "HTTP requests answered, by route template and status code",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "sagaworks_http_request_duration_seconds",
    "Time to answer an HTTP request (a stream counts until it closes)",
    ["method", "route"],
    buckets=LATENCY_BUCKETS_S,
)
LOAD_SHED = Counter(
    "sagaworks_load_shed_total",
    "POST /orders or POST /orders/{id}/returns refused with 503 by load shedding",
    ["reason"],
)
RATE_LIMITED = Counter(
    "sagaworks_rate_limited_total",
    "Requests refused with 429 by the per-principal rate limit",
    ["route"],
)


def observe_call(service: str, activity: str, outcome: str, seconds: float) -> None:
    histogram = COMPENSATION_SECONDS if activity in COMPENSATIONS else STEP_SECONDS
    histogram.labels(service, activity, outcome).observe(seconds)


class CoordinationMetrics(Collector):
    """The coordination state as the API last read it, rendered as gauges at scrape time.

    Only the API registers it (`register_coordination`), so worker endpoints carry no
    coordination gauges stuck at zero. Ages are computed when Prometheus asks, so a
    worker that stopped reporting shows its age growing even between reads.
    """

    def __init__(self) -> None:
        self._state: CoordinationState | None = None
        self._up = False

    def observe(self, state: CoordinationState) -> None:
        self._state, self._up = state, True

    def unreachable(self) -> None:
        self._up = False

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "sagaworks_coordination_up", "1 when the API's last read of the coordinator succeeded"
        )
        up.add_metric([], int(self._up))
        yield up
        if self._state is not None:
            yield from _coordination_families(self._state, datetime.now(UTC))

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _coordination_families(state: CoordinationState, now: datetime) -> Iterator[Metric]:
    circuit = GaugeMetricFamily(
        "sagaworks_circuit_state",
        "1 for the circuit's current state (closed, open, half_open), 0 for the others",
        labels=["service", "state"],
    )
    for name, service in state.services.items():
        for phase in CircuitPhase:
            circuit.add_metric([name, phase.value], int(service.circuit.state == phase))
    yield circuit
    dead = GaugeMetricFamily(
        "sagaworks_dead_letters",
        "Compensations in the dead-letter list: stuck (still retrying) or failed (gave up)",
        labels=["status"],
    )
    statuses = [d.status for d in state.dead_letters]
    for status in (CompensationStatus.STUCK, CompensationStatus.FAILED):
        dead.add_metric([status.value], statuses.count(status))
    yield dead
    yield GaugeMetricFamily(
        "sagaworks_sagas_in_flight", "Sagas started and not yet terminal", state.sagas.in_flight
    )
    yield GaugeMetricFamily(
        "sagaworks_sagas_compensating", "Sagas rolling back now", state.sagas.compensating
    )
    for name, help_text, counts in (
        ("active", "Sagas actively running steps: what load shedding counts", "active_by_type"),
        ("parked", "Sagas held for approval, a parcel or an operator", "parked_by_type"),
    ):
        family = GaugeMetricFamily(f"sagaworks_sagas_{name}", help_text, labels=["type"])
        for saga_type, count in sorted(getattr(state.sagas, counts).items()):
            family.add_metric([saga_type], count)
        yield family
    yield GaugeMetricFamily(
        "sagaworks_intake_paused", "1 while an operator has paused intake", int(state.intake.paused)
    )
    window_from = state.as_of - timedelta(seconds=state.throughput.window_s)
    lags = [
        (t.observed_at - t.finished_at).total_seconds()
        for t in state.recent_terminals
        if t.observed_at >= window_from
    ]
    yield GaugeMetricFamily(
        "sagaworks_coordination_lag_seconds",
        "Longest delay, over the stats window, from a saga finishing to the coordinator knowing",
        max(lags, default=0.0),
    )
    age = GaugeMetricFamily(
        "sagaworks_worker_report_age_seconds",
        "Seconds since the freshest worker process of this role last reported",
        labels=["role"],
    )
    freshest: dict[str, datetime] = {}
    for seen in state.workers:
        # "<role> <pid>@<host>" (or "<role>-<n>" once made public): one series per role.
        role = _ROLE_END.split(seen.worker, maxsplit=1)[0]
        freshest[role] = max(freshest.get(role, seen.last_report_at), seen.last_report_at)
    for role, at in sorted(freshest.items()):
        age.add_metric([role], max((now - at).total_seconds(), 0.0))
    yield age


COORDINATION = CoordinationMetrics()
_registered = False


def register_coordination() -> None:
    """Serve the coordination gauges from this process (the API); idempotent."""
    global _registered
    if not _registered:
        REGISTRY.register(COORDINATION)
        _registered = True


class SagaFinishes:
    """Counts each saga once per end, in the orders worker: per terminal status and round.

    Fed by the lifecycle hook, which publishes nothing while a workflow replays, so a
    workflow rebuilt from history (cache eviction, another worker) is not counted again.
    Workflow code still runs live more than once per end, though:
    - a saga publishes several snapshots in the same terminal status;
    - with the workflow cache off, a query to a closed saga replays its whole history, and
      the SDK core stops counting that as a replay at the terminal event, so the saga's
      last workflow task runs live again (a rollback's last step: a COMPENSATING snapshot,
      then COMPENSATED);
    - a workflow task that failed or timed out after its code ran (a busy worker) runs
      again as a new task, at a later workflow time.
    What tells a new end from these is the snapshot's `retries`: only an operator retry
    starts a new round, so an end counts once per (status, round).
    It runs inside workflow code, so it only reads: the type from `workflow.info()`, the
    reason from the search attribute the saga keeps current.
    """

    def __init__(self, remember: int = 10_000) -> None:
        self._remember = remember
        # Per saga: the last end counted, as (status, round).
        self._counted: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, snapshot: SagaSnapshot) -> None:
        if not snapshot.terminal:
            return
        end = (snapshot.status, snapshot.retries)
        with self._lock:
            if self._counted.get(snapshot.order_id) == end:
                return  # the same end published again, or run live again
            self._counted[snapshot.order_id] = end
            self._counted.move_to_end(snapshot.order_id)
            while len(self._counted) > self._remember:
                self._counted.popitem(last=False)
        saga_type, reason = _saga_labels()
        SAGAS_FINISHED.labels(saga_type, snapshot.status, reason).inc()


def _saga_labels() -> tuple[str, str]:
    if not workflow.in_workflow():  # not called from workflow code (a unit test)
        return "unknown", NO_REASON
    info = workflow.info()
    # Kept current by upsert_search_attributes, which the saga calls before publishing.
    reason = info.typed_search_attributes.get(FAILURE_REASON)
    return info.workflow_type, reason or NO_REASON


SAGA_FINISHES = SagaFinishes()
