"""Starting a saga on the fault system straight through Temporal, past the API.

For the tests that must know an order's ID (and nonce) before its first step runs, so a
hold can wait for it there, or that give it inputs the API would never let through (a
poison pill, a step timeout of its own). The saga is the one the API starts: same
workflow, same task queues, same search attributes; the orders worker cannot tell.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from temporalio.common import SearchAttributePair, TypedSearchAttributes

from tests.faults.support import FaultSystem
from workflows.models import Address, OrderInput, OrderItem, OrderState, TaskQueues
from workflows.order import CUSTOMER_ID, ORDER_STATUS, OrderWorkflow


async def start_directly(
    system: FaultSystem, items: Sequence[tuple[str, int]] = (("SKU-1", 2),), **overrides: Any
) -> OrderInput:
    """Start one order saga; its ID matches the API's pattern, so GET /orders answers it."""
    stack = system.stack
    customer_id = f"c-{uuid.uuid4().hex[:12]}"
    defaults: dict[str, Any] = {"order_id": f"order-{uuid.uuid4().hex}", "nonce": uuid.uuid4().hex}
    input = OrderInput(
        customer_id=customer_id,
        items=[OrderItem(sku=sku, quantity=quantity) for sku, quantity in items],
        card_token="tok_visa",
        shipping_address=Address("Ada", "Unter den Linden 1", "Berlin", "10117", "DE"),
        task_queues=TaskQueues(
            inventory=stack.task_queue("inventory"),
            payments=stack.task_queue("payments"),
            shipping=stack.task_queue("shipping"),
            notifications=stack.task_queue("notifications"),
        ),
        **{**defaults, **overrides},
    )
    client = await system.temporal()
    await client.start_workflow(
        OrderWorkflow.run,
        input,
        id=input.order_id,
        task_queue=stack.task_queue("orders"),
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(CUSTOMER_ID, customer_id),
                SearchAttributePair(ORDER_STATUS, OrderState.PENDING.value),
            ]
        ),
    )
    # The invariants cover every order the system has seen: this one too.
    system.orders[input.order_id] = {"status": OrderState.PENDING.value}
    return input


def step_key(input: OrderInput, step: str) -> str:
    """The idempotency key the saga gives `step`: `<workflow_id>:<nonce>:<step>`."""
    return f"{input.order_id}:{input.nonce}:{step}"


async def nonce_of(system: FaultSystem, order_id: str) -> str | None:
    """The nonce the API gave an order (its step keys carry it), read from its input."""
    client = await system.temporal()
    history = await client.get_workflow_handle(order_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [input] = await client.data_converter.decode(started.input.payloads, [OrderInput])
    assert isinstance(input, OrderInput)
    return input.nonce
