"""The API's observability: `GET /metrics` (operators only), request metrics, JSON logs.

Prometheus scrapes the API with an operator key (`authorization: credentials_file:` in
observability/prometheus.yml). Each scrape first refreshes the coordination gauges from
the API's one-second cache of the coordinator's state, so they are never older than that.
"""

from __future__ import annotations

import time
from contextlib import suppress

import structlog
from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.runtime import Runtime, TelemetryConfig

from api.auth import OperatorDep
from api.deps import CoordinationDep, SettingsDep
from api.errors import OPERATOR_ANSWERS, ApiError, error_responses
from api.order_gateway import ORDER_ID_RE
from common import metrics
from common.logging import configure_logging
from common.settings import Settings
from common.telemetry import core_logging

router = APIRouter(tags=["observability"])

ORDER_PATH_PREFIX = "/orders/"


@router.get(
    "/metrics",
    summary="Prometheus metrics of the API and the coordination state (text format 0.0.4)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **error_responses({}, validates=False, auth=OPERATOR_ANSWERS),
    },
)
async def get_metrics(
    operator: OperatorDep, view: CoordinationDep, settings: SettingsDep
) -> Response:
    if settings.coordination_enabled:
        # A coordinator that cannot be read sets sagaworks_coordination_up to 0; the rest
        # of the page still answers, so Prometheus sees the API itself as up.
        with suppress(ApiError):
            await view.state()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Counts every HTTP answer by route template and status, and times it.

    The route template (`/orders/{order_id}`), not the path, is the label: the router
    leaves the matched route in the scope. A path no route matches is `unmatched`, so
    scanners cannot grow the label set. An order ID in the path is bound for the logs of
    the request (common/logging.py), never used as a label.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            with structlog.contextvars.bound_contextvars(**_log_context(scope["path"])):
                await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or metrics.UNMATCHED_ROUTE
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
            if status == 429:
                metrics.RATE_LIMITED.labels(route).inc()


def _log_context(path: str) -> dict[str, str]:
    if not path.startswith(ORDER_PATH_PREFIX):
        return {}
    candidate = path[len(ORDER_PATH_PREFIX) :].split("/", 1)[0]
    return {"order_id": candidate} if ORDER_ID_RE.match(candidate) else {}


def install(app: FastAPI, settings: Settings) -> None:
    """Call last in create_app: the middleware must be outermost to see every answer.

    Logging is set up here, at import under uvicorn, so that uvicorn's own first lines
    ("Started server process") are JSON too when asked.
    """
    configure_logging("api", settings)
    if settings.log_format == "json":
        # The API's client runs on the default runtime: its core lines go through logging.
        runtime = Runtime(telemetry=TelemetryConfig(logging=core_logging(settings)))
        Runtime.set_default(runtime, error_if_already_set=False)
    metrics.register_coordination()
    app.include_router(router)
    app.add_middleware(RequestMetrics)
