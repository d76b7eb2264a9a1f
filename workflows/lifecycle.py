"""A one-way, replay-safe hook through which sagas publish their lifecycle.

Workflow code calls `publish(snapshot)` whenever its status changes. The orders worker
installs a sink that coalesces snapshots in memory and sends them to the coordinator in
its once-a-second report (workers/reporting.py). Nothing flows back into the workflow, so
its decisions never depend on it; replayed workflow tasks publish nothing, so a replay
never re-reports old news. With no sink installed (tests, the replayer) it does nothing.

Import this module through `workflow.unsafe.imports_passed_through()`, so the sandbox
shares the worker process's copy and the installed sink.
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow

from workflows.coordination_models import SagaSnapshot

SagaSink = Callable[[SagaSnapshot], None]

_sink: SagaSink | None = None


def install(sink: SagaSink | None) -> None:
    global _sink
    _sink = sink


def publish(snapshot: SagaSnapshot) -> None:
    if _sink is not None and not workflow.unsafe.is_replaying():
        _sink(snapshot)
