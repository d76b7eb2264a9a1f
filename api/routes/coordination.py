"""Coordination endpoints (DESIGN §3, §5): the live system state, its stream, operator actions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.deps import CoordinationDep, SettingsDep
from api.errors import ApiError, error_responses
from api.schemas import OperateIn
from workflows.coordination_models import CoordinationState, OperateRequest

router = APIRouter(prefix="/coordination", tags=["coordination"])

NOT_RUNNING = "the coordinator is not running yet, or Temporal did not answer in time"
POLL_S = 0.5


@router.get(
    "",
    summary="The live, system-wide coordination state",
    responses=error_responses({503: NOT_RUNNING}, validates=False),
)
async def get_state(view: CoordinationDep) -> CoordinationState:
    return await view.state()


@router.get(
    "/stream",
    summary="The coordination state as server-sent events, pushed when it changes",
    response_class=EventSourceResponse,
    description=(
        "Sends `event: state` (JSON data, `id` = revision) whenever the state changes, "
        "`event: unavailable` while the coordinator cannot be read, and a `: heartbeat` "
        "comment when nothing changed for `SAGAWORKS_SSE_HEARTBEAT_S` seconds."
    ),
)
async def stream_state(
    request: Request, view: CoordinationDep, settings: SettingsDep
) -> AsyncIterable[ServerSentEvent]:
    sent_revision: int | None = None
    last_sent = time.monotonic()
    while not await request.is_disconnected():
        event: ServerSentEvent | None = None
        try:
            state = await view.state()
            if state.revision != sent_revision:
                sent_revision = state.revision
                event = ServerSentEvent(
                    event="state", id=str(state.revision), data=jsonable_encoder(state)
                )
        except ApiError as err:
            if sent_revision != -1:
                sent_revision = -1
                event = ServerSentEvent(event="unavailable", data={"detail": err.detail})
        if event is None and time.monotonic() - last_sent >= settings.sse_heartbeat_s:
            event = ServerSentEvent(comment="heartbeat")
        if event is not None:
            last_sent = time.monotonic()
            yield event
        await asyncio.sleep(POLL_S)


@router.post(
    "/operate",
    summary="Operator action: trip or reset a circuit, pause or resume intake",
    responses=error_responses(
        {422: "unknown action, or a service the action does not take", 503: NOT_RUNNING}
    ),
)
async def operate(body: OperateIn, view: CoordinationDep) -> CoordinationState:
    return await view.operate(OperateRequest(body.action, body.service, body.reason))
