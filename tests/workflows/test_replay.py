"""Every recorded history still replays against the current workflow code.

A nondeterministic change (a step added, removed or reordered without `workflow.patched`)
breaks sagas that are running in production; here it breaks CI first.

- `tests/histories/*.json`: every order path, the operator retry of a failed compensation,
  and the coordinator across its continue-as-new runs, recorded with the current code;
  every returns path (`return_*.json`, tests/histories/return_record.py).
- `tests/histories/before_patches/*.json`: the order paths recorded before the
  confirmation step and the operator retry existed. They keep replaying because both
  changes are guarded by `workflow.patched`; they must never be re-recorded.
- `tests/histories/before_patches/saga_safety/*.json`: the order paths recorded before
  the pivot, the nonce in step keys and the step limits (heartbeat, retry ceiling), all
  three patched, and a Temporal cancel during capture that still rolled back (it fails
  to replay if the pivot loses its patch); never re-recorded either.

- `tests/histories/before_patches/operator_paths/*.json`: the paths where a saga waits for
  a person, recorded by the code before issue 17's patches (a capture failing for good
  rolled back, a Temporal cancel closed a FAILED saga, an early approval signal decided
  the order); beside them, the same paths recorded with the patches
  (tests/histories/operator_record.py). Never re-recorded either.

Re-record with `make histories` only for deliberate, unpatched changes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.histories.operator_record import NOT_BEFORE
from tests.histories.operator_record import PATHS as OPERATOR_RECORDED
from tests.histories.return_record import PATHS as RETURN_RECORDED
from tests.support.codec import TEST_DATA_CONVERTER
from workflows.coordination_shard import CoordinatorShardWorkflow
from workflows.coordinator import CoordinatorWorkflow
from workflows.order import (
    EARLY_SIGNAL_PATCH,
    FORWARD_ONLY_PATCH,
    HOLD_LEDGER_PATCH,
    NONCE_KEYS_PATCH,
    NOTIFY_PATCH,
    OPERATOR_RETRY_PATCH,
    PIVOT_PATCH,
    STEP_LIMITS_PATCH,
    SURVIVE_CANCEL_PATCH,
)
from workflows.registry import SAGA_WORKFLOWS

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
# The returns saga's paths (tests/histories/return_record.py).
RETURN_PATHS = {f"return_{name}" for name in RETURN_RECORDED}
# Paths that exist only with the saga-safety patches.
SAFETY_PATHS = {"poison_pill", "step_exhausted", "cancel_past_pivot"}
SAFETY_PATCHES = {PIVOT_PATCH, NONCE_KEYS_PATCH, STEP_LIMITS_PATCH}


def test_every_path_has_a_recorded_history() -> None:
    current = {name.removeprefix("order_") for name in RECORDED if "/" not in name}
    assert ORDER_PATHS | SAFETY_PATHS | {"operator_retry"} <= current
    assert {f"before_patches/order_{path}" for path in ORDER_PATHS} <= set(RECORDED)
    before_safety = {f"before_patches/saga_safety/order_{path}" for path in ORDER_PATHS}
    # A Temporal cancel during capture, recorded when it still refunded the order: the
    # history that breaks if the pivot ever loses its `workflow.patched` guard.
    old_only = {"operator_retry", "cancel_during_capture"}
    before_safety |= {f"before_patches/saga_safety/order_{path}" for path in old_only}
    assert before_safety <= set(RECORDED)
    assert set(RECORDED) >= RETURN_PATHS
    runs = [name for name in RECORDED if name.startswith("coordinator_run")]
    assert len(runs) >= 3  # the coordinator across several continue-as-new runs


@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_history_replays_against_current_code(name: str) -> None:
    history = WorkflowHistory.from_json(name, RECORDED[name])
    # With the tests' codec: new recordings are encrypted; older ones pass through it.
    replayer = Replayer(
        workflows=[*SAGA_WORKFLOWS, CoordinatorWorkflow, CoordinatorShardWorkflow],
        data_converter=TEST_DATA_CONVERTER,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
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
    # Recorded before the saga-safety patches: none of them; recorded after: all three on a
    # saga that reached the pivot, and the two decided at the start on one that did not.
    for name in RECORDED:
        if name.startswith("before_patches/saga_safety/"):
            assert patches(name) & SAFETY_PATCHES == set(), name
    assert patches("order_happy_path") >= SAFETY_PATCHES
    assert patches("order_cancel_past_pivot") >= SAFETY_PATCHES
    assert patches("order_poison_pill") & SAFETY_PATCHES == {NONCE_KEYS_PATCH, STEP_LIMITS_PATCH}


# Where a saga waits for a person (issue 17, tests/histories/operator_record.py): each path
# recorded with the patch it exercises, and by the code before it (which must still replay).
OPERATOR_PATCHES = {
    "order_capture_failed_retry": FORWARD_ONLY_PATCH,
    "order_cancel_while_failed": SURVIVE_CANCEL_PATCH,
    "order_early_signal": EARLY_SIGNAL_PATCH,
    "order_hold_limit": HOLD_LEDGER_PATCH,
    "return_cancel_while_failed": SURVIVE_CANCEL_PATCH,
}


def test_the_operator_paths_are_recorded_before_and_after_their_patches() -> None:
    assert set(OPERATOR_PATCHES) == set(OPERATOR_RECORDED)
    for name, patch in OPERATOR_PATCHES.items():
        assert patch in patches(name), name
        if name not in NOT_BEFORE:
            assert patches(f"before_patches/operator_paths/{name}") & {patch} == set(), name
    # The older held orders were recorded before the hold ledger existed.
    assert HOLD_LEDGER_PATCH not in patches("order_approved")
