"""The FastAPI gateway: `uvicorn api.main:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.coordination import CoordinationView
from api.errors import install_error_handlers
from api.routes import admin, coordination, health, orders
from common.settings import get_settings
from common.temporal import connect


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Lazy: the API starts (and /readyz says 503) while Temporal is still coming up.
    settings = get_settings()
    app.state.temporal_client = await connect(settings, lazy=True)
    app.state.coordination = CoordinationView(app.state.temporal_client, settings)
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="sagaworks",
        summary="Durable checkout sagas on Temporal",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(orders.router)
    app.include_router(coordination.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    return app


app = create_app()
