"""OpenTelemetry tracing for every process, switched on by the standard `OTEL_*` variables.

With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, a process
exports its spans over OTLP/HTTP protobuf through a batch processor, as `sagaworks-<role>`
unless `OTEL_SERVICE_NAME` says otherwise. Unset, nothing is installed: no tracer provider,
no Temporal interceptor, no HTTP middleware, so tracing costs nothing when it is off.

Temporal's side is the SDK's `TracingInterceptor` on the client (workers built on that
client inherit it): it carries the context in Temporal headers from the API's start call
through the workflow into every activity, in whichever process runs it. Its workflow spans
are made outside the sandbox and only when not replaying, so replays add no spans.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from temporalio.contrib.opentelemetry import TracingInterceptor

if TYPE_CHECKING:
    from fastapi import FastAPI
    from temporalio.client import Interceptor

    from common.settings import Settings

log = logging.getLogger(__name__)

# The SDK's interceptor puts the workflow ID on every span it makes.
WORKFLOW_ID_ATTRIBUTE = "temporalWorkflowID"
# Probes, scrapes and the live stream would each be a trace of their own, many a minute.
DEFAULT_EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$,/coordination/stream$"


def enabled() -> bool:
    """Tracing is on when an OTLP endpoint is set and the standard switches don't say no."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    return bool(endpoint) and not disabled and exporter != "none"


def service_name(role: str) -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or f"sagaworks-{role}"


class SkipCoordination(Sampler):
    """Drop traces that start with a call to the coordinator; sample the rest as configured.

    Every worker reports to the coordinator each second and refreshes from it: traced, that
    chatter would bury the orders' traces (and the coordinator, which lives for ever through
    continue-as-new, would grow one endless trace). Dropping the root drops what hangs under
    it, since the default samplers follow the parent. A coordinator call made inside a
    traced request (the intake check of a POST /orders) stays in that request's trace.
    """

    def __init__(self, coordinator_workflow_id: str, delegate: Sampler) -> None:
        self._coordinator_workflow_id = coordinator_workflow_id
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        is_root = not trace.get_current_span(parent_context).get_span_context().is_valid
        if (
            is_root
            and attributes
            and attributes.get(WORKFLOW_ID_ATTRIBUTE) == self._coordinator_workflow_id
        ):
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"SkipCoordination{{{self._delegate.get_description()}}}"


@dataclass(frozen=True)
class Tracing:
    provider: TracerProvider
    interceptor: TracingInterceptor


def build(role: str, coordinator_workflow_id: str) -> Tracing | None:
    """The tracer provider and Temporal interceptor for one process; None when tracing is off."""
    if not enabled():
        return None
    # Imported here: a process with tracing off never loads the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        # OTEL_RESOURCE_ATTRIBUTES still applies; service.name is per process.
        resource=Resource.create({SERVICE_NAME: service_name(role)}),
        # OTEL_TRACES_SAMPLER / _ARG choose the sampler, as the SDK would on its own.
        sampler=SkipCoordination(coordinator_workflow_id, _get_from_env_or_default()),
    )
    # The exporter reads endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*;
    # the processor its queue and delay from OTEL_BSP_*.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    interceptor = TracingInterceptor(provider.get_tracer("temporalio.contrib.opentelemetry"))
    return Tracing(provider, interceptor)


_active: Tracing | None = None


def configure(role: str, settings: Settings) -> Tracing | None:
    """Set this process up once, before it connects to Temporal (the client takes the
    interceptor). The provider also becomes the global one, so spans made anywhere in the
    process (in activity code, on the thread pool too) join the same trace and export."""
    global _active
    if _active is None:
        _active = build(role, settings.coordinator_workflow_id)
        if _active is not None:
            trace.set_tracer_provider(_active.provider)
            log.info("tracing on: exporting spans as %s", service_name(role))
    return _active


def interceptors() -> list[Interceptor]:
    """For `Client.connect`: the tracing interceptor when tracing is configured, else none."""
    return [_active.interceptor] if _active is not None else []


def shutdown() -> None:
    """Export what is still queued. Workers end with `os._exit`, which skips atexit hooks."""
    if _active is not None:
        _active.provider.shutdown()


def flush() -> None:
    """Export what is queued now. For the API's shutdown: uvicorn re-raises SIGTERM once it
    has stopped, so the provider's own atexit hook never runs."""
    if _active is not None:
        _active.provider.force_flush()


def instrument_app(app: FastAPI, settings: Settings) -> None:
    """Trace the API's requests, each the root of its trace, when tracing is on."""
    tracing = configure("api", settings)
    if tracing is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    own_list = any(
        os.environ.get(name)
        for name in ("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
    )
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracing.provider,
        # None: the instrumentation reads the standard variables itself.
        excluded_urls=None if own_list else DEFAULT_EXCLUDED_URLS,
        # One span per request, not one more per ASGI message.
        exclude_spans=["receive", "send"],
    )


def current_trace_id() -> str | None:
    """The current trace's ID as 32 hex digits, or None when no sampled trace is current."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return trace.format_trace_id(context.trace_id)
