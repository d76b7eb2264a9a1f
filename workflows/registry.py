"""The one place where sagas are registered.

The orders worker runs every saga here, the replay guard replays their recorded
histories, the coordinator counts them by type and reconciles them against visibility,
and the tests' servers register their search attributes. ARCHITECTURE.md, "Adding a
saga", says what else a new saga brings (its models, gateway, routes and tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.common import SearchAttributeKey

from workflows.models import OrderState
from workflows.order import OrderWorkflow
from workflows.return_models import ReturnState
from workflows.returns import ReturnWorkflow
from workflows.search_attributes import ORDER_STATUS, RETURN_STATUS


@dataclass(frozen=True)
class SagaType:
    workflow: type
    # The workflow ID prefix the API gives it: `<prefix>-<32 hex>`.
    id_prefix: str
    # The search attribute that carries its status (the filter of its listing).
    status: SearchAttributeKey[str]
    # Its end states. A saga can sit in one with its workflow still open (a FAILED order or
    # return waits for an operator's retry): it is then no longer in flight.
    terminal_states: frozenset[str]

    @property
    def name(self) -> str:
        """The workflow type name, as Temporal and the coordinator call it."""
        return self.workflow.__name__


SAGAS: tuple[SagaType, ...] = (
    SagaType(
        OrderWorkflow,
        "order",
        ORDER_STATUS,
        frozenset(state.value for state in OrderState if state.is_terminal),
    ),
    SagaType(
        ReturnWorkflow,
        "return",
        RETURN_STATUS,
        frozenset(state.value for state in ReturnState if state.is_terminal),
    ),
)
SAGA_WORKFLOWS: list[type] = [saga.workflow for saga in SAGAS]
SAGA_TYPE_NAMES: list[str] = [saga.name for saga in SAGAS]
