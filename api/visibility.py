"""Listing sagas from Temporal visibility, one page per request, per saga type.

Each saga type has its own `SagaIndex`: its workflow type and the search attributes it
keeps current (workflows/search_attributes.py). Page tokens are checked against the
query they were issued for, whatever the type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

from temporalio.client import Client, WorkflowExecution
from temporalio.common import SearchAttributeKey

from api.errors import OrderConflict, UnprocessableRequest
from api.schemas import OrderSummary
from api.temporal_calls import bounded
from common.settings import Settings
from workflows.models import FailureReason, OrderState
from workflows.search_attributes import CUSTOMER_ID, FAILURE_REASON, ORDER_STATUS

_CHECK_BYTES = 8
T = TypeVar("T")


@dataclass(frozen=True)
class SagaIndex:
    """How one saga type is found in visibility."""

    workflow_type: str
    status: SearchAttributeKey[str]

    def query(
        self,
        status: StrEnum | None = None,
        customer_id: str | None = None,
        owner: str | None = None,
        **keywords: str,
    ) -> str:
        """The visibility query; `owner` (a customer principal's ID) is always ANDed in.

        `keywords` are further keyword search attributes by name (e.g. OrderId).
        """
        clauses = [f"WorkflowType = {_quote(self.workflow_type)}"]
        if status is not None:
            clauses.append(f"{self.status.name} = {_quote(status.value)}")
        for customer in dict.fromkeys(c for c in (owner, customer_id) if c is not None):
            clauses.append(f"{CUSTOMER_ID.name} = {_quote(customer)}")
        clauses += [f"{name} = {_quote(value)}" for name, value in keywords.items()]
        return " AND ".join(clauses)


ORDERS = SagaIndex("OrderWorkflow", ORDER_STATUS)


def list_query(status: OrderState | None, customer_id: str | None, owner: str | None = None) -> str:
    """The orders' visibility query (see `SagaIndex.query`)."""
    return ORDERS.query(status, customer_id, owner)


async def check_hold_cap(client: Client, settings: Settings, customer_id: str) -> None:
    """Refuse a new order while this customer has the most orders waiting for approval.

    An order held for approval holds its stock, so without a cap one customer could lock
    up the catalogue. Visibility lags by a moment, so a burst can pass the cap by a few.
    """
    query = " AND ".join(
        [
            list_query(OrderState.AWAITING_APPROVAL, customer_id),
            "ExecutionStatus = 'Running'",
        ]
    )
    counted = await bounded(settings, lambda t: client.count_workflows(query, rpc_timeout=t))
    cap = settings.max_held_orders_per_customer
    if counted.count >= cap:
        raise OrderConflict(
            f"customer {customer_id} already has {counted.count} orders waiting for approval "
            f"(at most {cap} at once); wait for a decision or cancel one"
        )


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


async def list_page(
    client: Client,
    settings: Settings,
    query: str,
    summary: Callable[[WorkflowExecution], T],
    *,
    page_size: int,
    page_token: str | None,
) -> tuple[list[T], str | None]:
    """One page of `query`'s executions, each made into a `summary`, and the next token."""
    raw_token = decode_page_token(query, page_token)

    async def one_page(rpc_timeout: timedelta) -> tuple[Sequence[WorkflowExecution], bytes | None]:
        pages = client.list_workflows(
            query, page_size=page_size, next_page_token=raw_token, rpc_timeout=rpc_timeout
        )
        await pages.fetch_next_page()
        return pages.current_page or [], pages.next_page_token

    executions, next_raw = await bounded(settings, one_page)
    return [summary(e) for e in executions], encode_page_token(query, next_raw)


async def list_orders(
    client: Client,
    settings: Settings,
    *,
    status: OrderState | None,
    customer_id: str | None,
    owner: str | None,
    page_size: int,
    page_token: str | None,
) -> tuple[list[OrderSummary], str | None]:
    query = list_query(status, customer_id, owner)
    return await list_page(
        client, settings, query, _summary, page_size=page_size, page_token=page_token
    )


def _summary(execution: WorkflowExecution) -> OrderSummary:
    attributes = execution.typed_search_attributes
    state = attributes.get(ORDER_STATUS)
    reason = attributes.get(FAILURE_REASON)
    return OrderSummary(
        order_id=execution.id,
        customer_id=attributes.get(CUSTOMER_ID),
        status=enum_or_none(OrderState, state),
        failure_reason=enum_or_none(FailureReason, reason),
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


E = TypeVar("E", bound=StrEnum)


def enum_or_none(kind: type[E], value: str | None) -> E | None:
    # Visibility is written by workflow code; an unknown value must not fail the whole list.
    return kind(value) if value is not None and value in kind.__members__ else None
