"""`python -m bench.run` (`make bench`): order throughput and latency against a Temporal floor.

The whole system runs as `make up` runs it (a dev server, one process per worker, the API)
on free ports and a throwaway data directory. Two kinds of saga run on that one server:

- baseline: bare workflows of four no-op activities, started with the Temporal client, on
  their own workflow and activity worker processes (bench/baseline_worker.py);
- orders: happy-path checkouts through `POST /orders`.

Order of runs: a warm-up of each kind (baseline, then orders; not counted), then the N
measured sagas of each kind split into `--rounds` rounds that alternate which kind goes
first (baseline, orders, orders, baseline, ...), pooled per kind.

Both kinds use the same closed-loop concurrency. Each saga is timed from its start
request to its terminal state, awaited through the Temporal client rather than by polling
the API. The ratio orders/s ÷ baseline/s is what to compare across machines and runs:
absolute figures move with whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from temporalio.client import Client

from activities.inventory import CATALOGUE
from bench.baseline_worker import ROLES
from bench.load import ORDER_SKU, Batch, baseline_saga, order_saga, run_batch
from bench.report import build_result, machine, render_table, write_results
from tests.support.stack import Stack, run_stack
from tests.support.temporal import dev_server_env

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Order throughput and latency against a Temporal floor.",
    )
    parser.add_argument("--orders", type=_positive, default=500, help="measured sagas per run")
    parser.add_argument("--concurrency", type=_positive, default=50, help="sagas in flight")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--warmup", type=_non_negative, default=20, help="uncounted sagas of each kind"
    )
    parser.add_argument(
        "--rounds", type=_positive, default=2, help="alternating rounds the N sagas are split into"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before one saga counts as failed"
    )
    args = parser.parse_args(argv)
    # Each order takes one unit from a freshly seeded stock; beyond it they would fail as
    # OUT_OF_STOCK and measure the compensation path instead.
    stock = next(p.stock for p in CATALOGUE if p.sku == ORDER_SKU)
    if args.orders + args.warmup > stock:
        parser.error(f"--orders plus --warmup must stay within {ORDER_SKU}'s stock of {stock}")
    return args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


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
    """Split the measured sagas into rounds, alternating which kind goes first (ABBA...).

    Background load on a shared machine drifts, and the server's store grows as the run
    goes on; alternating the kinds spreads both over baseline and orders alike.
    """
    rounds = min(rounds, total)
    sizes = [total // rounds + (1 if i < total % rounds else 0) for i in range(rounds)]
    plan: list[tuple[str, int]] = []
    for i, size in enumerate(sizes):
        kinds = ("baseline", "orders") if i % 2 == 0 else ("orders", "baseline")
        plan.extend((kind, size) for kind in kinds)
    return plan


async def measure(
    args: argparse.Namespace, client: Client, stack: Stack
) -> tuple[dict[str, Batch], list[str]]:
    workflow_queue, activity_queue = start_baseline_workers(stack)
    assert stack.api_url is not None
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(base_url=stack.api_url, limits=limits, timeout=30) as http:
        sagas = {
            "baseline": baseline_saga(client, workflow_queue, activity_queue),
            "orders": order_saga(http, client),
        }
        run_order: list[str] = []
        # The warm-up also waits out worker start-up (tasks queue until workers poll), and
        # doubles as a smoke test: a happy path that fails here would fail N times later.
        if args.warmup > 0:
            for kind, one in sagas.items():
                log(f"warm-up: {args.warmup} {kind}")
                warm = await run_batch(args.warmup, args.concurrency, one, args.timeout)
                if warm.failed:
                    raise RuntimeError(f"warm-up {kind} failed: {dict(warm.failures)}")
                run_order.append(f"warmup {kind} {args.warmup}")
        pooled = {kind: Batch() for kind in sagas}
        for kind, count in schedule(args.orders, args.rounds):
            log(f"{kind}: {count} at concurrency {args.concurrency}")
            batch = await run_batch(count, args.concurrency, sagas[kind], args.timeout)
            pooled[kind].absorb(batch)
            run_order.append(f"{kind} {count}")
    return pooled, run_order


async def bench(args: argparse.Namespace) -> int:
    watch_stop_signals()

    started_at = datetime.now(UTC)
    machine_info = machine()  # before we add load of our own
    log("starting the dev server, the workers and the API")
    async with dev_server_env() as env:
        address = env.client.service_client.config.target_host
        with (
            tempfile.TemporaryDirectory(prefix="sagaworks-bench-") as data_dir,
            run_stack(address, Path(data_dir)) as stack,
        ):
            try:
                batches, run_order = await measure(args, env.client, stack)
            except Exception:
                print(stack.logs(), file=sys.stderr)
                raise
            failed = any(batch.failed for batch in batches.values())
            if failed:
                print(stack.logs(), file=sys.stderr)
    result = build_result(
        params={
            "orders": args.orders,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "rounds": args.rounds,
        },
        machine_info=machine_info,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        run_order=run_order,
        orders=batches["orders"],
        baseline=batches["baseline"],
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
    args = parse_args()
    try:
        code = asyncio.run(bench(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; everything started has been stopped")
        code = 128 + (stop_signal[0] if stop_signal else signal.SIGINT)
    except Exception as err:
        log(f"failed: {type(err).__name__}: {err}")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Avoid the interpreter-exit abort in the Temporal core (sdk-python#300).
    os._exit(code)


if __name__ == "__main__":
    main()
