"""The coordinator's book-keeping: pure, deterministic, and carried across continue-as-new.

Every method takes `now` from the caller (the workflow passes `workflow.now()`), so the
same code is unit-testable and replay-safe.
"""

# No `from __future__ import annotations`: the Book is decoded at every continue-as-new
# and replay, and string annotations make Temporal's converter compile each one again.
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from workflows.coordination_models import (
    LATENCY_BOUNDS_MS,
    SCHEMA_VERSION,
    CircuitPhase,
    CircuitView,
    CoordinationState,
    CoordinatorConfig,
    Intake,
    OperateRequest,
    OperatorAction,
    ReconcileResult,
    Reconciliation,
    SagaCounts,
    SagaSnapshot,
    ServiceSample,
    ServiceView,
    ShardDelta,
    StuckCompensation,
    TerminalRecord,
    Throughput,
    WorkerReport,
    WorkerSeen,
    is_parked,
)

AGEING_TICK = timedelta(seconds=5)
# Sagas checked against visibility per reconciliation, least recently checked first: the
# activity's input stays small however many sagas wait for approval.
MAX_CANDIDATES = 500


@dataclass
class Bucket:
    """What one report said about one service, stamped with when it arrived."""

    at: datetime
    calls: int
    errors: int
    rejected: int
    latency_buckets: list[int]


@dataclass
class ServiceBook:
    window: list[Bucket] = field(default_factory=list)
    circuit: CircuitView = field(default_factory=CircuitView)
    in_flight: dict[str, int] = field(default_factory=dict)  # per worker process
    last_error: str | None = None


@dataclass
class SagaEntry:
    status: str
    step: str | None
    updated_at: datetime  # when the coordinator applied its latest snapshot
    # The snapshot's own time (the saga's workflow time): an older one arriving later, from
    # another worker's report or another shard, must not undo a newer one.
    at: datetime | None = None
    # When visibility last confirmed it running (drift reconciliation).
    checked_at: datetime | None = None
    saga_type: str = "OrderWorkflow"


@dataclass
class FinishedBucket:
    at: datetime
    started: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass
class Book:
    services: dict[str, ServiceBook] = field(default_factory=dict)
    sagas: dict[str, SagaEntry] = field(default_factory=dict)  # running sagas only
    finished_total: dict[str, int] = field(default_factory=dict)
    finished_window: list[FinishedBucket] = field(default_factory=list)
    recent_terminals: list[TerminalRecord] = field(default_factory=list)
    dead_letters: dict[str, StuckCompensation] = field(default_factory=dict)
    workers: dict[str, WorkerSeen] = field(default_factory=dict)
    # Sagas that ended FAILED with a dead letter, open for an operator's retry: their type.
    waiting: dict[str, str] = field(default_factory=dict)
    intake: Intake = field(default_factory=lambda: Intake(paused=False, reason=None, since=None))
    reports: int = 0
    revision: int = 0
    reconciliation: Reconciliation = field(default_factory=Reconciliation)

    # --- input ---------------------------------------------------------------------------

    def apply_report(self, report: WorkerReport, now: datetime, config: CoordinatorConfig) -> None:
        self.reports += 1
        seen = self.workers.get(report.worker)
        self.workers[report.worker] = WorkerSeen(
            report.worker, now, (seen.reports if seen else 0) + 1
        )
        for sample in report.services:
            book = self.services.setdefault(sample.service, ServiceBook())
            book.in_flight[report.worker] = sample.in_flight
            self._apply_sample(sample, now)
        self._apply_sagas(report.sagas, now, config)
        self.tick(now, config)
        self.revision += 1

    def apply_delta(self, delta: ShardDelta, now: datetime, config: CoordinatorConfig) -> None:
        """A shard's merged reports: as if each had arrived here, counted once per report."""
        for seen in delta.workers:
            before = self.workers.get(seen.worker)
            self.reports += seen.reports
            self.workers[seen.worker] = WorkerSeen(
                seen.worker,
                seen.last_report_at,
                (before.reports if before else 0) + seen.reports,
                shard=delta.shard,
            )
            for service, count in seen.in_flight.items():
                self.services.setdefault(service, ServiceBook()).in_flight[seen.worker] = count
        for sample in delta.services:
            self._apply_sample(sample, now)
        self._apply_sagas(delta.sagas, now, config)
        self.tick(now, config)
        self.revision += 1

    def _apply_sample(self, sample: ServiceSample, now: datetime) -> None:
        book = self.services.setdefault(sample.service, ServiceBook())
        if sample.last_error:
            book.last_error = sample.last_error
        if sample.calls or sample.rejected:
            book.window.append(
                Bucket(now, sample.calls, sample.errors, sample.rejected, sample.latency_buckets)
            )

    def _apply_sagas(
        self, snapshots: list[SagaSnapshot], now: datetime, config: CoordinatorConfig
    ) -> None:
        if not snapshots:
            return
        finished = FinishedBucket(at=now)
        ended = {t.order_id: t.finished_at for t in self.recent_terminals}
        for snapshot in snapshots:
            if snapshot.order_id in ended and snapshot.at <= ended[snapshot.order_id]:
                continue  # news from before its end, overtaken by the end itself
            self._apply_saga(snapshot, now, finished, config)
        if finished.started or finished.by_status:
            self.finished_window.append(finished)

    def _apply_saga(
        self,
        snapshot: SagaSnapshot,
        now: datetime,
        finished: FinishedBucket,
        config: CoordinatorConfig,
    ) -> None:
        known = self.sagas.get(snapshot.order_id)
        if known is not None and known.at is not None and snapshot.at < known.at:
            return  # older than what is known: reports from two workers crossed
        self.sagas.pop(snapshot.order_id, None)
        self._clear_dead_letters(snapshot.order_id)
        for stuck in snapshot.stuck:
            self.dead_letters[f"{snapshot.order_id}:{stuck.compensation}"] = stuck
        if known is None and not snapshot.terminal:
            finished.started += 1
        if not snapshot.terminal:
            self.sagas[snapshot.order_id] = SagaEntry(
                snapshot.status, snapshot.step, now, at=snapshot.at, saga_type=snapshot.saga_type
            )
            return
        if snapshot.stuck:
            self.waiting[snapshot.order_id] = snapshot.saga_type
        self._finish(snapshot.order_id, snapshot.status, snapshot.at, now, finished, config)

    def _finish(
        self,
        order_id: str,
        status: str,
        finished_at: datetime,
        now: datetime,
        bucket: FinishedBucket,
        config: CoordinatorConfig,
    ) -> None:
        bucket.by_status[status] = bucket.by_status.get(status, 0) + 1
        self.finished_total[status] = self.finished_total.get(status, 0) + 1
        self.recent_terminals.append(TerminalRecord(order_id, status, finished_at, now))
        del self.recent_terminals[: -config.recent_terminals]

    def _clear_dead_letters(self, order_id: str) -> None:
        self.waiting.pop(order_id, None)
        for key in [k for k in self.dead_letters if k.startswith(f"{order_id}:")]:
            del self.dead_letters[key]

    # --- drift: reconciliation against Temporal visibility -------------------------------

    def reconcile_candidates(self, now: datetime, config: CoordinatorConfig) -> list[str]:
        """Sagas counted in flight whose last news is a whole interval old: ended unheard?

        A saga reported within the interval is left alone: it is alive, and visibility may
        not list a saga that has only just started.
        """
        quiet_since = now - timedelta(seconds=config.reconcile_s)
        quiet = [
            (e.checked_at or datetime.min.replace(tzinfo=now.tzinfo), e.updated_at, order_id)
            for order_id, e in self.sagas.items()
            if e.updated_at <= quiet_since
        ]
        return [order_id for *_, order_id in sorted(quiet)[:MAX_CANDIDATES]]

    def waiting_candidates(self) -> list[str]:
        """Sagas with dead letters that no longer run steps: are they still open?

        A saga FAILED for good stays open for an operator; one terminated or deleted in
        Temporal instead will never report again, so only visibility can clear its dead
        letters. Books from before `waiting` existed name these sagas in their dead letters.
        """
        named = {d.order_id for d in self.dead_letters.values()} | set(self.waiting)
        return sorted(named - set(self.sagas))[:MAX_CANDIDATES]

    def apply_reconciliation(
        self,
        candidates: list[str],
        result: ReconcileResult,
        asked_at: datetime,
        now: datetime,
        config: CoordinatorConfig,
    ) -> None:
        """Take out of the count the candidates Temporal ended; the others are confirmed."""
        ended = {e.order_id: e for e in result.ended}
        quiet_since = asked_at - timedelta(seconds=config.reconcile_s)
        finished = FinishedBucket(at=now)
        for order_id in candidates:
            entry = self.sagas.get(order_id)
            if entry is None or entry.updated_at > quiet_since:
                continue  # news arrived while visibility was read: that news wins
            if order_id not in ended:
                entry.checked_at = asked_at
                continue
            end = ended[order_id]
            del self.sagas[order_id]
            self._clear_dead_letters(order_id)
            self._finish(order_id, end.status, end.closed_at or now, now, finished, config)
            self.reconciliation.corrected_total += 1
        if finished.by_status:
            self.finished_window.append(finished)
        for order_id in result.gone:
            if order_id not in self.sagas:  # unless news of a retry arrived meanwhile
                self._clear_dead_letters(order_id)
        self.reconciliation.at = now
        self.reconciliation.running = dict(result.running)
        self.revision += 1

    def reconciliation_failed(self, now: datetime) -> None:
        self.reconciliation.failures += 1
        self.revision += 1

    # --- time ----------------------------------------------------------------------------

    def tick(self, now: datetime, config: CoordinatorConfig) -> None:
        """Age the windows and move circuits along; call on every report and timer."""
        stats_from = now - timedelta(seconds=config.stats_window_s)
        circuit_from = now - timedelta(seconds=config.circuit.window_s)
        keep_from = min(stats_from, circuit_from)
        self.finished_window = [b for b in self.finished_window if b.at > stats_from]
        for name, book in self.services.items():
            book.window = [b for b in book.window if b.at > keep_from]
            # A worker that stopped reporting (killed, scaled down) no longer has calls open.
            # (Also forgotten below, so this also covers reports from a book before that.)
            book.in_flight = {
                worker: count
                for worker, count in book.in_flight.items()
                if worker in self.workers and self.workers[worker].last_report_at > stats_from
            }
            self._move_circuit(name, book, now, config)
        self._forget_workers(now, config)

    def _forget_workers(self, now: datetime, config: CoordinatorConfig) -> None:
        """Drop processes silent for `forget_worker_s`, so the list does not grow forever.

        The freshest process of each role stays, however old: its report age is what
        tells an operator (and the SagaworksWorkerNotReporting alert) that the role is down.
        """
        silent_since = now - timedelta(seconds=config.forget_worker_s)
        freshest: dict[str, WorkerSeen] = {}
        for seen in self.workers.values():
            role = seen.worker.split(" ", 1)[0]
            best = freshest.get(role)
            if best is None or seen.last_report_at > best.last_report_at:
                freshest[role] = seen
        keep = {seen.worker for seen in freshest.values()}
        for worker in [
            w
            for w, seen in self.workers.items()
            if w not in keep and seen.last_report_at <= silent_since
        ]:
            del self.workers[worker]

    def next_deadline(self, now: datetime, config: CoordinatorConfig) -> datetime | None:
        """When the state next changes on its own: a circuit half-opening or data ageing."""
        deadlines = [
            book.circuit.retry_at
            for book in self.services.values()
            if book.circuit.state == CircuitPhase.OPEN and book.circuit.retry_at is not None
        ]
        oldest = [b.at for book in self.services.values() for b in book.window[:1]]
        oldest += [b.at for b in self.finished_window[:1]]
        if oldest:
            window = max(config.stats_window_s, config.circuit.window_s)
            # Ageing needs no precision: at most one tick every AGEING_TICK.
            deadlines.append(max(min(oldest) + timedelta(seconds=window), now + AGEING_TICK))
        return min(deadlines) if deadlines else None

    def _move_circuit(
        self, name: str, book: ServiceBook, now: datetime, config: CoordinatorConfig
    ) -> None:
        circuit, policy = book.circuit, config.circuit
        if circuit.state == CircuitPhase.CLOSED:
            recent = [b for b in book.window if b.at > now - timedelta(seconds=policy.window_s)]
            calls = sum(b.calls for b in recent)
            errors = sum(b.errors for b in recent)
            if calls >= policy.min_calls and errors / calls >= policy.error_ratio:
                reason = (
                    f"{errors} of {calls} calls failed in the last {policy.window_s}s "
                    f"(threshold {policy.error_ratio:.0%} over at least {policy.min_calls})"
                )
                self._open(book, now, config, reason)
        elif circuit.state == CircuitPhase.OPEN:
            if circuit.retry_at is not None and now >= circuit.retry_at:
                book.circuit = CircuitView(
                    CircuitPhase.HALF_OPEN,
                    f"open for {policy.open_s}s; letting a probe through",
                    since=now,
                    opened_count=circuit.opened_count,
                )
        elif circuit.state == CircuitPhase.HALF_OPEN:
            since = circuit.since or now
            probes = [b for b in book.window if b.at >= since]
            if any(b.errors for b in probes):
                self._open(book, now, config, "the half-open probe failed")
            elif any(b.calls for b in probes):
                self._close(book, now, "a half-open probe succeeded")

    def _open(
        self, book: ServiceBook, now: datetime, config: CoordinatorConfig, reason: str
    ) -> None:
        book.circuit = CircuitView(
            CircuitPhase.OPEN,
            reason,
            since=now,
            retry_at=now + timedelta(seconds=config.circuit.open_s),
            opened_count=book.circuit.opened_count + 1,
        )

    def _close(self, book: ServiceBook, now: datetime, reason: str) -> None:
        book.circuit = CircuitView(
            CircuitPhase.CLOSED, reason, since=now, opened_count=book.circuit.opened_count
        )
        # Failures from before the circuit closed must not trip it again at once.
        book.window = []

    # --- operator actions ----------------------------------------------------------------

    def validate(self, request: OperateRequest, config: CoordinatorConfig) -> None:
        actions = [a.value for a in OperatorAction]
        if request.action not in actions:
            raise ValueError(f"unknown action {request.action!r}; expected one of {actions}")
        action = OperatorAction(request.action)
        if action in (OperatorAction.TRIP, OperatorAction.RESET):
            if request.service not in config.services:
                raise ValueError(
                    f"{action.value} needs a service, one of {config.services}; "
                    f"got {request.service!r}"
                )
        elif request.service is not None:
            raise ValueError(f"{action.value} applies to the whole system; omit 'service'")

    def operate(self, request: OperateRequest, now: datetime, config: CoordinatorConfig) -> None:
        action = OperatorAction(request.action)
        why = request.reason or "by operator"
        if action == OperatorAction.TRIP and request.service:
            book = self.services.setdefault(request.service, ServiceBook())
            book.circuit = CircuitView(
                CircuitPhase.OPEN,
                f"tripped {why}",
                since=now,
                manual=True,
                opened_count=book.circuit.opened_count + 1,
            )
        elif action == OperatorAction.RESET and request.service:
            book = self.services.setdefault(request.service, ServiceBook())
            self._close(book, now, f"reset {why}")
        elif action == OperatorAction.PAUSE_INTAKE:
            self.intake = Intake(paused=True, reason=f"paused {why}", since=now)
        elif action == OperatorAction.RESUME_INTAKE:
            self.intake = Intake(paused=False, reason=None, since=now)
        self.revision += 1

    # --- output --------------------------------------------------------------------------

    def view(self, now: datetime, config: CoordinatorConfig, run: int) -> CoordinationState:
        statuses = Counter(s.status for s in self.sagas.values())
        steps = Counter(s.step or "-" for s in self.sagas.values())
        window_s = config.stats_window_s
        recent = [b for b in self.finished_window if b.at > now - timedelta(seconds=window_s)]
        finished_by: Counter[str] = Counter()
        for bucket in recent:
            finished_by.update(bucket.by_status)
        finished = sum(finished_by.values())
        active: Counter[str] = Counter()
        parked: Counter[str] = Counter(self.waiting.values())
        for entry in self.sagas.values():
            counter = parked if is_parked(entry.saga_type, entry.status, entry.step) else active
            counter[entry.saga_type] += 1
        return CoordinationState(
            schema_version=SCHEMA_VERSION,
            revision=self.revision,
            as_of=now,
            run=run,
            reports=self.reports,
            intake=self.intake,
            sagas=SagaCounts(
                in_flight=len(self.sagas),
                compensating=statuses.get("COMPENSATING", 0),
                by_status=dict(statuses),
                by_step=dict(steps),
                finished_total=dict(self.finished_total),
                by_type=dict(Counter(s.saga_type for s in self.sagas.values())),
                active_by_type=dict(active),
                parked_by_type=dict(parked),
            ),
            throughput=Throughput(
                window_s=window_s,
                started=sum(b.started for b in recent),
                finished=finished,
                finished_per_s=round(finished / window_s, 3),
                by_status=dict(finished_by),
            ),
            services={
                name: _service_view(self.services.get(name, ServiceBook()), now, window_s)
                for name in sorted({*config.services, *self.services})
            },
            dead_letters=list(self.dead_letters.values()),
            recent_terminals=list(self.recent_terminals),
            workers=list(self.workers.values()),
            reconciliation=self.reconciliation,
        )


def _service_view(book: ServiceBook, now: datetime, window_s: int) -> ServiceView:
    recent = [b for b in book.window if b.at > now - timedelta(seconds=window_s)]
    calls = sum(b.calls for b in recent)
    errors = sum(b.errors for b in recent)
    histogram = [sum(column) for column in zip(*(b.latency_buckets for b in recent), strict=False)]
    return ServiceView(
        window_s=window_s,
        calls=calls,
        calls_per_s=round(calls / window_s, 3),
        errors=errors,
        error_ratio=round(errors / calls, 4) if calls else 0.0,
        rejected=sum(b.rejected for b in recent),
        p50_ms=percentile(histogram, 0.50),
        p95_ms=percentile(histogram, 0.95),
        in_flight=sum(book.in_flight.values()),
        last_error=book.last_error,
        circuit=book.circuit,
    )


def percentile(histogram: list[int], q: float) -> float | None:
    """Estimate a quantile from bucket counts, interpolating inside the bucket it falls in."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            low = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            high = LATENCY_BOUNDS_MS[index]
            if high == float("inf"):
                return float(low)
            return round(low + (high - low) * (rank - seen) / count, 1)
        seen += count
    return float(LATENCY_BOUNDS_MS[-2])
