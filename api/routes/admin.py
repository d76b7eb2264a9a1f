"""Chaos-drill endpoints: inject or clear a service's faults (stored in its own database).

Mounted only when `SAGAWORKS_CHAOS_ENABLED` is set (api/main.py); otherwise they answer 404.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum

from fastapi import APIRouter, Response

from api.auth import OperatorDep
from api.coordination import configure_fault
from api.deps import ClientDep, SettingsDep
from api.errors import OPERATOR_ANSWERS, error_responses
from api.schemas import FaultIn, FaultOut
from common.settings import SERVICES
from workflows.models import ConfigureFaultInput

router = APIRouter(prefix="/admin/faults", tags=["admin"])

Service = StrEnum("Service", {name: name for name in SERVICES})  # type: ignore[misc]
NO_WORKER = "the service's worker did not apply the change in time (is it running?)"


@router.put(
    "/{service}",
    summary="Inject faults into a service: a share of failing calls and added latency",
    responses=error_responses({503: NO_WORKER}, auth=OPERATOR_ANSWERS, body=True),
)
async def put_fault(
    service: Service,
    body: FaultIn,
    operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
) -> FaultOut:
    change = ConfigureFaultInput(str(service), **body.model_dump())
    state = await configure_fault(client, settings, change)
    return FaultOut(**dataclasses.asdict(state))


@router.delete(
    "/{service}",
    status_code=204,
    summary="Clear a service's injected faults",
    responses=error_responses({503: NO_WORKER}, auth=OPERATOR_ANSWERS),
)
async def delete_fault(
    service: Service, operator: OperatorDep, client: ClientDep, settings: SettingsDep
) -> Response:
    await configure_fault(client, settings, ConfigureFaultInput(str(service), clear=True))
    return Response(status_code=204)
