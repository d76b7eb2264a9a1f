"""Tracing: one trace per order across the real processes; nothing at all when off.

ARCHITECTURE.md, Observability.

The end-to-end test runs the real stack (dev server, five worker processes, uvicorn) with
`OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a loopback OTLP receiver, and a batch delay longer
than the test, so every span it checks arrived because its process flushed on shutdown.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import SecretStr
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from common import tracing
from common.binaries import find_binary
from common.settings import Settings
from common.temporal import connect
from tests.observability.otlp_receiver import ReceivedSpan, Receiver, otlp_receiver
from tests.support.api_client import Api, order_body, system_on_dev_server
from workflows.order import AUTHORIZE, CAPTURE, END_HOLD, HOLD, NOTIFY, RESERVE, SHIP

OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
)

# connect() encrypts payloads (common/codec.py), so it needs a key ring; any will do here.
CODEC_KEYS = SecretStr(json.dumps({"test": base64.b64encode(bytes(32)).decode()}))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No OTEL_* variables from the caller's shell, and no process-wide tracing left over."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracing, "_active", None)
    yield monkeypatch


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as running:
        yield running


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {span.span_id: span for span in spans}


def chain(span: ReceivedSpan, index: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    """The span and its ancestors up to the root; fails on a parent that never arrived."""
    path = [span]
    while path[-1].parent_span_id is not None:
        parent = index.get(path[-1].parent_span_id)
        names = " <- ".join(f"{s.service}:{s.name}" for s in path)
        assert parent is not None, f"broken parent link: {names} <- (missing)"
        path.append(parent)
    return path


# --- off by default ------------------------------------------------------------------------------


async def test_without_an_endpoint_nothing_is_installed(clean_env: pytest.MonkeyPatch) -> None:
    assert tracing.build("orders", "coordinator") is None
    assert tracing.configure("orders", Settings()) is None
    assert tracing.interceptors() == []
    # No global provider was set: spans made anywhere stay non-recording no-ops.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    client = await connect(Settings(codec_keys=CODEC_KEYS), lazy=True)
    assert client.config()["interceptors"] == []
    tracing.shutdown()  # harmless when off


@pytest.mark.parametrize(
    "switch", [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")]
)
def test_the_standard_switches_turn_it_off(
    clean_env: pytest.MonkeyPatch, switch: tuple[str, str]
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    clean_env.setenv(*switch)
    assert tracing.build("orders", "coordinator") is None


# --- on ------------------------------------------------------------------------------------------


async def test_with_an_endpoint_the_client_gets_the_interceptor(
    clean_env: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    built = tracing.build("payments", "coordinator")
    assert built is not None
    try:
        # As configure() leaves it, without replacing this test process's global provider.
        clean_env.setattr(tracing, "_active", built)
        client = await connect(Settings(codec_keys=CODEC_KEYS), lazy=True)
        assert client.config()["interceptors"] == [built.interceptor]
        assert isinstance(built.interceptor, TracingInterceptor)
        with built.provider.get_tracer("tests").start_as_current_span("probe"):
            trace_id = tracing.current_trace_id()
        assert trace_id is not None and re.fullmatch(r"[0-9a-f]{32}", trace_id)
        assert built.provider.force_flush()
        [span] = receiver.snapshot()
        assert (span.name, span.service, span.trace_id) == ("probe", "sagaworks-payments", trace_id)
    finally:
        built.provider.shutdown()


def test_otel_service_name_overrides_the_role(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert tracing.service_name("shipping") == "sagaworks-shipping"
    clean_env.setenv("OTEL_SERVICE_NAME", "checkout-shipping")
    built = tracing.build("shipping", "coordinator")
    assert built is not None
    try:
        assert built.provider.resource.attributes["service.name"] == "checkout-shipping"
    finally:
        built.provider.shutdown()


def test_coordinator_chatter_starts_no_trace(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    built = tracing.build("orders", "the-coordinator")
    assert built is not None
    tracer = built.provider.get_tracer("tests")
    at_coordinator = {tracing.WORKFLOW_ID_ATTRIBUTE: "the-coordinator"}
    try:
        # A worker's report, on its own: dropped, and so is what hangs under it.
        with tracer.start_as_current_span("SignalWithStartWorkflow:x", attributes=at_coordinator):
            assert not trace.get_current_span().is_recording()
            with tracer.start_as_current_span("HandleSignal:report") as below:
                assert not below.is_recording()
        # An order's own calls are traced, and so is a coordinator call inside a request.
        order = {tracing.WORKFLOW_ID_ATTRIBUTE: "order-1"}
        with tracer.start_as_current_span("StartWorkflow:x", attributes=order) as started:
            assert started.is_recording()
        with tracer.start_as_current_span("POST /orders") as request:
            assert request.is_recording()
            with tracer.start_as_current_span(
                "QueryWorkflow:state", attributes=at_coordinator
            ) as q:
                assert q.is_recording()
    finally:
        built.provider.shutdown()


@workflow.defn(sandboxed=False)
class TracedWorkflow:
    @workflow.run
    async def run(self, note: str) -> str:
        result: str = await workflow.execute_activity(
            "traced_step", note, start_to_close_timeout=timedelta(seconds=30)
        )
        return result


async def test_spans_parent_into_sync_activities_on_the_thread_pool(
    clean_env: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    """Service workers run their activities on a ThreadPoolExecutor (workers/service.py):
    the activity's span, and any span made in the activity's code, stay in the caller's trace."""
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    built = tracing.build("inventory", "coordinator")
    assert built is not None
    clean_env.setattr(tracing, "_active", built)
    tracer = built.provider.get_tracer("tests")

    @activity.defn(name="traced_step")
    def traced_step(note: str) -> str:
        with tracer.start_as_current_span("inside-activity"):
            return threading.current_thread().name

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server")
    )
    try:
        async with env:
            # Like connect(): the client carries the interceptor, the worker inherits it.
            client = Client(
                env.client.service_client,
                namespace=env.client.namespace,
                interceptors=tracing.interceptors(),
            )
            queue = f"traced-{uuid.uuid4().hex[:8]}"
            with ThreadPoolExecutor(max_workers=2) as pool:
                async with Worker(
                    client,
                    task_queue=queue,
                    workflows=[TracedWorkflow],
                    activities=[traced_step],
                    activity_executor=pool,
                ):
                    with tracer.start_as_current_span("request"):
                        thread = await client.execute_workflow(
                            TracedWorkflow.run, "x", id=f"traced-{queue}", task_queue=queue
                        )
        assert thread != threading.current_thread().name  # it did run on the pool
        assert built.provider.force_flush()
    finally:
        built.provider.shutdown()

    spans = receiver.snapshot()
    [inside] = [s for s in spans if s.name == "inside-activity"]
    path = [s.name for s in chain(inside, by_id(spans))]
    assert path == [
        "inside-activity",
        "RunActivity:traced_step",
        "StartActivity:traced_step",
        "StartWorkflow:TracedWorkflow",
        "request",
    ]
    assert {s.trace_id for s in spans} == {inside.trace_id}


async def retried_workflow_tasks(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    retried = (
        EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
    )
    return sum(1 for event in history.events if event.event_type in retried)


async def finished(api: Api, order_id: str) -> dict[str, Any]:
    """The order once its saga has ended, read through the API.

    Waits on Temporal, not by polling GET: a GET whose describe saw the saga running and whose
    query then reached it closed makes an uncached worker replay the whole history, and the
    SDK core stops counting that replay as one at the terminal event, so the contrib
    interceptor emits the CompleteWorkflow span a second time. That is a read racing the end
    (only with the workflow cache off), not a saga running twice; the GET after the end reads
    the result from history and runs no workflow code.
    """
    await api.temporal.get_workflow_handle(order_id).result()
    body = await api.wait_for(order_id, "COMPLETED")
    return body


# --- the real processes --------------------------------------------------------------------------

SERVICE_OF_ACTIVITY = {
    RESERVE: "sagaworks-inventory",
    AUTHORIZE: "sagaworks-payments",
    SHIP: "sagaworks-shipping",
    CAPTURE: "sagaworks-payments",
    NOTIFY: "sagaworks-notifications",
}
# An order held for approval also takes, then frees, its slot in the payments hold ledger.
HELD_ACTIVITIES = {HOLD: "sagaworks-payments", END_HOLD: "sagaworks-payments"}


@pytest.mark.e2e
@pytest.mark.parametrize("cache", ["cached", "uncached"])
async def test_one_order_is_one_trace_across_the_processes(
    tmp_path: Path, receiver: Receiver, cache: str
) -> None:
    extra_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        # Longer than the whole test: what arrives was flushed as each process shut down.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
        # Uncached, every workflow task replays the saga from the start: replays add no spans.
        "SAGAWORKS_MAX_CACHED_WORKFLOWS": "0" if cache == "uncached" else "1000",
    }
    async with system_on_dev_server(tmp_path, extra_env) as api:
        assert receiver.requests == 0  # nothing exported early; the flush below is the test
        order_id = await api.place(order_body(sku="SKU-1", quantity=1))
        # Above the approval threshold: the saga waits for an operator, then carries on.
        held_id = await api.place(order_body(sku="SKU-3", quantity=1))
        done = await finished(api, order_id)
        await api.wait_for(held_id, "AWAITING_APPROVAL")
        approved = await api.http.post(f"/orders/{held_id}/approve")
        assert approved.status_code == 200, approved.text
        held = await finished(api, held_id)
        retried = {
            oid: await retried_workflow_tasks(api.temporal, oid) for oid in (order_id, held_id)
        }
    spans = receiver.snapshot()
    index = by_id(spans)

    for body, activities in (
        (done, SERVICE_OF_ACTIVITY),
        (held, SERVICE_OF_ACTIVITY | HELD_ACTIVITIES),
    ):
        trace_id = body["trace_id"]
        assert isinstance(trace_id, str) and re.fullmatch(r"[0-9a-f]{32}", trace_id), body
        in_trace = [s for s in spans if s.trace_id == trace_id]
        services = {s.service for s in in_trace}
        assert {"sagaworks-api", "sagaworks-orders", *activities.values()} <= services
        ran = {s.name.removeprefix("RunActivity:"): s for s in in_trace if "RunActivity:" in s.name}
        saga = Counter(
            s.name
            for s in in_trace
            if s.name.startswith(("RunWorkflow:", "StartActivity:", "CompleteWorkflow:"))
        )
        assert len(saga) == len(activities) + 2, saga
        # Each once, however often it was replayed. Only a workflow task that failed or timed
        # out (a busy machine) runs its code live twice, and may repeat that task's spans.
        repeats = sum(saga.values()) - len(saga)
        assert repeats <= retried[body["order_id"]], (saga, retried)
        assert set(ran) == set(activities), sorted(ran)
        for name, span in ran.items():
            assert span.service == activities[name]
            assert span.attributes["temporalWorkflowID"] == body["order_id"]
            path = chain(span, index)
            # activity <- the orders worker's StartActivity <- the API's start call <- the POST
            root = path[-1]
            assert (root.service, root.name) == ("sagaworks-api", "POST /orders"), path
            assert any(s.service == "sagaworks-orders" for s in path), path
            assert {s.trace_id for s in path} == {trace_id}

    # Coordination reports (each worker, every second) made no traces of their own.
    assert not [s for s in spans if s.name.startswith(("SignalWithStart", "HandleSignal"))]
