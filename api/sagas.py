"""Moved: the order gateway is api/order_gateway.py, the generic calls api/temporal_calls.py.

A shim for code still importing the old path; import from the new modules instead.
"""

from __future__ import annotations

from api.order_gateway import (
    ORDER_ID_RE,
    REQUEST_HASH_MEMO,
    TRACE_ID_MEMO,
    cancel_order,
    customer_for,
    decide_order,
    describe_order,
    load_order,
    load_status,
    order_exists,
    order_id_for,
    order_input,
    owns,
    request_hash,
    retry_order,
    start_order,
    task_queues,
)
from api.temporal_calls import IDEMPOTENCY_SECRET, bounded, refusal

__all__ = [
    "IDEMPOTENCY_SECRET",
    "ORDER_ID_RE",
    "REQUEST_HASH_MEMO",
    "TRACE_ID_MEMO",
    "bounded",
    "cancel_order",
    "customer_for",
    "decide_order",
    "describe_order",
    "load_order",
    "load_status",
    "order_exists",
    "order_id_for",
    "order_input",
    "owns",
    "refusal",
    "request_hash",
    "retry_order",
    "start_order",
    "task_queues",
]
