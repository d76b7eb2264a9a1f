"""The FastAPI gateway: `uvicorn api.main:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from api.auth import Gatekeeper
from api.body_limit import BodyLimitMiddleware
from api.coordination import CoordinationView
from api.errors import install_error_handlers
from api.hosts import TrustedHosts
from api.idempotency import IdempotencyLedger
from api.routes import (
    admin,
    codec,
    coordination,
    dashboard,
    docs,
    health,
    metrics,
    orders,
    returns,
    session,
)
from api.streams import StreamSlots
from common import tracing
from common.codec import exit_unless_configured
from common.settings import Settings, get_settings
from common.temporal import connect


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Lazy: the API starts (and /readyz says 503) while Temporal is still coming up.
    settings: Settings = app.state.settings
    exit_unless_configured(settings, "api")  # one clear line, not uvicorn's traceback
    app.state.temporal_client = await connect(settings, lazy=True)
    app.state.coordination = CoordinationView(app.state.temporal_client, settings)
    yield
    tracing.flush()  # the last requests' spans, before uvicorn exits


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="sagaworks",
        summary="Durable checkout sagas on Temporal",
        version="0.1.0",
        lifespan=lifespan,
        # The documentation needs a principal too (see api/routes/docs.py).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.gatekeeper = Gatekeeper(settings)
    app.state.idempotency = IdempotencyLedger(
        app.state.gatekeeper.keys.engine, timedelta(days=settings.idempotency_key_ttl_days)
    )
    app.state.stream_slots = StreamSlots(settings.stream_max_per_principal)
    install_error_handlers(app)
    app.include_router(orders.router)
    app.include_router(returns.router)
    app.include_router(coordination.router)
    if settings.chaos_enabled:
        app.include_router(admin.router)
    app.include_router(session.router)
    app.include_router(dashboard.router)
    app.include_router(docs.router)
    codec.install(app, settings)  # /codec, with CORS for the Web UI's origin only
    app.include_router(health.router)
    # Outermost last: the host check, then the body limit, run before anything else.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(TrustedHosts, allowed_hosts=settings.trusted_hosts)
    metrics.install(app, settings)  # /metrics, request metrics (outermost), JSON logs
    tracing.instrument_app(app, settings)  # only with OTEL_EXPORTER_OTLP_ENDPOINT set
    return app


app = create_app()
