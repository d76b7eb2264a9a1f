"""FastAPI dependencies, as `Annotated` aliases (ARCHITECTURE.md, House style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from api.coordination import CoordinationView
from api.idempotency import IdempotencyLedger
from common.settings import Settings, get_settings


def get_client(request: Request) -> Client:
    # Created once in the lifespan (api.main); lazy, so it exists even while Temporal is down.
    client: Client = request.app.state.temporal_client
    return client


ClientDep = Annotated[Client, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_coordination(request: Request) -> CoordinationView:
    view: CoordinationView = request.app.state.coordination
    return view


CoordinationDep = Annotated[CoordinationView, Depends(get_coordination)]


def get_idempotency(request: Request) -> IdempotencyLedger:
    # Made once per API process in create_app, on the gateway database's engine.
    ledger: IdempotencyLedger = request.app.state.idempotency
    return ledger


IdempotencyDep = Annotated[IdempotencyLedger, Depends(get_idempotency)]
