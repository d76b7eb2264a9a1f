"""Each saga's compensations, declared once: the step each undoes and the activity it runs.

What lists compensations derives from here (common/metrics.py times these activities as
compensations, every other activity as a step) instead of keeping a list of its own, which
drifts: a hand-written one missed both of the returns saga's. The sagas name the same
activities in their `steps.compensated(...)` calls by taking them from here;
tests/workflows/test_compensations.py holds the two equal, reading the sagas' code and
their recorded histories.

Strings only, importing nothing: the metrics of every process import this module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Compensation:
    """One undoable step of a saga and the activity that undoes it."""

    # The step's name (also the suffix of its idempotency key).
    step: str
    # The compensating activity's name, on the same service's task queue as the step.
    activity: str


# By workflow type (workflows/registry.py), in the order the saga registers them.
BY_SAGA: dict[str, tuple[Compensation, ...]] = {
    "OrderWorkflow": (
        Compensation("reserve_stock", "release_stock"),
        Compensation("authorize_payment", "void_payment"),
        # Above the approval threshold: the customer's slot in the hold ledger (payments).
        Compensation("hold_for_approval", "release_approval_hold"),
        Compensation("create_shipment", "cancel_shipment"),
    ),
    "ReturnWorkflow": (
        Compensation("claim_return", "release_return_claim"),
        Compensation("issue_return_label", "cancel_return_label"),
    ),
}

# Every activity that undoes a step, whichever saga runs it.
ACTIVITIES: frozenset[str] = frozenset(c.activity for saga in BY_SAGA.values() for c in saga)


def undo_activity(saga_type: str, step: str) -> str:
    """The activity that undoes `step` of `saga_type`.

    Args:
        saga_type: the saga's workflow type.
        step: the step's name.

    Returns:
        The compensating activity's name.

    Raises:
        KeyError: the saga declares no compensation for that step.
    """
    return undo_activities(saga_type)[step]


def undo_activities(saga_type: str) -> dict[str, str]:
    """Each undoable step of `saga_type` and the activity that undoes it: what the saga
    schedules as its compensations.

    Args:
        saga_type: the saga's workflow type.

    Returns:
        The compensating activity's name by step name.
    """
    return {c.step: c.activity for c in BY_SAGA[saga_type]}
