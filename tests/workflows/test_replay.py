"""Every recorded history still replays against the current workflow code.

A nondeterministic change (a step added, removed or reordered without `workflow.patched`)
breaks sagas that are running in production; here it breaks CI first.

- `tests/histories/*.json`: every order path, the operator retry of a failed compensation,
  and the coordinator across its continue-as-new runs, recorded with the current code.
- `tests/histories/before_patches/*.json`: the order paths recorded before the
  confirmation step and the operator retry existed. They keep replaying because both
  changes are guarded by `workflow.patched`; they must never be re-recorded.

Re-record with `make histories` only for deliberate, unpatched changes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.coordinator import CoordinatorWorkflow
from workflows.order import NOTIFY_PATCH, OPERATOR_RETRY_PATCH, OrderWorkflow

HISTORIES = Path(__file__).parents[1] / "histories"
# Read once at collection: the tests themselves then do no blocking file I/O.
RECORDED = {
    str(path.relative_to(HISTORIES).with_suffix("")): path.read_text()
    for path in sorted(HISTORIES.glob("**/*.json"))
}
ORDER_PATHS = {
    "happy_path",
    "out_of_stock",
    "payment_declined",
    "undeliverable",
    "flaky_card",
    "approved",
    "rejected",
    "cancelled_by_customer",
    "approval_timeout",
}


def test_every_path_has_a_recorded_history() -> None:
    current = {name.removeprefix("order_") for name in RECORDED if "/" not in name}
    assert ORDER_PATHS | {"operator_retry"} <= current
    assert {f"before_patches/order_{path}" for path in ORDER_PATHS} <= set(RECORDED)
    runs = [name for name in RECORDED if name.startswith("coordinator_run")]
    assert len(runs) >= 3  # the coordinator across several continue-as-new runs


@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_history_replays_against_current_code(name: str) -> None:
    history = WorkflowHistory.from_json(name, RECORDED[name])
    result = await Replayer(workflows=[OrderWorkflow, CoordinatorWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"


def patches(name: str) -> set[str]:
    """The `workflow.patched` change IDs a recorded history carries as markers."""
    found = set()
    for event in json.loads(RECORDED[name])["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker.get("markerName") == "core_patch":
            [payload] = marker["details"]["patch-data"]["payloads"]
            found.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return found


def test_the_patched_changes_are_real() -> None:
    # The same path, recorded before and after: only the new one took the patched branches.
    assert patches("before_patches/order_happy_path") == set()
    assert NOTIFY_PATCH in patches("order_happy_path")
    assert OPERATOR_RETRY_PATCH in patches("order_operator_retry")
