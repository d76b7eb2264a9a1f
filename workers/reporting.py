"""In-process aggregation of what a worker saw, drained into one report per second.

Activity outcomes (from the guard interceptor) and saga snapshots (from the lifecycle
hook) arrive on many threads; a report summarises them, so the coordinator receives one
signal per second per process however busy the process is, never one per saga step.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

from common.metrics import SAGA_FINISHES
from workflows.coordination_models import (
    LATENCY_BOUNDS_MS,
    SagaSnapshot,
    ServiceSample,
    WorkerReport,
)


class ReportBuffer:
    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._lock = threading.Lock()
        self._samples: dict[str, ServiceSample] = {}
        self._in_flight: defaultdict[str, int] = defaultdict(int)
        # Latest snapshot per saga: a saga that moved five times since the last report is
        # reported once, as it is now.
        self._sagas: dict[str, SagaSnapshot] = {}

    # --- recording (any thread) ----------------------------------------------------------

    def call_started(self, service: str) -> None:
        with self._lock:
            self._in_flight[service] += 1
            self._sample(service).in_flight = self._in_flight[service]

    def call_finished(self, service: str, latency_ms: float, error: str | None) -> None:
        with self._lock:
            self._in_flight[service] -= 1
            sample = self._sample(service)
            sample.in_flight = self._in_flight[service]
            sample.calls += 1
            sample.latency_buckets[bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)] += 1
            if error is not None:
                sample.errors += 1
                sample.last_error = error[:300]

    def call_rejected(self, service: str) -> None:
        with self._lock:
            self._sample(service).rejected += 1

    def saga_changed(self, snapshot: SagaSnapshot) -> None:
        with self._lock:
            self._sagas[snapshot.order_id] = snapshot
        SAGA_FINISHES.observe(snapshot)  # the orders worker's Prometheus counter

    # --- draining (the agent) ------------------------------------------------------------

    def drain(self) -> WorkerReport | None:
        with self._lock:
            if not self._samples and not self._sagas:
                return None
            report = WorkerReport(
                worker=self.worker,
                services=list(self._samples.values()),
                sagas=list(self._sagas.values()),
            )
            self._samples = {}
            self._sagas = {}
            return report

    def restore(self, report: WorkerReport) -> None:
        """Put back a report that could not be sent, under anything recorded since."""
        with self._lock:
            for old in report.services:
                sample = self._sample(old.service)
                sample.calls += old.calls
                sample.errors += old.errors
                sample.rejected += old.rejected
                sample.latency_buckets = [
                    a + b for a, b in zip(sample.latency_buckets, old.latency_buckets, strict=True)
                ]
                sample.last_error = sample.last_error or old.last_error
            for snapshot in report.sagas:
                self._sagas.setdefault(snapshot.order_id, snapshot)

    def _sample(self, service: str) -> ServiceSample:
        sample = self._samples.get(service)
        if sample is None:
            sample = self._samples[service] = ServiceSample(
                service=service, in_flight=self._in_flight[service]
            )
        return sample
