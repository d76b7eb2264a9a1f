"""`python -m bench.run` (`make bench`): the checkout against a bare Temporal floor, what the
server profile buys, and what the Coordination State Layer and observability cost.

Everything runs as `make up` runs it (bench/system.py): temporal-dev/start.sh on a database
file, and on it three stacks (one process per worker, the API), coordination on and off,
and coordinated with observability on, plus
the baseline's own workflow and activity worker processes; beside it a stock `temporal
server start-dev` on a database file of its own, with baseline workers of its own. Kinds:

- orders: happy-path checkouts through `POST /orders` (a real customer key) on the
  coordinated stack; orders_uncoordinated: the same through the other stack's API;
  orders_observed: the same through a third, coordinated stack with observability on
  (traces exported over OTLP/HTTP to a loopback receiver, JSON logs, metrics endpoints;
  `ratio_observability_on_off` = its orders/s ÷ the coordinated stack's, which has them off);
- baseline: bare workflows running as many no-op activities as a happy checkout of the
  current code ran (read from a warm-up order's history: `activities_per_saga`), started
  with the Temporal client, on the tuned server;
- stock_baseline: the same bare workflow on the stock server.

Two phases, each in rotating rounds (A B C D E, B C D E A, ...; over a multiple of five
rounds each kind runs equally often in each position, so drift in background load falls on all
alike): `seq`, one saga at a time (latency: `seq_p50_ms`, `baseline_seq_p50_ms`,
`stock_baseline_seq_p50_ms`), then `load`, at `--concurrency` (throughput: `orders_per_s`,
`ratio`, ...). Each saga is timed from its start request to its end, awaited through the
Temporal client rather than by polling the API.

CPU: before and after every round, the user + system seconds the OS accounts to each process
(bench/procstat.py, from /proc) serving that kind, its server included; per saga, per round
and pooled (`cpu_per_order_ratio`: checkout ÷ baseline, load phase). Peak RSS (VmHWM) of
every process is read at the end, after the load (`rss_mb`).

Coordination lag: from a measured coordinated order reaching its terminal status to the
coordinator's `state` reflecting it, from two server-side times the coordinator records
(bench/coordination_lag.py), polled every 2 s through both measured phases.

`--curve` runs the checkout and the baseline only, at concurrency 1, 10, 50 and 100, and
writes `curve-latest.json` (BENCHMARKS.md plots it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType

from activities.inventory import CATALOGUE
from bench import procstat
from bench.cli import exit_after, non_negative_int, positive_int
from bench.coordination_lag import POLL_INTERVAL_S, LagProbe
from bench.load import ORDER_SKU, Batch, baseline_saga, order_saga, run_batch
from bench.report import build_curve, build_result, machine, render_table, write_results
from bench.system import System, running_system

RESULTS_DIR = Path(__file__).resolve().parent / "results"

KINDS = ("baseline", "orders", "orders_uncoordinated", "orders_observed", "stock_baseline")
CURVE_KINDS = ("baseline", "orders")
CURVE_LEVELS = (1, 10, 50, 100)
# After the last round: how long to keep polling for the reports of its last orders.
LAG_SETTLE_S = 15.0

Saga = Callable[[], Awaitable[None]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Order throughput and latency against a Temporal floor.",
    )
    parser.add_argument(
        "--orders",
        type=positive_int,
        default=None,
        help="measured sagas per kind, load phase (default 500; with --curve, per level: 200)",
    )
    parser.add_argument("--concurrency", type=positive_int, default=50, help="sagas in flight")
    parser.add_argument(
        "--seq-orders", type=positive_int, default=60, help="measured sagas per kind, one at a time"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--warmup", type=non_negative_int, default=20, help="uncounted sagas of each kind"
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        help="rotating rounds each phase is split into (default 5, one per kind; with "
        "--curve 4; a multiple of the kinds, 5 or with --curve 2, balances them)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before one saga counts as failed"
    )
    parser.add_argument(
        "--curve",
        action="store_true",
        help=f"throughput and p99 at concurrency {', '.join(map(str, CURVE_LEVELS))} instead",
    )
    args = parser.parse_args(argv)
    if args.orders is None:
        args.orders = 200 if args.curve else 500
    if args.rounds is None:
        args.rounds = 4 if args.curve else len(KINDS)
    if args.curve and args.orders < max(CURVE_LEVELS):
        # Fewer sagas than lanes would never reach the level's concurrency.
        parser.error(f"--curve needs --orders of at least {max(CURVE_LEVELS)}")
    # Each order takes one unit from a freshly seeded stock (each stack has its own);
    # beyond it they would fail as OUT_OF_STOCK and measure the compensation path instead.
    stock = next(p.stock for p in CATALOGUE if p.sku == ORDER_SKU)
    used = (
        1
        + args.warmup
        + (args.orders * len(CURVE_LEVELS) if args.curve else args.orders + args.seq_orders)
    )
    if used > stock:
        parser.error(f"that many orders ({used}) exceed {ORDER_SKU}'s stock of {stock}")
    return args


def schedule(total: int, rounds: int, kinds: tuple[str, ...]) -> list[tuple[str, int]]:
    """Split the measured sagas into rounds, rotating which kind goes first (ABCDE BCDEA...)."""
    rounds = min(rounds, total)
    sizes = [total // rounds + (1 if i < total % rounds else 0) for i in range(rounds)]
    plan: list[tuple[str, int]] = []
    for i, size in enumerate(sizes):
        shift = i % len(kinds)
        plan.extend((kind, size) for kind in kinds[shift:] + kinds[:shift])
    return plan


@dataclass
class Phase:
    """One phase's figures: pooled batches and CPU seconds per kind, and every round."""

    concurrency: int
    batches: dict[str, Batch] = field(default_factory=dict)
    cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)  # kind -> process -> s
    driver_cpu_s: dict[str, float] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Measured:
    phases: dict[str, Phase] = field(default_factory=dict)
    run_order: list[str] = field(default_factory=list)
    steps: tuple[str, ...] = ()


class PlacedOrders:
    """Remembers the warm-up orders placed, to read the activities of one from its history."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def placed(self, order_id: str) -> None:
        self.ids.append(order_id)

    def finished(self, order_id: str) -> None:
        pass


async def happy_activities(system: System, order_id: str) -> tuple[str, ...]:
    """The activities a completed happy checkout ran, in order, from its history."""
    history = await system.client.get_workflow_handle(order_id).fetch_history()
    return tuple(
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )


def saga_kinds(system: System, steps: tuple[str, ...], probe: LagProbe | None) -> dict[str, Saga]:
    """Every kind this system can run; `probe` sees the coordinated orders (lag)."""
    base = system.baseline
    sagas: dict[str, Saga] = {
        "baseline": baseline_saga(system.client, base.workflow_queue, base.activity_queue, steps),
        "orders": order_saga(system.http_on, system.client, probe),
    }
    if system.http_off is not None:
        sagas["orders_uncoordinated"] = order_saga(system.http_off, system.client)
    if system.http_observed is not None:
        sagas["orders_observed"] = order_saga(system.http_observed, system.client)
    if system.stock_client is not None and system.stock_baseline is not None:
        stock = system.stock_baseline
        sagas["stock_baseline"] = baseline_saga(
            system.stock_client, stock.workflow_queue, stock.activity_queue, steps
        )
    return sagas


async def warm_up(args: argparse.Namespace, system: System, out: Measured) -> None:
    """One order to learn the happy path's activities, then `--warmup` uncounted of each kind.

    This also waits out worker start-up (tasks queue until workers poll), and is a smoke
    test: a happy path that fails here would fail N times later.
    """
    placed = PlacedOrders()
    first = await run_batch(1, 1, order_saga(system.http_on, system.client, placed), args.timeout)
    if first.failed:
        raise RuntimeError(f"the first order failed: {dict(first.failures)}")
    out.steps = await happy_activities(system, placed.ids[0])
    log(f"a happy checkout runs {len(out.steps)} activities: {', '.join(out.steps)}")
    if args.warmup == 0:
        return
    for kind, one in saga_kinds(system, out.steps, None).items():
        log(f"warm-up: {args.warmup} {kind}")
        warm = await run_batch(args.warmup, args.concurrency, one, args.timeout)
        if warm.failed:
            raise RuntimeError(f"warm-up {kind} failed: {dict(warm.failures)}")
        out.run_order.append(f"warmup {kind} {args.warmup}")


async def run_phase(
    name: str,
    args: argparse.Namespace,
    system: System,
    sagas: dict[str, Saga],
    total: int,
    concurrency: int,
    out: Measured,
    rounds: int | None = None,
) -> Phase:
    phase = out.phases.setdefault(name, Phase(concurrency))
    kinds = tuple(kind for kind in KINDS if kind in sagas)
    charged = system.processes()
    for i, (kind, count) in enumerate(schedule(total, rounds or args.rounds, kinds)):
        pids = charged[kind]
        before, driver_before = procstat.snapshot(pids), procstat.own_cpu_s(os.getpid())
        batch = await run_batch(count, concurrency, sagas[kind], args.timeout)
        used = procstat.delta(before, procstat.snapshot(pids))
        driver = procstat.own_cpu_s(os.getpid()) - driver_before
        phase.batches.setdefault(kind, Batch()).absorb(batch)
        pooled = phase.cpu_s.setdefault(kind, {})
        for process, seconds in used.items():
            pooled[process] = pooled.get(process, 0.0) + seconds
        phase.driver_cpu_s[kind] = phase.driver_cpu_s.get(kind, 0.0) + driver
        out.run_order.append(f"{name} {kind} {count}")
        per_s = batch.completed / batch.wall_s if batch.wall_s else 0.0
        cpu_ms = 1000 * sum(used.values()) / batch.completed if batch.completed else None
        # Per round as well as pooled: the spread across rounds shows how noisy a ratio is.
        phase.rounds.append(
            {
                "phase": name,
                "round": i // len(kinds),
                "kind": kind,
                "count": count,
                "concurrency": concurrency,
                "per_s": per_s,
                "p50_ms": _p50_ms(batch),
                "cpu_ms_per_saga": cpu_ms,
                "cpu_s_by_process": used,
                "driver_cpu_s": driver,
                "load_1m_after": os.getloadavg()[0],
            }
        )
        cpu_text = "-" if cpu_ms is None else f"{cpu_ms:.0f}"
        log(f"{name} {kind}: {count} at {concurrency}: {per_s:.1f}/s, {cpu_text} ms CPU/saga")
    return phase


def _p50_ms(batch: Batch) -> float | None:
    from bench.report import percentile_ms

    return percentile_ms(batch.latencies_s, 50)


async def measure(args: argparse.Namespace, system: System) -> tuple[Measured, LagProbe]:
    out = Measured()
    await warm_up(args, system, out)
    probe = LagProbe(system.client, system.on.env["SAGAWORKS_COORDINATOR_WORKFLOW_ID"])
    sagas = saga_kinds(system, out.steps, probe)
    async with probe.polling():
        await run_phase("seq", args, system, sagas, args.seq_orders, 1, out)
        await run_phase("load", args, system, sagas, args.orders, args.concurrency, out)
        await probe.settle(LAG_SETTLE_S)
    return out, probe


async def measure_curve(args: argparse.Namespace, system: System) -> Measured:
    out = Measured()
    await warm_up(args, system, out)
    sagas = {k: v for k, v in saga_kinds(system, out.steps, None).items() if k in CURVE_KINDS}
    for level in CURVE_LEVELS:
        # Each round at least two lanes' worth of sagas, or it would never reach the
        # level's concurrency, let alone hold it.
        rounds = max(1, min(args.rounds, args.orders // (2 * level)))
        await run_phase(f"c{level}", args, system, sagas, args.orders, level, out, rounds)
    return out


async def observability_check(system: System) -> dict[str, Any]:
    """What the observed stack exported: spans the receiver got (by service), and how many
    worker metrics endpoints answered a scrape. Read after the lag's settle, which outlasts
    the span processors' 5 s export delay."""
    if system.receiver is None:
        return {}
    stats = await asyncio.to_thread(system.receiver.stats)
    up = 0
    async with httpx.AsyncClient(timeout=10) as http:
        for url in system.metrics_urls():
            with contextlib.suppress(httpx.HTTPError):
                up += (await http.get(url)).status_code == 200
    return {**stats, "metrics_endpoints_up": up, "metrics_endpoints": len(system.metrics_urls())}


def peak_rss(system: System) -> dict[str, float | None]:
    named = {**system.every_process(), "bench": os.getpid()}
    return {name: procstat.peak_rss_mb(pid) for name, pid in named.items()}


async def bench(args: argparse.Namespace) -> int:
    watch_stop_signals()
    # The observability-off stacks inherit this environment: an endpoint set here would
    # trace them too, and the ratio would compare on with on.
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        os.environ.pop(name, None)
    started_at = datetime.now(UTC)
    machine_info = machine()  # before we add load of our own
    if args.curve:
        log("starting the tuned dev server, the coordinated stack, the baseline workers")
    else:
        log("starting the tuned and the stock dev server, three stacks, the baseline workers")
    with tempfile.TemporaryDirectory(prefix="sagaworks-bench-") as tmp:
        # HTTP connections for the most sagas that will be in flight at once.
        pool = max(CURVE_LEVELS) if args.curve else args.concurrency
        async with running_system(Path(tmp), pool, references=not args.curve) as sys_:
            try:
                if args.curve:
                    measured, probe = await measure_curve(args, sys_), None
                else:
                    measured, probe = await measure(args, sys_)
            except Exception:
                print(sys_.logs(), file=sys.stderr)
                raise
            rss = peak_rss(sys_)
            observability = await observability_check(sys_) if probe is not None else {}
            failed = any(
                batch.failed
                for phase in measured.phases.values()
                for batch in phase.batches.values()
            )
            if failed:
                print(sys_.logs(), file=sys.stderr)
    common: dict[str, Any] = {
        "machine_info": machine_info,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
        "run_order": measured.run_order,
        "phases": measured.phases,
        "steps": measured.steps,
        "rss_mb": rss,
    }
    params = {
        "orders": args.orders,
        "seq_orders": args.seq_orders,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "lag_poll_interval_s": POLL_INTERVAL_S,
    }
    if probe is None:
        result = build_curve(params=params, **common)
        names = ("curve-latest.json", "curve-{stamp}.json")
    else:
        result = build_result(
            params=params, lag=probe.samples(), observability=observability, **common
        )
        names = ("latest.json", "run-{stamp}.json")
    print(render_table(result))
    for path in write_results(result, args.output_dir, started_at, names):
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
