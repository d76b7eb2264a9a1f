"""Which orders can be returned: COMPLETED ones, within the return window (in process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from api.principals import Principal, Role
from api.return_gateway import ReturnConflict, returnable_order
from common.settings import Settings
from workflows.search_attributes import CUSTOMER_ID, ORDER_STATUS

ORDER_ID = "order-" + "a" * 32
ME = Principal(Role.CUSTOMER, "c-1", "c-1", "key:1")


@dataclass
class Described:
    status: WorkflowExecutionStatus
    close_time: datetime | None
    state: str
    workflow_type: str = "OrderWorkflow"
    id: str = ORDER_ID
    typed_search_attributes: TypedSearchAttributes = field(init=False)

    def __post_init__(self) -> None:
        self.typed_search_attributes = TypedSearchAttributes(
            [SearchAttributePair(CUSTOMER_ID, "c-1"), SearchAttributePair(ORDER_STATUS, self.state)]
        )


@dataclass
class Client:
    described: Described

    def get_workflow_handle(self, workflow_id: str) -> Any:
        described = self.described

        class Handle:
            async def describe(self, rpc_timeout: Any = None) -> Described:
                return described

        return Handle()


SETTINGS = Settings(_env_file=None, return_window_s=3600)  # type: ignore[call-arg]
COMPLETED = WorkflowExecutionStatus.COMPLETED


async def test_a_completed_order_within_the_window_is_returnable() -> None:
    recent = Described(COMPLETED, datetime.now(UTC) - timedelta(minutes=59), "COMPLETED")
    order = await returnable_order(Client(recent), SETTINGS, ORDER_ID, ME)  # type: ignore[arg-type]
    assert order is recent


async def test_outside_the_window_or_not_completed_is_a_conflict() -> None:
    old = Described(COMPLETED, datetime.now(UTC) - timedelta(minutes=61), "COMPLETED")
    with pytest.raises(ReturnConflict, match="outside the return window"):
        await returnable_order(Client(old), SETTINGS, ORDER_ID, ME)  # type: ignore[arg-type]
    compensated = Described(COMPLETED, datetime.now(UTC), "COMPENSATED")
    with pytest.raises(ReturnConflict, match="only a COMPLETED order"):
        await returnable_order(Client(compensated), SETTINGS, ORDER_ID, ME)  # type: ignore[arg-type]
    running = Described(WorkflowExecutionStatus.RUNNING, None, "PENDING")
    with pytest.raises(ReturnConflict, match="only a COMPLETED order"):
        await returnable_order(Client(running), SETTINGS, ORDER_ID, ME)  # type: ignore[arg-type]
