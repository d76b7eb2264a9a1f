"""`make bench-coordinator`: many worker processes reporting to the coordinator, measured.

`python -m bench.coordinator_bench --reporters 100 --shards 4 --duration-s 150`

- A tuned dev server (temporal-dev/start.sh on a database file, the profile of
  temporal-dev/profile.args, as `make up` runs it) and the coordination worker in a process
  of its own (bench/coordinator_host.py: the root and its shards, as the orders process
  runs them).
- N synthetic reporters (bench/coordinator_reporters.py), each the production agent and
  report buffer with an identity of its own, all in this one asyncio process (the machine
  has two shared cores: N processes would measure the scheduler), started as a rolling
  start over `--ramp-s`, then reporting for the rest of `--duration-s`.
- From the histories of the root and every shard (every run, across continue-as-new), the
  highest number of signals any single workflow took in one second of server time; from
  polling the root's `state`, each report's lag from its send to the first answer that
  counts it (an upper bound: polling adds up to POLL_S).

Writes bench/results/coordinator-latest.json (and a dated copy beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from bench.cli import exit_after, positive_int
from bench.coordinator_reporters import POLL_S, LagProbe, make_reporters, run_reporter
from bench.report import machine
from bench.servers import Server, server
from common.settings import Settings
from tooling.codec import TEST_CODEC_ENV, TEST_DATA_CONVERTER
from tooling.stack import REPO_ROOT
from workflows.coordination_fanin import shard_workflow_id
from workflows.coordination_models import ShardPace
from workflows.coordination_shard import PACE_MEMO

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_SIGNALS_PER_S = 5
TARGET_LAG_P99_MS = 3_000
SIGNALED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
TASK_FAILED = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.coordinator_bench")
    parser.add_argument("--reporters", type=positive_int, default=100)
    parser.add_argument("--shards", type=positive_int, default=4)
    parser.add_argument("--duration-s", type=positive_int, default=180)
    parser.add_argument("--ramp-s", type=positive_int, default=60)
    # After the reporters stop: how long the root may take to count what was sent.
    parser.add_argument("--drain-s", type=positive_int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


async def bench(args: argparse.Namespace) -> int:
    started_at = datetime.now(UTC)
    host_machine = machine()
    run_id = uuid.uuid4().hex[:8]
    root_id, queue = f"bench-coordinator-{run_id}", f"bench-coordination-{run_id}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        coordinator_shards=args.shards,
        coordinator_workflow_id=root_id,
        coordinator_task_queue=queue,
    )
    with tempfile.TemporaryDirectory(prefix="coordinator-bench-") as tmp:
        root = Path(tmp)
        with server("tuned", root / "server") as tuned:
            client = await connect_to(tuned)
            host = start_host(root, tuned.address, settings)
            try:
                await wait_polling(client, settings.coordinator_task_queue, host)
                figures = await measure(client, settings, args)
            finally:
                stop(host)
    result = {
        "reporters": args.reporters,
        "shards": args.shards,
        **figures,
        "targets": {
            "max_signals_per_s_per_workflow": TARGET_SIGNALS_PER_S,
            "lag_p99_ms": TARGET_LAG_P99_MS,
            "workers_seen": args.reporters,
        },
        "duration_s": args.duration_s,
        "ramp_s": args.ramp_s,
        "started_at": started_at.isoformat(),
        "setup": (
            f"{args.reporters} reporters in one asyncio process (the production agent and "
            "report buffer each), the coordination worker in another, a tuned dev server "
            "on a database file; lag read by polling the root's state every "
            f"{POLL_S:g} s (an upper bound)"
        ),
        "machine": {**host_machine, "load_avg_at_end": list(os.getloadavg())},
    }
    result["meets_targets"] = meets_targets(result)
    for path in write(result, args.output_dir, started_at):
        log(f"wrote {path}")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


async def measure(client: Client, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    root_id = settings.coordinator_workflow_id
    reporters = make_reporters(client, settings, args.reporters, args.seed)
    probe = LagProbe(client, root_id, reporters)
    polling = asyncio.create_task(probe.run())
    ramp = args.ramp_s / args.reporters
    running = [asyncio.create_task(run_reporter(r, i * ramp)) for i, r in enumerate(reporters)]
    log(f"{args.reporters} reporters, {args.shards} shard(s), {args.duration_s}s")
    try:
        await asyncio.sleep(args.duration_s)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    polling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await polling
    deadline = time.monotonic() + args.drain_s
    while True:
        await probe.poll()
        if not probe.unreflected() or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_S)
    ids = [root_id, *(shard_workflow_id(root_id, n) for n in range(settings.coordinator_shards))]
    signals: dict[str, dict[str, Any]] = {}
    for workflow_id in ids:
        rates = await signal_rates(client, workflow_id)
        if rates is not None:
            signals[workflow_id] = rates
    busiest = max(signals, key=lambda wid: signals[wid]["max_per_s"])
    first_sent = min((r.agent.sent[0] for r in reporters if r.agent.sent), default=0.0)
    for rates in signals.values():
        # From the first report on, as the slowest reports' send times.
        for key in ("continued_as_new_at", "task_failed_at"):
            rates[f"{key}_s"] = [round(at - first_sent, 1) for at in rates.pop(key, [])]
    sent = sum(len(r.agent.sent) for r in reporters)
    mine = {r.buffer.worker for r in reporters}
    return {
        "max_signals_per_s_per_workflow": signals[busiest]["max_per_s"],
        "lag_p99_ms": lag_ms(probe, 0.99),
        "workers_seen": len(probe.workers_seen & mine),
        "busiest_workflow": busiest,
        "lag_p50_ms": lag_ms(probe, 0.50),
        "lag_p95_ms": lag_ms(probe, 0.95),
        "lag_max_ms": lag_ms(probe, 1.0),
        "reports_sent": sent,
        "reports_unreflected": probe.unreflected(),
        "report_send_failures": sum(r.agent.failures for r in reporters),
        "state_polls": probe.polls,
        "signals_by_workflow": signals,
        "report_interval_s_by_shard": await report_intervals(client, settings),
        # The slowest reports: when they were sent, from the first report on, and their lag.
        "slowest_reports": [
            {"sent_at_s": round(sent - first_sent, 1), "lag_ms": round(lag * 1000)}
            for sent, lag in sorted(probe.timeline, key=lambda item: -item[1])[:15]
        ],
    }


def lag_ms(probe: LagProbe, q: float) -> float | None:
    """Nearest-rank quantile; a report never counted ranks last, as an infinite lag."""
    ranked = sorted(probe.lags_s) + [math.inf] * probe.unreflected()
    if not ranked:
        return None
    value = ranked[max(0, math.ceil(q * len(ranked)) - 1)]
    return None if math.isinf(value) else round(value * 1000, 1)


async def signal_rates(client: Client, workflow_id: str) -> dict[str, Any] | None:
    """Signals per second of server time into one workflow ID, over all of its runs."""
    try:
        run_id: str | None = (await client.get_workflow_handle(workflow_id).describe()).run_id
    except RPCError:
        return None  # a shard no reporter hashed to
    per_second: Counter[int] = Counter()
    run_starts: list[float] = []
    # Workflow tasks that failed (a continue-as-new refused as signals raced it, say).
    task_failures: list[float] = []
    while run_id:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        first = None
        async for event in handle.fetch_history_events():
            first = first or event
            if event.event_type == SIGNALED:
                per_second[event.event_time.seconds] += 1
            elif event.event_type == TASK_FAILED:
                task_failures.append(event.event_time.ToDatetime(tzinfo=UTC).timestamp())
        assert first is not None
        run_starts.append(first.event_time.ToDatetime(tzinfo=UTC).timestamp())
        started = first.workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
    runs = len(run_starts)
    if not per_second:
        return {"max_per_s": 0, "signals": 0, "runs": runs, "max_10s_average_per_s": 0.0}
    seconds = range(min(per_second), max(per_second) + 1)
    windows = [sum(per_second[s + i] for i in range(10)) / 10 for s in seconds]
    busiest = max(per_second, key=lambda second: (per_second[second], -second))
    return {
        "max_per_s": per_second[busiest],
        # When, in seconds from this workflow's first signal: in the rolling start or after.
        "busiest_second_at_s": busiest - min(per_second),
        "seconds_over_5": sum(1 for count in per_second.values() if count > 5),
        "signals": sum(per_second.values()),
        "runs": runs,
        "max_10s_average_per_s": round(max(windows), 2),
        # Epoch seconds each run after the first began (its continue-as-new).
        "continued_as_new_at": sorted(run_starts)[1:],
        "task_failed_at": sorted(task_failures),
    }


async def report_intervals(client: Client, settings: Settings) -> dict[str, float]:
    """Each shard's schedule at the end: how often its members report."""
    intervals = {}
    for shard in range(settings.coordinator_shards if settings.coordinator_shards > 1 else 0):
        handle = client.get_workflow_handle(
            shard_workflow_id(settings.coordinator_workflow_id, shard)
        )
        try:
            pace = await (await handle.describe()).memo_value(PACE_MEMO, type_hint=ShardPace)
        except (RPCError, KeyError):
            continue
        intervals[str(shard)] = pace.interval_s
    return intervals


def meets_targets(result: dict[str, Any]) -> bool:
    lag = result["lag_p99_ms"]
    return (
        result["max_signals_per_s_per_workflow"] <= TARGET_SIGNALS_PER_S
        and lag is not None
        and lag <= TARGET_LAG_P99_MS
        and result["workers_seen"] == result["reporters"]
    )


def start_host(root: Path, address: str, settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **TEST_CODEC_ENV,
        "PYTHONPATH": str(REPO_ROOT),
        "SAGAWORKS_TEMPORAL_ADDRESS": address,
        "SAGAWORKS_DATA_DIR": str(root / "data"),
        "SAGAWORKS_COORDINATOR_WORKFLOW_ID": settings.coordinator_workflow_id,
        "SAGAWORKS_COORDINATOR_TASK_QUEUE": settings.coordinator_task_queue,
        "SAGAWORKS_COORDINATOR_SHARDS": str(settings.coordinator_shards),
        "SAGAWORKS_METRICS_PORT_BASE": "0",
        "SAGAWORKS_LOG_LEVEL": "WARNING",
    }
    with (root / "coordinator-host.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.coordinator_host"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def connect_to(tuned: Server, timeout_s: float = 300) -> Client:
    """Once the server answers (a loaded machine can take minutes to bring it up).

    Not `bench.servers.connect`, which also waits for the sagas' search attributes: the
    coordinator needs none of them.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if tuned.process.poll() is not None:
            raise RuntimeError(f"the dev server exited: {tuned.log_tail()}")
        try:
            return await Client.connect(tuned.address, data_converter=TEST_DATA_CONVERTER)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def wait_polling(
    client: Client, task_queue: str, host: subprocess.Popen[bytes], timeout_s: float = 120
) -> None:
    """Until the coordination worker polls its queue: its start-up is not the fan-in's lag."""
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + timeout_s
    while not (await client.workflow_service.describe_task_queue(request)).pollers:
        if host.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the coordination worker did not start (exit {host.poll()})")
        await asyncio.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def write(result: dict[str, Any], directory: Path, started_at: datetime) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=2) + "\n"
    paths = [
        directory / "coordinator-latest.json",
        directory / f"coordinator-{result['shards']}shards-{stamp}.json",
    ]
    for path in paths:
        path.write_text(text)
    return paths


def log(message: str) -> None:
    print(f"[bench-coordinator] {message}", file=sys.stderr, flush=True)


def main() -> None:
    exit_after(bench(parse_args()), log=log, interrupted=lambda: 130, failed=1)


if __name__ == "__main__":
    main()
