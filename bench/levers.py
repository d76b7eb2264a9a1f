"""`python -m bench.levers`: what each dev-server setting buys, one variant at a time.

For each variant, a fresh dev server on a database file (bench/servers.py, `custom`) with
the variant's arguments, and the baseline's own two worker processes; then bare workflows
of `--steps` no-op activities: sequentially (latency) and at `--concurrency` (throughput),
with the server's CPU seconds per workflow from /proc. The figures decided what
temporal-dev/profile.args keeps (BENCHMARKS.md, "Server profile"); run it again after a
Temporal upgrade to see whether they still hold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat
from bench.baseline import BENCH_STATUS
from bench.baseline_worker import ROLES
from bench.cli import exit_after, positive_int
from bench.load import Batch, baseline_saga, run_batch
from bench.report import percentile_ms
from bench.server_profile import profile_args
from bench.servers import connect, server
from tooling.codec import TEST_CODEC_ENV, TEST_DATA_CONVERTER
from tooling.stack import Stack

DC = "--dynamic-config-value"
WAL = ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=full"]


def dc(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in (DC, pair)]


TRANSFER = dc("history.transferProcessorMaxPollRPS=2000")
QUEUES = dc(
    "history.timerProcessorMaxPollRPS=2000",
    "history.visibilityProcessorMaxPollRPS=2000",
    "history.outboundProcessorMaxPollRPS=2000",
)
PARTITIONS = dc("matching.numTaskqueueReadPartitions=1", "matching.numTaskqueueWritePartitions=1")
CACHE = ["--sqlite-pragma", "cache_size=-65536", "--sqlite-pragma", "temp_store=memory"]

VARIANTS: dict[str, list[str]] = {
    "stock": [],
    "wal": WAL,
    "transfer": TRANSFER,
    "transfer200+wal": dc("history.transferProcessorMaxPollRPS=200") + WAL,
    "transfer+wal": TRANSFER + WAL,
    "transfer+wal+queues": TRANSFER + WAL + QUEUES,
    "transfer+wal+partitions": TRANSFER + WAL + PARTITIONS,
    "transfer+wal+cache": TRANSFER + WAL + CACHE,
    "transfer+wal+shardio": TRANSFER + WAL + dc("history.shardIOConcurrency=4"),
}


# `--commands`: (patch checks, search-attribute upserts) added to the bare workflow. A
# happy checkout runs 4 patch checks and 3 business upserts (tests/histories).
COMMAND_VARIANTS = {
    "bare": (0, 0),
    "+4 patches": (4, 0),
    "+3 upserts": (0, 3),
    "+4 patches +3 upserts": (4, 3),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__)
    parser.add_argument("--steps", type=positive_int, default=5, help="no-op activities")
    parser.add_argument("--seq", type=positive_int, default=10, help="sequential, per round")
    parser.add_argument("--workflows", type=positive_int, default=60, help="concurrent, per round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--concurrency", type=positive_int, default=50)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument(
        "--commands",
        action="store_true",
        help="price the checkout's extra commands (patch markers, upserts) instead",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the figures")
    return parser.parse_args()


@dataclass
class Variant:
    name: str
    pids: dict[str, int]  # "server" and the worker roles
    saga: Callable[[], Awaitable[None]]
    seq: Batch = field(default_factory=Batch)
    load: Batch = field(default_factory=Batch)
    cpu_s: dict[str, float] = field(default_factory=dict)


async def start_variant(
    exits: contextlib.AsyncExitStack,
    root: Path,
    name: str,
    extra: list[str],
    steps: tuple[str, ...],
) -> Variant:
    srv = exits.enter_context(server("custom", root / name.replace("+", "-"), extra))
    client = await connect(srv, TEST_DATA_CONVERTER)
    workers = start_workers(exits, srv.address, root / name.replace("+", "-"))
    saga = baseline_saga(client, workers.workflow_queue, workers.activity_queue, steps)
    return Variant(name, {"server": srv.pid, **workers.pids}, saga)


@dataclass
class Workers:
    workflow_queue: str
    activity_queue: str
    pids: dict[str, int]


def start_workers(exits: contextlib.AsyncExitStack, address: str, root: Path) -> Workers:
    """The baseline's workflow and activity worker processes, stopped with `exits`."""
    workers = Stack(_env(address), root, None)
    exits.callback(workers.stop_all)
    prefix = f"levers-{uuid.uuid4().hex[:8]}"
    for role in ROLES:
        queue = f"{prefix}-{role}"
        workers.start(
            role, [sys.executable, "-m", "bench.baseline_worker", role, "--task-queue", queue]
        )
    return Workers(
        f"{prefix}-workflows",
        f"{prefix}-activities",
        {role: workers.processes[role].pid for role in ROLES},
    )


async def command_variants(
    exits: contextlib.AsyncExitStack, root: Path, steps: tuple[str, ...]
) -> list[Variant]:
    """`--commands`: one tuned server and one set of workers; the variants differ only in
    the commands a workflow adds to its activities, priced as the checkout adds them."""
    extra = [*profile_args(), "--search-attribute", f"{BENCH_STATUS.name}=Keyword"]
    srv = exits.enter_context(server("custom", root / "commands", extra))
    client = await connect(srv, TEST_DATA_CONVERTER)
    workers = start_workers(exits, srv.address, root / "commands")
    pids = {"server": srv.pid, **workers.pids}
    queues = (workers.workflow_queue, workers.activity_queue)
    return [
        Variant(
            name,
            pids,
            baseline_saga(client, *queues, steps, patches=patches, upserts=upserts),
        )
        for name, (patches, upserts) in COMMAND_VARIANTS.items()
    ]


async def measure(args: argparse.Namespace, variants: list[Variant]) -> None:
    for v in variants:
        warm = await run_batch(10, 10, v.saga, 60)
        if warm.failed:
            raise RuntimeError(f"{v.name}: warm-up failed {dict(warm.failures)}")
    # Rotating rounds: drift in the machine's background load falls on every variant alike.
    for i in range(args.rounds):
        shift = i % len(variants)
        for v in variants[shift:] + variants[:shift]:
            v.seq.absorb(await run_batch(args.seq, 1, v.saga, 60))
            before = procstat.snapshot(v.pids)
            v.load.absorb(await run_batch(args.workflows, args.concurrency, v.saga, 120))
            for name, used in procstat.delta(before, procstat.snapshot(v.pids)).items():
                v.cpu_s[name] = v.cpu_s.get(name, 0.0) + used
        print(f"[levers] round {i + 1} of {args.rounds} done", file=sys.stderr, flush=True)


def row(v: Variant) -> dict[str, Any]:
    return {
        "variant": v.name,
        "seq_p50_ms": percentile_ms(v.seq.latencies_s, 50),
        "per_s": v.load.completed / v.load.wall_s if v.load.wall_s else 0.0,
        "p99_ms": percentile_ms(v.load.latencies_s, 99),
        "server_cpu_ms_per_workflow": 1000 * v.cpu_s["server"] / max(v.load.completed, 1),
        "cpu_ms_per_workflow": 1000 * sum(v.cpu_s.values()) / max(v.load.completed, 1),
        "failed": v.seq.failed + v.load.failed,
    }


def _env(address: str) -> dict[str, str]:
    import os

    from tooling.stack import REPO_ROOT

    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SAGAWORKS_TEMPORAL_ADDRESS": address,
        "SAGAWORKS_LOG_LEVEL": "WARNING",
        # The stacks' key ring: the baseline pays the same payload encryption they do.
        **TEST_CODEC_ENV,
    }


async def main_async(args: argparse.Namespace) -> int:
    steps = tuple(f"step-{i}" for i in range(args.steps))
    chosen = {n: a for n, a in VARIANTS.items() if not args.only or n in args.only}
    with tempfile.TemporaryDirectory(prefix="sagaworks-levers-") as tmp:
        async with contextlib.AsyncExitStack() as exits:
            if args.commands:
                variants = await command_variants(exits, Path(tmp), steps)
            else:
                variants = [
                    await start_variant(exits, Path(tmp), name, extra, steps)
                    for name, extra in chosen.items()
                ]
            await measure(args, variants)
    rows = [row(v) for v in variants]
    for r in rows:
        print(
            f"{r['variant']:26} seq p50 {r['seq_p50_ms']:6.0f} ms  {r['per_s']:5.1f}/s  "
            f"p99 {r['p99_ms']:6.0f} ms  server {r['server_cpu_ms_per_workflow']:5.1f} "
            f"ms CPU/wf, all {r['cpu_ms_per_workflow']:5.1f}  failed {r['failed']}",
            flush=True,
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    exit_after(
        main_async(parse_args()),
        log=lambda m: print(f"[levers] {m}", file=sys.stderr),
        interrupted=lambda: 130,
        failed=1,
    )
