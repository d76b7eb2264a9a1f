"""FastAPI dependencies, as `Annotated` aliases (DESIGN §6)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from common.settings import Settings, get_settings


def get_client(request: Request) -> Client:
    # Created once in the lifespan (api.main); lazy, so it exists even while Temporal is down.
    client: Client = request.app.state.temporal_client
    return client


ClientDep = Annotated[Client, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
