"""The declared compensations (workflows/compensations.py) are the ones the sagas run.

Two witnesses: the sagas' own code (each `steps.compensated(step, ..., compensation=...)`
call names the activity that undoes the step) and their recorded histories (what the
workflows actually scheduled). A saga that gains, renames or drops a compensation without
declaring it fails here, before the metrics time it as a step.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path
from types import ModuleType

import pytest

from common import metrics
from workflows import compensations
from workflows.registry import SAGAS, SagaType

HISTORIES = Path(__file__).parents[1] / "histories"
# Each saga type's recordings (tests/histories/record.py, return_record.py).
RECORDING_PREFIX = {"OrderWorkflow": "order_", "ReturnWorkflow": "return_"}


def _value(node: ast.expr, module: ModuleType) -> str:
    """A string literal, a module-level constant the saga's code names, or an entry of a
    module-level mapping (`UNDO[RESERVE]`: the saga takes its compensations from the
    declaration, so this reads which step's entry each `compensated` call uses)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and isinstance(getattr(module, node.id, None), str):
        return str(getattr(module, node.id))
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        mapping = getattr(module, node.value.id, None)
        if isinstance(mapping, dict):
            return str(mapping[_value(node.slice, module)])
    raise AssertionError(f"cannot read a name from {ast.unparse(node)} in {module.__name__}")


def _calls(saga: SagaType, method: str) -> tuple[ModuleType, list[ast.Call]]:
    """The saga module's calls of `<something>.<method>(...)` with arguments."""
    module = importlib.import_module(saga.workflow.__module__)
    tree = ast.parse(inspect.getsource(module))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
        and node.args
    ]
    return module, calls


def compensations_in_code(saga: SagaType) -> set[tuple[str, str]]:
    """(step, compensating activity) of every `steps.compensated(...)` in the saga's code."""
    module, calls = _calls(saga, "compensated")
    found = set()
    for call in calls:
        [undo] = [k.value for k in call.keywords if k.arg == "compensation"]
        assert isinstance(undo, ast.Lambda), ast.unparse(undo)
        body = undo.body
        assert isinstance(body, ast.Call) and isinstance(body.func, ast.Attribute)
        assert body.func.attr == "execute_activity", ast.unparse(body)
        found.add((_value(call.args[0], module), _value(body.args[0], module)))
    return found


def activities_in_code(saga: SagaType) -> set[str]:
    """Every activity the saga's code schedules, steps and compensations alike."""
    module, calls = _calls(saga, "execute_activity")
    return {_value(call.args[0], module) for call in calls}


def scheduled(saga: SagaType) -> list[list[str]]:
    """The activity types each recorded history of the saga scheduled, in order."""
    runs = []
    for path in sorted(HISTORIES.glob(f"{RECORDING_PREFIX[saga.name]}*.json")):
        events = json.loads(path.read_text())["events"]
        runs.append(
            [
                e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
                for e in events
                if "activityTaskScheduledEventAttributes" in e
            ]
        )
    assert runs, f"no recorded history of {saga.name}"
    return runs


def declared(saga: SagaType) -> set[tuple[str, str]]:
    return {(c.step, c.activity) for c in compensations.BY_SAGA[saga.name]}


def test_every_registered_saga_declares_its_compensations() -> None:
    assert set(compensations.BY_SAGA) == {saga.name for saga in SAGAS}
    assert set(RECORDING_PREFIX) == {saga.name for saga in SAGAS}


@pytest.mark.parametrize("saga", SAGAS, ids=lambda s: s.name)
def test_the_declaration_is_what_the_sagas_code_registers(saga: SagaType) -> None:
    assert declared(saga) == compensations_in_code(saga)


@pytest.mark.parametrize("saga", SAGAS, ids=lambda s: s.name)
def test_recorded_histories_schedule_declared_compensations_after_their_steps(
    saga: SagaType,
) -> None:
    runs = scheduled(saga)
    undo = {c.activity: c.step for c in compensations.BY_SAGA[saga.name]}
    for run in runs:
        # The recordings are of this saga's code...
        assert set(run) <= activities_in_code(saga), run
        # ...and each compensation they ran undid a step that had run before it.
        for activity, step in undo.items():
            if activity in run:
                assert step in run[: run.index(activity)], (activity, run)
    # The recordings roll back too: the declaration is witnessed by what really ran.
    assert set(undo) & {activity for run in runs for activity in run}


def test_the_metrics_time_exactly_the_declared_compensations() -> None:
    assert metrics.COMPENSATIONS == compensations.ACTIVITIES
    assert compensations.undo_activity("ReturnWorkflow", "claim_return") == "release_return_claim"
    with pytest.raises(KeyError):
        compensations.undo_activity("ReturnWorkflow", "refund_return")
