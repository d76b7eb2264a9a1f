"""`python -m bench.run` (`make bench`): order throughput and latency against a Temporal floor,
and what the Coordination State Layer costs.

The whole system runs as `make up` runs it (a dev server, one process per worker, the API)
on free ports and a throwaway data directory, twice: one stack with the coordination layer
on (as deployed) and one with it off (`SAGAWORKS_COORDINATION_ENABLED=false`: no reports,
no circuit breaking, no load shedding), each with its own task queues, coordinator ID and
databases, on the one dev server. Three kinds of saga run:

- baseline: bare workflows of four no-op activities, started with the Temporal client, on
  their own workflow and activity worker processes (bench/baseline_worker.py);
- orders: happy-path checkouts through `POST /orders` on the coordinated stack;
- orders_uncoordinated: the same checkouts through the other stack's API.

Order of runs: a warm-up of each kind (in that order; not counted), then the N measured
sagas of each kind split into `--rounds` rounds. Each round runs every kind once, the order
rotated by one each round (A B C, B C A, C A B, ...), so over a multiple of three rounds
each kind runs equally often first, second and last, and drift in background load or in
the server's growing store falls on all kinds alike. Rounds are pooled per kind.

All kinds use the same closed-loop concurrency. Each saga is timed from its start request
to its terminal state, awaited through the Temporal client rather than by polling the API.
Two ratios are what to compare across machines and runs (absolute figures move with
whatever else the machine is doing): orders/s ÷ baseline/s, and orders/s with coordination
÷ without (`ratio_coordination_on_off`; the target is at least 0.95).

Coordination lag (`coordination_lag_p50_ms`, `..._p99_ms`; target p99 at most 2 s): the
time from a measured coordinated order reaching its terminal status to the coordinator's
`state` reflecting it, from the two server-side times the coordinator records for it
(bench/coordination_lag.py). Its `state` is polled twice a second for the whole measured
run, not only during coordinated rounds, so the polling costs every kind the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from activities.inventory import CATALOGUE
from bench.baseline_worker import ROLES
from bench.cli import exit_after, non_negative_int, positive_int
from bench.coordination_lag import POLL_INTERVAL_S, LagProbe
from bench.load import ORDER_SKU, Batch, OrderWatcher, baseline_saga, order_saga, run_batch
from bench.report import build_result, machine, render_table, write_results
from tests.support.stack import Stack, run_stack
from tests.support.temporal import dev_server_env

RESULTS_DIR = Path(__file__).resolve().parent / "results"

KINDS = ("baseline", "orders", "orders_uncoordinated")
UNCOORDINATED_ENV = {"SAGAWORKS_COORDINATION_ENABLED": "false"}
# After the last round: how long to keep polling for the reports of its last orders. The
# lag target is 2 s; anything still missing after this is reported as missing.
LAG_SETTLE_S = 15.0
KEEPALIVE_S = 2.0

Saga = Callable[[], Awaitable[None]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Order throughput and latency against a Temporal floor.",
    )
    parser.add_argument("--orders", type=positive_int, default=500, help="measured sagas per run")
    parser.add_argument("--concurrency", type=positive_int, default=50, help="sagas in flight")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--warmup", type=non_negative_int, default=20, help="uncounted sagas of each kind"
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="rotating rounds the N sagas are split into (a multiple of 3 balances them)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before one saga counts as failed"
    )
    args = parser.parse_args(argv)
    # Each order takes one unit from a freshly seeded stock (each stack has its own);
    # beyond it they would fail as OUT_OF_STOCK and measure the compensation path instead.
    stock = next(p.stock for p in CATALOGUE if p.sku == ORDER_SKU)
    if args.orders + args.warmup > stock:
        parser.error(f"--orders plus --warmup must stay within {ORDER_SKU}'s stock of {stock}")
    return args


def start_baseline_workers(stack: Stack) -> tuple[str, str]:
    """Start the baseline's workflow and activity workers beside the real ones."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    queues = {role: f"{prefix}-{role}" for role in ROLES}
    for role, queue in queues.items():
        # Started through the stack, so its teardown stops these with everything else.
        stack.start(
            f"baseline-{role}",
            [sys.executable, "-m", "bench.baseline_worker", role, "--task-queue", queue],
        )
    return queues["workflows"], queues["activities"]


def schedule(total: int, rounds: int) -> list[tuple[str, int]]:
    """Split the measured sagas into rounds, rotating which kind goes first (ABC BCA CAB...).

    Background load on a shared machine drifts, and the server's store grows as the run
    goes on; rotating the kinds spreads both over all of them alike.
    """
    rounds = min(rounds, total)
    sizes = [total // rounds + (1 if i < total % rounds else 0) for i in range(rounds)]
    plan: list[tuple[str, int]] = []
    for i, size in enumerate(sizes):
        shift = i % len(KINDS)
        plan.extend((kind, size) for kind in KINDS[shift:] + KINDS[:shift])
    return plan


@dataclass
class Measured:
    batches: dict[str, Batch] = field(default_factory=lambda: {k: Batch() for k in KINDS})
    run_order: list[str] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def http_clients(
    concurrency: int, *stacks: Stack
) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """One pooled HTTP client per stack's API, sized so no request queues for a connection."""
    limits = httpx.Limits(
        max_connections=concurrency,
        max_keepalive_connections=concurrency,
        # Well inside uvicorn's 5 s keep-alive: with httpx's default, also 5 s, a POST can
        # go out on a connection the API is closing at that moment, and fail as ReadError.
        keepalive_expiry=KEEPALIVE_S,
    )
    async with contextlib.AsyncExitStack() as exits:
        clients = []
        for stack in stacks:
            assert stack.api_url is not None
            http = httpx.AsyncClient(base_url=stack.api_url, limits=limits, timeout=30)
            clients.append(await exits.enter_async_context(http))
        yield tuple(clients)


def saga_kinds(
    client: Client,
    queues: tuple[str, str],
    http_on: httpx.AsyncClient,
    http_off: httpx.AsyncClient,
    watcher: OrderWatcher | None,
) -> dict[str, Saga]:
    """The three kinds; `watcher` sees the coordinated orders (the lag is measured on them)."""
    return {
        "baseline": baseline_saga(client, *queues),
        "orders": order_saga(http_on, client, watcher),
        "orders_uncoordinated": order_saga(http_off, client),
    }


async def warm_up(args: argparse.Namespace, sagas: dict[str, Saga], out: Measured) -> None:
    """Run `--warmup` uncounted sagas of each kind.

    This also waits out worker start-up (tasks queue until workers poll), and is a smoke
    test: a happy path that fails here would fail N times later.
    """
    if args.warmup == 0:
        return
    for kind, one in sagas.items():
        log(f"warm-up: {args.warmup} {kind}")
        warm = await run_batch(args.warmup, args.concurrency, one, args.timeout)
        if warm.failed:
            raise RuntimeError(f"warm-up {kind} failed: {dict(warm.failures)}")
        out.run_order.append(f"warmup {kind} {args.warmup}")


async def run_rounds(args: argparse.Namespace, sagas: dict[str, Saga], out: Measured) -> None:
    for i, (kind, count) in enumerate(schedule(args.orders, args.rounds)):
        batch = await run_batch(count, args.concurrency, sagas[kind], args.timeout)
        out.batches[kind].absorb(batch)
        out.run_order.append(f"{kind} {count}")
        per_s = batch.completed / batch.wall_s if batch.wall_s else 0.0
        # Per round as well as pooled: the spread across rounds shows how noisy a ratio is.
        out.rounds.append(
            {
                "round": i // len(KINDS),
                "kind": kind,
                "count": count,
                "per_s": per_s,
                "load_1m_after": os.getloadavg()[0],
            }
        )
        log(f"{kind}: {count} at concurrency {args.concurrency}: {per_s:.1f}/s")


async def measure(
    args: argparse.Namespace, client: Client, on: Stack, off: Stack
) -> tuple[Measured, LagProbe]:
    queues = start_baseline_workers(on)
    probe = LagProbe(client, on.env["SAGAWORKS_COORDINATOR_WORKFLOW_ID"], POLL_INTERVAL_S)
    out = Measured()
    async with http_clients(args.concurrency, on, off) as (http_on, http_off):
        await warm_up(args, saga_kinds(client, queues, http_on, http_off, None), out)
        async with probe.polling():
            await run_rounds(args, saga_kinds(client, queues, http_on, http_off, probe), out)
            await probe.settle(LAG_SETTLE_S)
    return out, probe


@contextlib.contextmanager
def stacks(address: str) -> Iterator[tuple[Stack, Stack]]:
    """The coordinated and the uncoordinated stack, each with its own data directory."""
    with (
        tempfile.TemporaryDirectory(prefix="sagaworks-bench-on-") as on_dir,
        tempfile.TemporaryDirectory(prefix="sagaworks-bench-off-") as off_dir,
        run_stack(address, Path(on_dir)) as on,
        run_stack(address, Path(off_dir), extra_env=UNCOORDINATED_ENV) as off,
    ):
        yield on, off


def print_logs(*named: tuple[str, Stack]) -> None:
    for name, stack in named:
        print(f"===== {name} stack =====\n{stack.logs()}", file=sys.stderr)


async def bench(args: argparse.Namespace) -> int:
    watch_stop_signals()

    started_at = datetime.now(UTC)
    machine_info = machine()  # before we add load of our own
    log("starting the dev server and two stacks (coordination on and off)")
    async with dev_server_env() as env:
        address = env.client.service_client.config.target_host
        with stacks(address) as (on, off):
            try:
                measured, probe = await measure(args, env.client, on, off)
            except Exception:
                print_logs(("coordinated", on), ("uncoordinated", off))
                raise
            failed = any(batch.failed for batch in measured.batches.values())
            if failed:
                print_logs(("coordinated", on), ("uncoordinated", off))
    result = build_result(
        params={
            "orders": args.orders,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "lag_poll_interval_s": POLL_INTERVAL_S,
        },
        machine_info=machine_info,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        run_order=measured.run_order,
        rounds=measured.rounds,
        orders=measured.batches["orders"],
        orders_uncoordinated=measured.batches["orders_uncoordinated"],
        baseline=measured.batches["baseline"],
        lag=probe.samples(),
    )
    print(render_table(result))
    for path in write_results(result, args.output_dir, started_at):
        log(f"wrote {path}")
    return 1 if failed else 0


# The first SIGINT or SIGTERM received, which decides the exit code.
stop_signal: list[signal.Signals] = []


def watch_stop_signals() -> None:
    """Turn SIGINT and SIGTERM into one cancellation of the run, so teardown always runs.

    A second Ctrl-C is only noted: were it to raise mid-teardown (asyncio.run's default),
    the processes not yet stopped would be left running.
    """
    current = asyncio.current_task()
    assert current is not None

    def on_signal(sig: signal.Signals) -> None:
        if stop_signal:
            log("still stopping the processes started; please wait")
            return
        stop_signal.append(sig)
        log(f"{sig.name}: stopping everything started")
        current.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal, sig)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main() -> None:
    exit_after(
        bench(parse_args()),
        log=log,
        interrupted=lambda: 128 + (stop_signal[0] if stop_signal else signal.SIGINT),
        failed=1,
    )


if __name__ == "__main__":
    main()
