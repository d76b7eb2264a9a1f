"""The coordinator's recorded histories replay against the current code, sharded or not.

- `coordinator_run*.json`: the coordinator before the fan-in was sharded and before it
  reconciled with visibility. They keep replaying because the reconciliation timer is
  behind `workflow.patched` (RECONCILE_PATCH): remove the guard and they fail.
- `coordinator_sharded_root_run*.json`, `coordinator_shard<n>_run*.json`: the root fed by
  two shards, reconciling, holding its shards and continuing-as-new, and the shards
  (`python -m tests.histories.coordinator_record`).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.support.codec import TEST_DATA_CONVERTER
from workflows.coordination_shard import CoordinatorShardWorkflow
from workflows.coordinator import (
    HOLD_SIGNAL,
    RECONCILE_PATCH,
    SHARD_SIGNAL,
    CoordinatorWorkflow,
)

HISTORIES = Path(__file__).parents[1] / "histories"
RECORDED = {path.stem: path.read_text() for path in sorted(HISTORIES.glob("coordinator_*.json"))}
BEFORE = sorted(name for name in RECORDED if name.startswith("coordinator_run"))
SHARDED_ROOT = sorted(name for name in RECORDED if name.startswith("coordinator_sharded_root"))
SHARDS = sorted(
    name for name in RECORDED if name.startswith("coordinator_shard") and name[17:18].isdigit()
)


def events(name: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = json.loads(RECORDED[name])["events"]
    return found


def patches(name: str) -> set[str]:
    found = set()
    for event in events(name):
        marker = event.get("markerRecordedEventAttributes")
        if isinstance(marker, dict) and marker.get("markerName") == "core_patch":
            [payload] = marker["details"]["patch-data"]["payloads"]
            found.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return found


def test_the_recordings_cover_every_kind_of_run() -> None:
    assert len(BEFORE) >= 3
    assert len(SHARDED_ROOT) >= 2  # the root continued-as-new
    assert {name.split("_run")[0] for name in SHARDS} == {
        "coordinator_shard0",
        "coordinator_shard1",
    }
    assert len(SHARDS) >= 4  # each shard continued-as-new


@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_coordinator_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(name, RECORDED[name])
    replayer = Replayer(
        workflows=[CoordinatorWorkflow, CoordinatorShardWorkflow],
        data_converter=TEST_DATA_CONVERTER,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"


def test_the_reconciliation_is_patched_in() -> None:
    for name in BEFORE:
        assert RECONCILE_PATCH not in patches(name), name
    for name in SHARDED_ROOT:
        assert RECONCILE_PATCH in patches(name), name
    # Reconciliations ran (the activity's events), and one found sagas ended unreported.
    completed = [
        e["activityTaskCompletedEventAttributes"]
        for name in SHARDED_ROOT
        for e in events(name)
        if "activityTaskCompletedEventAttributes" in e
    ]
    assert len(completed) >= 2
    # The sharded root took the shards' deltas; the shards forwarded them.
    signals = [
        e["workflowExecutionSignaledEventAttributes"]
        for name in SHARDED_ROOT
        for e in events(name)
        if "workflowExecutionSignaledEventAttributes" in e
    ]
    assert any(isinstance(s, dict) and s.get("signalName") == SHARD_SIGNAL for s in signals)
    # Before each continue-as-new the root held its shards, and each next run released them.
    holds = [
        e["signalExternalWorkflowExecutionInitiatedEventAttributes"]
        for name in SHARDED_ROOT
        for e in events(name)
        if "signalExternalWorkflowExecutionInitiatedEventAttributes" in e
    ]
    named = [h.get("signalName") for h in holds if isinstance(h, dict)]
    assert named.count(HOLD_SIGNAL) >= 2 * (len(SHARDED_ROOT) - 1)
    forwarded = {
        name.split("_run")[0]
        for name in SHARDS
        for e in events(name)
        if e.get("eventType") == "EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED"
    }
    assert forwarded == {"coordinator_shard0", "coordinator_shard1"}
