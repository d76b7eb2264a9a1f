"""Stand-ins that carry the saga types' names, for tests/workflows/test_reconcile_visibility.py.

The reconciliation reads only what visibility shows of a saga (its type, whether it runs,
its status search attribute), so each stand-in sets its status and then ends or stays open,
as the test asks. Their own module because the workflow sandbox re-imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from workflows.search_attributes import ORDER_STATUS, RETURN_STATUS


@dataclass(frozen=True)
class StandIn:
    status: str
    stay_open: bool


async def settle(key: SearchAttributeKey[str], given: StandIn) -> None:
    workflow.upsert_search_attributes([key.value_set(given.status)])
    if given.stay_open:
        await workflow.wait_condition(lambda: False)


@workflow.defn(name="OrderWorkflow")
class StandInOrder:
    @workflow.run
    async def run(self, given: StandIn) -> None:
        await settle(ORDER_STATUS, given)


@workflow.defn(name="ReturnWorkflow")
class StandInReturn:
    @workflow.run
    async def run(self, given: StandIn) -> None:
        await settle(RETURN_STATUS, given)
