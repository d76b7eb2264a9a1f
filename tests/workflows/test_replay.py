"""Every recorded saga history still replays against the current workflow code.

A nondeterministic change (a step added, removed or reordered without `workflow.patched`)
breaks sagas that are running in production; here it breaks CI first.
Re-record with `make histories` only for deliberate, unpatched changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.order import OrderWorkflow

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("order_*.json"))
# Read once at collection: the test itself then does no blocking file I/O.
RECORDED = {path.stem: path.read_text() for path in HISTORIES}


def test_every_saga_path_has_a_recorded_history() -> None:
    names = set(RECORDED)
    assert {
        "order_happy_path",
        "order_out_of_stock",
        "order_payment_declined",
        "order_undeliverable",
        "order_flaky_card",
        "order_approved",
        "order_rejected",
        "order_cancelled_by_customer",
        "order_approval_timeout",
    } <= names


@pytest.mark.parametrize("name", sorted(RECORDED))
async def test_history_replays_against_current_code(name: str) -> None:
    history = WorkflowHistory.from_json(name, RECORDED[name])
    result = await Replayer(workflows=[OrderWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"
