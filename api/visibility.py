"""Listing orders from Temporal visibility, one page per request."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

from temporalio.client import Client, WorkflowExecution

from api.errors import UnprocessableRequest
from api.sagas import bounded
from api.schemas import OrderSummary
from common.settings import Settings
from workflows.models import FailureReason, OrderState
from workflows.order import CUSTOMER_ID, FAILURE_REASON, ORDER_STATUS

_CHECK_BYTES = 8


def list_query(status: OrderState | None, customer_id: str | None) -> str:
    clauses = ["WorkflowType = 'OrderWorkflow'"]
    if status is not None:
        clauses.append(f"{ORDER_STATUS.name} = {_quote(status.value)}")
    if customer_id is not None:
        clauses.append(f"{CUSTOMER_ID.name} = {_quote(customer_id)}")
    return " AND ".join(clauses)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


# Temporal's token is opaque and a garbled one makes the server retry and then fail with an
# internal error. A short check digest rejects garbled tokens, and tokens carried over to a
# different filter, with a 422 before they reach Temporal.
def _check(query: str, raw: bytes) -> bytes:
    return hashlib.sha256(query.encode() + b"\0" + raw).digest()[:_CHECK_BYTES]


def encode_page_token(query: str, raw: bytes | None) -> str | None:
    if not raw:
        return None
    return base64.urlsafe_b64encode(_check(query, raw) + raw).decode().rstrip("=")


def decode_page_token(query: str, token: str | None) -> bytes | None:
    if token is None:
        return None
    try:
        blob = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as err:
        raise UnprocessableRequest("page_token is not a token this API issued") from err
    check, raw = blob[:_CHECK_BYTES], blob[_CHECK_BYTES:]
    if not raw or not hmac.compare_digest(check, _check(query, raw)):
        raise UnprocessableRequest("page_token is not a token this API issued for these filters")
    return raw


async def list_orders(
    client: Client,
    settings: Settings,
    *,
    status: OrderState | None,
    customer_id: str | None,
    page_size: int,
    page_token: str | None,
) -> tuple[list[OrderSummary], str | None]:
    query = list_query(status, customer_id)
    raw_token = decode_page_token(query, page_token)

    async def one_page(rpc_timeout: timedelta) -> tuple[Sequence[WorkflowExecution], bytes | None]:
        pages = client.list_workflows(
            query, page_size=page_size, next_page_token=raw_token, rpc_timeout=rpc_timeout
        )
        await pages.fetch_next_page()
        return pages.current_page or [], pages.next_page_token

    executions, next_raw = await bounded(settings, one_page)
    return [_summary(e) for e in executions], encode_page_token(query, next_raw)


def _summary(execution: WorkflowExecution) -> OrderSummary:
    attributes = execution.typed_search_attributes
    state = attributes.get(ORDER_STATUS)
    reason = attributes.get(FAILURE_REASON)
    return OrderSummary(
        order_id=execution.id,
        customer_id=attributes.get(CUSTOMER_ID),
        status=_enum(OrderState, state),
        failure_reason=_enum(FailureReason, reason),
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


E = TypeVar("E", bound=StrEnum)


def _enum(kind: type[E], value: str | None) -> E | None:
    # Visibility is written by workflow code; an unknown value must not fail the whole list.
    return kind(value) if value is not None and value in kind.__members__ else None
