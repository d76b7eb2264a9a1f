"""The app's metrics in one process: what each recorder counts, and what it refuses to count."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.routes.metrics import RequestMetrics
from common import metrics
from common.settings import Settings
from common.telemetry import SdkMetrics, metrics_port, metrics_urls
from workflows.coordination_models import (
    SCHEMA_VERSION,
    CircuitPhase,
    CircuitView,
    CoordinationState,
    Intake,
    SagaCounts,
    SagaSnapshot,
    ServiceView,
    StuckCompensation,
    TerminalRecord,
    Throughput,
    WorkerSeen,
)
from workflows.saga import CompensationStatus

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def snapshot(
    order_id: str, status: str, *, terminal: bool, at: datetime = NOW, retries: int = 0
) -> SagaSnapshot:
    return SagaSnapshot(
        order_id=order_id, status=status, step=None, at=at, terminal=terminal, retries=retries
    )


# --- sagas finished (orders worker) ------------------------------------------------------------


def test_a_saga_counts_once_per_terminal_status_however_often_it_publishes_it() -> None:
    finishes = metrics.SagaFinishes()
    labels = {"type": "unknown", "status": "COMPLETED", "reason": "none"}
    before = sample("sagaworks_sagas_finished_total", **labels)
    finishes.observe(snapshot("order-a", "PENDING", terminal=False))
    for _ in range(3):  # the saga touches its status several times once COMPLETED
        finishes.observe(snapshot("order-a", "COMPLETED", terminal=True))
    finishes.observe(snapshot("order-b", "COMPLETED", terminal=True))
    assert sample("sagaworks_sagas_finished_total", **labels) == before + 2


def test_a_failed_saga_retried_by_an_operator_counts_its_next_end_too() -> None:
    finishes = metrics.SagaFinishes()
    failed = {"type": "unknown", "status": "FAILED", "reason": "none"}
    compensated = {**failed, "status": "COMPENSATED"}
    before = (
        sample("sagaworks_sagas_finished_total", **failed),
        sample("sagaworks_sagas_finished_total", **compensated),
    )
    finishes.observe(snapshot("order-r", "FAILED", terminal=True))
    finishes.observe(snapshot("order-r", "COMPENSATING", terminal=False, retries=1))
    finishes.observe(snapshot("order-r", "COMPENSATED", terminal=True, retries=1))
    finishes.observe(snapshot("order-r", "COMPENSATED", terminal=True, retries=1))
    assert sample("sagaworks_sagas_finished_total", **failed) == before[0] + 1
    assert sample("sagaworks_sagas_finished_total", **compensated) == before[1] + 1


def test_a_rollback_whose_last_task_replays_live_counts_once() -> None:
    # Cache off, a query to the closed saga replays it; its last task runs live again, with
    # that task's workflow time: COMPENSATING, then COMPENSATED, both at the end's `at`.
    finishes = metrics.SagaFinishes()
    labels = {"type": "unknown", "status": "COMPENSATED", "reason": "none"}
    before = sample("sagaworks_sagas_finished_total", **labels)
    end = NOW + timedelta(seconds=3)
    finishes.observe(snapshot("order-q", "COMPENSATING", terminal=False, at=NOW))
    finishes.observe(snapshot("order-q", "COMPENSATING", terminal=False, at=end))
    finishes.observe(snapshot("order-q", "COMPENSATED", terminal=True, at=end))
    for _ in range(2):  # two queries, two live replays of the last task
        finishes.observe(snapshot("order-q", "COMPENSATING", terminal=False, at=end))
        finishes.observe(snapshot("order-q", "COMPENSATED", terminal=True, at=end))
    assert sample("sagaworks_sagas_finished_total", **labels) == before + 1


def test_a_last_task_that_ran_again_later_counts_once() -> None:
    # A busy worker's workflow task timed out after its code ran: the task runs again as
    # a new one, at a later workflow time, and publishes the same end again.
    finishes = metrics.SagaFinishes()
    labels = {"type": "unknown", "status": "COMPENSATED", "reason": "none"}
    before = sample("sagaworks_sagas_finished_total", **labels)
    again = NOW + timedelta(seconds=10)
    finishes.observe(snapshot("order-t", "COMPENSATING", terminal=False, at=NOW))
    finishes.observe(snapshot("order-t", "COMPENSATED", terminal=True, at=NOW))
    finishes.observe(snapshot("order-t", "COMPENSATING", terminal=False, at=again))
    finishes.observe(snapshot("order-t", "COMPENSATED", terminal=True, at=again))
    assert sample("sagaworks_sagas_finished_total", **labels) == before + 1


def test_a_saga_failing_again_after_an_operator_retry_counts_both_ends() -> None:
    finishes = metrics.SagaFinishes()
    labels = {"type": "unknown", "status": "FAILED", "reason": "none"}
    before = sample("sagaworks_sagas_finished_total", **labels)
    retried = NOW + timedelta(minutes=5)
    finishes.observe(snapshot("order-f", "FAILED", terminal=True, at=NOW))
    finishes.observe(snapshot("order-f", "COMPENSATING", terminal=False, at=retried, retries=1))
    finishes.observe(snapshot("order-f", "FAILED", terminal=True, at=retried, retries=1))
    assert sample("sagaworks_sagas_finished_total", **labels) == before + 2


def test_the_memory_of_counted_sagas_is_bounded() -> None:
    finishes = metrics.SagaFinishes(remember=2)
    for order in ("order-1", "order-2", "order-3"):
        finishes.observe(snapshot(order, "COMPLETED", terminal=True))
    assert len(finishes._counted) == 2


# --- step and compensation latency (service workers) -------------------------------------------


def test_compensations_and_steps_go_to_their_own_histograms() -> None:
    step = {"service": "payments", "activity": "authorize_payment", "outcome": "business_error"}
    undo = {"service": "payments", "activity": "void_payment", "outcome": "ok"}
    before = (
        sample("sagaworks_step_duration_seconds_count", **step),
        sample("sagaworks_compensation_duration_seconds_count", **undo),
        sample("sagaworks_step_duration_seconds_count", **undo),
    )
    metrics.observe_call("payments", "authorize_payment", "business_error", 0.02)
    metrics.observe_call("payments", "void_payment", "ok", 0.004)
    assert sample("sagaworks_step_duration_seconds_count", **step) == before[0] + 1
    assert sample("sagaworks_compensation_duration_seconds_count", **undo) == before[1] + 1
    assert sample("sagaworks_step_duration_seconds_count", **undo) == before[2]
    # The same bucket bounds as the coordinator's histograms, in seconds.
    assert sample("sagaworks_compensation_duration_seconds_bucket", **undo, le="0.005") >= 1


@pytest.mark.parametrize(
    ("service", "activity"),
    [
        ("inventory", "release_stock"),
        ("payments", "void_payment"),
        ("shipping", "cancel_shipment"),
        # The returns saga's: a hand-written list once missed both.
        ("inventory", "release_return_claim"),
        ("shipping", "cancel_return_label"),
    ],
)
def test_every_sagas_compensations_are_timed_as_compensations(service: str, activity: str) -> None:
    undo = {"service": service, "activity": activity, "outcome": "ok"}
    before = (
        sample("sagaworks_compensation_duration_seconds_count", **undo),
        sample("sagaworks_step_duration_seconds_count", **undo),
    )
    metrics.observe_call(service, activity, "ok", 0.01)
    assert sample("sagaworks_compensation_duration_seconds_count", **undo) == before[0] + 1
    assert sample("sagaworks_step_duration_seconds_count", **undo) == before[1]


def test_a_returns_refund_is_a_forward_step_not_a_compensation() -> None:
    # Past the return's pivot the refund only goes forward (ARCHITECTURE.md, rule 5).
    refund = {"service": "payments", "activity": "refund_payment", "outcome": "ok"}
    before = sample("sagaworks_step_duration_seconds_count", **refund)
    metrics.observe_call("payments", "refund_payment", "ok", 0.01)
    assert sample("sagaworks_step_duration_seconds_count", **refund) == before + 1


# --- the coordination gauges (API) --------------------------------------------------------------


def coordination_state() -> CoordinationState:
    def service(state: CircuitPhase) -> ServiceView:
        return ServiceView(
            window_s=60,
            calls=10,
            calls_per_s=0.2,
            errors=0,
            error_ratio=0.0,
            rejected=0,
            p50_ms=5.0,
            p95_ms=9.0,
            in_flight=0,
            last_error=None,
            circuit=CircuitView(state=state),
        )

    stuck = StuckCompensation("order-x", "release_stock", CompensationStatus.STUCK, 2, 10, "boom")
    return CoordinationState(
        schema_version=SCHEMA_VERSION,
        revision=7,
        as_of=NOW,
        run=0,
        reports=3,
        intake=Intake(paused=True, reason="drill", since=NOW),
        sagas=SagaCounts(
            4,
            1,
            {"PENDING": 3, "COMPENSATING": 1},
            {},
            {},
            active_by_type={"OrderWorkflow": 3, "ReturnWorkflow": 1},
            parked_by_type={"ReturnWorkflow": 2},
        ),
        throughput=Throughput(60, 5, 5, 0.08, {}),
        services={"payments": service(CircuitPhase.OPEN), "shipping": service(CircuitPhase.CLOSED)},
        dead_letters=[stuck],
        recent_terminals=[
            # Seen 1.5 s after it finished; an older one outside the window does not count.
            TerminalRecord("order-1", "COMPLETED", NOW - timedelta(seconds=3), NOW),
            TerminalRecord(
                "order-0", "COMPLETED", NOW - timedelta(minutes=9), NOW - timedelta(minutes=2)
            ),
            TerminalRecord(
                "order-2",
                "COMPLETED",
                NOW - timedelta(seconds=2),
                NOW - timedelta(seconds=0.5),
            ),
        ],
        workers=[
            WorkerSeen("payments 11@host", NOW - timedelta(seconds=40), 10),
            WorkerSeen("payments 12@host", NOW - timedelta(seconds=2), 10),  # the fresh one
            WorkerSeen("orders 13@host", NOW - timedelta(seconds=1), 10),
        ],
    )


def scrape(collector: metrics.CoordinationMetrics) -> dict[tuple[str, tuple[str, ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.values()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_coordination_state_becomes_gauges_at_scrape_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = metrics.CoordinationMetrics()
    assert scrape(collector) == {("sagaworks_coordination_up", ()): 0}
    collector.observe(coordination_state())
    monkeypatch.setattr(metrics, "datetime", _FrozenDatetime)
    got = scrape(collector)
    assert got[("sagaworks_coordination_up", ())] == 1
    assert got[("sagaworks_circuit_state", ("open", "payments"))] == 1
    assert got[("sagaworks_circuit_state", ("closed", "payments"))] == 0
    assert got[("sagaworks_circuit_state", ("closed", "shipping"))] == 1
    assert got[("sagaworks_dead_letters", ("stuck",))] == 1
    assert got[("sagaworks_dead_letters", ("failed",))] == 0
    assert got[("sagaworks_sagas_in_flight", ())] == 4
    assert got[("sagaworks_sagas_compensating", ())] == 1
    assert got[("sagaworks_sagas_active", ("OrderWorkflow",))] == 3
    assert got[("sagaworks_sagas_active", ("ReturnWorkflow",))] == 1
    assert got[("sagaworks_sagas_parked", ("ReturnWorkflow",))] == 2
    assert got[("sagaworks_intake_paused", ())] == 1
    assert got[("sagaworks_coordination_lag_seconds", ())] == 3.0
    # One series per role, from its freshest process: never a process ID in a label.
    assert got[("sagaworks_worker_report_age_seconds", ("payments",))] == 2.0
    assert got[("sagaworks_worker_report_age_seconds", ("orders",))] == 1.0
    collector.unreachable()
    assert scrape(collector)[("sagaworks_coordination_up", ())] == 0


class _FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz: object = None) -> _FrozenDatetime:  # type: ignore[override]
        return cls.fromtimestamp(NOW.timestamp(), UTC)


# --- HTTP requests (API middleware) -------------------------------------------------------------


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "limited":
            raise HTTPException(429, "slow down")
        return {"id": thing_id}

    app.add_middleware(RequestMetrics)
    return app


async def test_requests_are_counted_by_route_template_and_status(app: FastAPI) -> None:
    ok = {"method": "GET", "route": "/things/{thing_id}", "status": "200"}
    lost = {"method": "GET", "route": "unmatched", "status": "404"}
    limited = {"method": "GET", "route": "/things/{thing_id}", "status": "429"}
    before = [sample("sagaworks_http_requests_total", **labels) for labels in (ok, lost, limited)]
    before_limited = sample("sagaworks_rate_limited_total", route="/things/{thing_id}")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for thing in ("a", "b", "c"):
            assert (await client.get(f"/things/{thing}")).status_code == 200
        assert (await client.get("/no/such/path/order-123")).status_code == 404
        assert (await client.get("/things/limited")).status_code == 429
    after = [sample("sagaworks_http_requests_total", **labels) for labels in (ok, lost, limited)]
    assert after == [before[0] + 3, before[1] + 1, before[2] + 1]
    assert sample("sagaworks_rate_limited_total", route="/things/{thing_id}") == before_limited + 1
    assert (
        sample(
            "sagaworks_http_request_duration_seconds_count",
            method="GET",
            route="/things/{thing_id}",
        )
        >= before[0] + 4
    )
    page = generate_latest(metrics.REGISTRY).decode()
    assert 'route="/things/a"' not in page and "order-123" not in page


# --- the SDK's metrics on the worker's one endpoint ---------------------------------------------

SDK_TEXT = """\
# HELP temporal_request_total Count of client request successes by rpc name
# TYPE temporal_request_total counter
temporal_request_total{operation="PollActivityTaskQueue",service_name="temporal-core-sdk"} 7
# HELP temporal_activity_execution_latency_seconds Histogram of activity execution latencies
# TYPE temporal_activity_execution_latency_seconds histogram
temporal_activity_execution_latency_seconds_bucket{activity_type="reserve_stock",le="0.05"} 2
temporal_activity_execution_latency_seconds_bucket{activity_type="reserve_stock",le="+Inf"} 3
temporal_activity_execution_latency_seconds_sum{activity_type="reserve_stock"} 0.4
temporal_activity_execution_latency_seconds_count{activity_type="reserve_stock"} 3
"""


@pytest.fixture
def sdk_endpoint() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            body = SDK_TEXT.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_the_sdk_metrics_are_re_exposed_beside_the_apps(sdk_endpoint: str) -> None:
    registry = CollectorRegistry()
    registry.register(SdkMetrics(sdk_endpoint))
    page = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }
    assert samples[("sagaworks_sdk_metrics_up", ())] == 1
    operation = (("operation", "PollActivityTaskQueue"), ("service_name", "temporal-core-sdk"))
    assert samples[("temporal_request_total", operation)] == 7
    bucket = (("activity_type", "reserve_stock"), ("le", "0.05"))
    assert samples[("temporal_activity_execution_latency_seconds_bucket", bucket)] == 2
    assert "# TYPE temporal_activity_execution_latency_seconds histogram" in page


def test_an_unreadable_sdk_endpoint_says_so_and_costs_nothing_else() -> None:
    registry = CollectorRegistry()
    registry.register(SdkMetrics("http://127.0.0.1:9/metrics"))  # discard port: refused
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    assert [(f.name, f.samples[0].value) for f in families] == [("sagaworks_sdk_metrics_up", 0)]


def test_each_worker_role_has_its_own_port_and_zero_turns_them_off() -> None:
    settings = Settings(metrics_port_base=9100)
    ports = {role: metrics_port(settings, role) for role in metrics_urls(settings)}
    assert ports == {
        "orders": 9101,
        "inventory": 9102,
        "payments": 9103,
        "shipping": 9104,
        "notifications": 9105,
    }
    assert metrics_urls(settings)["payments"] == "http://127.0.0.1:9103/metrics"
    assert metrics_urls(Settings(metrics_port_base=0)) == {}
