"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from temporalio.service import RPCError

from api.deps import ClientDep, SettingsDep
from api.errors import TemporalUnavailable, error_responses
from api.schemas import Health
from api.temporal_calls import bounded

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: Temporal answers",
    responses=error_responses({503: "Temporal is not reachable"}, validates=False, auth=None),
)
async def readyz(client: ClientDep, settings: SettingsDep) -> Health:
    try:
        serving = await bounded(settings, lambda t: client.service_client.check_health(timeout=t))
    except RPCError as err:
        raise TemporalUnavailable(f"Temporal health check failed: {err.message}") from err
    if not serving:
        raise TemporalUnavailable("Temporal is up but its workflow service is not serving")
    return Health()
