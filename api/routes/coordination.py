"""Coordination endpoints: the live system state, its stream, operator actions.

ARCHITECTURE.md, Coordination State Layer and HTTP contract.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.auth import OperatorDep
from api.deps import CoordinationDep, SettingsDep
from api.errors import OPERATOR_ANSWERS, ApiError, RateLimited, error_responses
from api.schemas import CircuitActionIn, OperateIn
from api.streams import StreamSlots
from workers.identity import public_state
from workflows.coordination_models import CoordinationState, OperateRequest

router = APIRouter(prefix="/coordination", tags=["coordination"])

NOT_RUNNING = "the coordinator is not running yet, or Temporal did not answer in time"
POLL_S = 0.5


@router.get(
    "",
    summary="The live, system-wide coordination state",
    responses=error_responses({503: NOT_RUNNING}, auth=OPERATOR_ANSWERS),
)
async def get_state(
    operator: OperatorDep,
    view: CoordinationDep,
    # Workers show as `payments-1`; their host and pid only when asked (workers/identity.py).
    details: Annotated[bool, Query(description="name workers by pid@host")] = False,
) -> CoordinationState:
    state = await view.state()
    return state if details else public_state(state)


async def _stream_slot(
    request: Request, operator: OperatorDep, settings: SettingsDep
) -> AsyncIterator[None]:
    # A dependency, not the stream's own body: the refusal must come before the 200 starts.
    slots: StreamSlots = request.app.state.stream_slots
    if not slots.acquire(operator.scope):
        raise RateLimited(
            f"at most {settings.stream_max_per_principal} open streams per principal; "
            "close one first",
            retry_after=int(POLL_S * 10),
        )
    try:
        yield
    finally:
        slots.release(operator.scope)


@router.get(
    "/stream",
    summary="The coordination state as server-sent events, pushed when it changes",
    response_class=EventSourceResponse,
    description=(
        "Sends `event: state` (JSON data, `id` = revision) whenever the state changes, "
        "`event: unavailable` while the coordinator cannot be read, and a `: heartbeat` "
        "comment when nothing changed for `SAGAWORKS_SSE_HEARTBEAT_S` seconds. "
        "Each principal may hold `SAGAWORKS_STREAM_MAX_PER_PRINCIPAL` streams at once "
        "(429 beyond), and a stream ends after `SAGAWORKS_STREAM_MAX_LIFETIME_S` seconds "
        "with `event: reconnect`; an EventSource reconnects on its own."
    ),
    responses=error_responses(
        {429: "too many requests, or too many open streams for this principal"},
        validates=False,
        auth=OPERATOR_ANSWERS,
    ),
)
async def stream_state(
    request: Request,
    view: CoordinationDep,
    settings: SettingsDep,
    _slot: Annotated[None, Depends(_stream_slot)],
) -> AsyncIterable[ServerSentEvent]:
    async for event in _events(request, view, settings):
        yield event


async def _events(
    request: Request, view: CoordinationDep, settings: SettingsDep
) -> AsyncIterable[ServerSentEvent]:
    sent_revision: int | None = None
    last_sent = started = time.monotonic()
    while not await request.is_disconnected():
        if time.monotonic() - started >= settings.stream_max_lifetime_s:
            # Bounded lifetime: a stream never pins a connection (and a slot) forever.
            yield ServerSentEvent(event="reconnect", data={"detail": "stream lifetime reached"})
            return
        event: ServerSentEvent | None = None
        try:
            state = public_state(await view.state())
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
        {422: "unknown action, or a service the action does not take", 503: NOT_RUNNING},
        auth=OPERATOR_ANSWERS,
        body=True,
    ),
)
async def operate(
    body: OperateIn, operator: OperatorDep, view: CoordinationDep
) -> CoordinationState:
    service = body.service.value if isinstance(body, CircuitActionIn) else None
    return public_state(await view.operate(OperateRequest(body.action, service, body.reason)))
