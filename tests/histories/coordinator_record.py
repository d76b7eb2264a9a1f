"""Record the sharded coordinator's histories: `python -m tests.histories.coordinator_record`.

On a dev server: real agents report through two shard workflows (short histories, so each
continues-as-new) into a root that forwards, reconciles against visibility every few
seconds (sagas it was told of that Temporal never ran end as UNKNOWN), and continues-as-
new too. One file per run: `coordinator_sharded_root_run<i>.json` and
`coordinator_shard<n>_run<i>.json`. The replay guard (tests/workflows/test_replay.py and
test_coordinator_replay.py) replays them; re-record only for a deliberate, unpatched
change, never the older `coordinator_run*.json`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from activities.visibility import CoordinationActivities
from common.settings import Settings
from tests.support.api_client import poll
from tests.support.temporal import dev_server_env
from workers.agent import CoordinationAgent, coordinator_input
from workers.reporting import ReportBuffer
from workflows.coordination_fanin import shard_workflow_id
from workflows.coordination_models import SagaSnapshot
from workflows.coordination_shard import CoordinatorShardWorkflow, ShardInput
from workflows.coordinator import CoordinatorWorkflow

HERE = Path(__file__).parent
SHARDS = 2


async def record(target: Path = HERE) -> list[Path]:
    written = []
    async with dev_server_env() as env:
        for name, history in (await _record_sharded(env.client)).items():
            path = target / f"{name}.json"
            path.write_text(history)
            written.append(path)
    return written


async def _record_sharded(client: Client) -> dict[str, str]:
    queue = f"record-{uuid.uuid4()}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        coordinator_workflow_id=f"coordinator-{uuid.uuid4()}",
        coordinator_task_queue=queue,
        coordinator_shards=SHARDS,
        coordinator_reconcile_s=5,
        orders_task_queue=queue,
    )
    root_id = settings.coordinator_workflow_id
    root = coordinator_input(settings)
    root = dataclasses.replace(
        root,
        # Issued after the agents' configurations, so the root keeps this one.
        config=dataclasses.replace(
            root.config,
            services=["payments"],
            max_history_events=120,
            issued_at=datetime(2100, 1, 1, tzinfo=UTC),
        ),
    )
    activities = CoordinationActivities(client)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[CoordinatorWorkflow, CoordinatorShardWorkflow],
        activities=[activities.reconcile_sagas, activities.start_coordinator],
    ):
        for shard in range(SHARDS):
            await client.start_workflow(
                CoordinatorShardWorkflow.run,
                ShardInput(root_id, shard, SHARDS, root=root, max_history_events=80),
                id=shard_workflow_id(root_id, shard),
                task_queue=queue,
            )
        agents = [
            CoordinationAgent(client, settings, ReportBuffer(f"payments {i}@record"))
            for i in range(4)
        ]
        for round_ in range(30):
            for i, agent in enumerate(agents):
                buffer = agent._buffer
                assert buffer is not None
                buffer.call_started("payments")
                buffer.call_finished("payments", 20.0, "boom" if (round_ + i) % 4 == 0 else None)
                order = f"o-{round_}-{i}"
                buffer.saga_changed(SagaSnapshot(order, "PENDING", "reserve", datetime.now(UTC)))
            await asyncio.gather(*(agent.flush() for agent in agents))
            await asyncio.sleep(0.5)
        handle = client.get_workflow_handle_for(CoordinatorWorkflow.run, root_id)
        # Long enough for reconciliations to find the sagas Temporal never ran.
        await poll(
            lambda: handle.query(CoordinatorWorkflow.state),
            lambda s: s.reconciliation.corrected_total > 0 and s.run >= 2,
            within=90,
        )
        histories: dict[str, str] = {}
        for name, workflow_id in [
            ("coordinator_sharded_root", root_id),
            *((f"coordinator_shard{n}", shard_workflow_id(root_id, n)) for n in range(SHARDS)),
        ]:
            for run, history in enumerate(await _runs(client, workflow_id)):
                histories[f"{name}_run{run}"] = history
        return histories


async def _runs(client: Client, workflow_id: str) -> list[str]:
    """Every run's history, first to last, the running one terminated to complete it."""
    latest = client.get_workflow_handle(workflow_id)
    await latest.terminate("recorded")
    histories: list[str] = []
    run_id: str | None = (await latest.describe()).run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.insert(0, history.to_json())
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
    return histories


def main() -> None:
    code = 0
    try:
        for path in asyncio.run(record()):
            print(f"recorded {path}")
    except Exception as err:
        print(f"recording failed: {err}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    os._exit(code)  # the Temporal core can abort at interpreter exit (sdk-python#300)


if __name__ == "__main__":
    main()
