"""`python -m bench.soak` (`make soak`): many orders through faults, then the invariants.

Starts its own system on free ports and a throwaway directory: a dev server on a database
file, `--processes` processes per worker role and as many API processes (on ports of their
own; the lanes take turns between them), each service's database in a SQLite file or, with
`--database postgresql`, in a throwaway PostgreSQL cluster. Drives `--orders` orders of
every fixture through HTTP at `--concurrency` (each lane places an order, decides it if it
waits for approval, follows it to its end, then takes the next), while faults fire at
random points: `--kills` worker processes (any of them) SIGKILLed and restarted,
`--injections` spells of injected errors in a random service (`PUT /admin/faults/...`,
then `DELETE`), and one restart of the dev server.

Then, with every process stopped so nothing can still write, it checks the invariants of
`bench/invariants.py` in the services' own databases, plus that each order ended as its
fixture says and that no process died unless a fault killed it. It prints the counts and
writes them to `bench/results/soak-latest.json`. The exit code is 1 if anything is violated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.cli import exit_after, non_negative_int, positive_int
from bench.invariants import INITIAL_STOCK, Check, check_all, read_databases, violations
from bench.soak_driver import Driver, HttpStats, OrderResult
from bench.soak_faults import Fault, FaultInjector, FaultLog, plan_faults
from bench.soak_plan import PlannedOrder, plan_orders
from tooling.databases import BACKENDS, database_env
from tooling.dev_server import dev_server
from tooling.postgres import postgres_cluster
from tooling.stack import Stack, run_stack

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RETURN_PARCEL_TIMEOUT_S = 60


@dataclass
class SoakOptions:
    orders: int = 1000
    concurrency: int = 40
    kills: int = 12
    injections: int = 4
    server_restart: bool = True
    seed: int | None = None
    # Shorter than the 30 s default: a killed attempt is retried only after its step
    # timeout, and a soak with a dozen kills should not spend its time waiting for that.
    step_timeout_s: int = 10
    order_timeout_s: float = 900
    output_dir: Path = RESULTS_DIR
    # Processes per worker role, and API processes: several at once must change nothing.
    processes: int = 1
    database: str = "sqlite"  # or "postgresql"


def parse_args(argv: list[str] | None = None) -> SoakOptions:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description="Orders under random faults, then invariants."
    )
    parser.add_argument("--orders", type=positive_int, default=1000)
    parser.add_argument("--concurrency", type=positive_int, default=40, help="orders in flight")
    parser.add_argument("--kills", type=non_negative_int, default=12, help="worker SIGKILLs")
    parser.add_argument(
        "--injections",
        type=non_negative_int,
        default=4,
        help="spells of injected errors (PUT /admin/faults) in a random service",
    )
    parser.add_argument(
        "--no-server-restart", action="store_true", help="skip the one dev-server restart"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    parser.add_argument("--step-timeout", type=positive_int, default=10, help="seconds per step")
    parser.add_argument("--order-timeout", type=float, default=900.0, help="seconds per order")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--processes", type=positive_int, default=1, help="processes per worker and of the API"
    )
    parser.add_argument("--database", choices=BACKENDS, default="sqlite")
    args = parser.parse_args(argv)
    return SoakOptions(
        orders=args.orders,
        concurrency=args.concurrency,
        kills=args.kills,
        injections=args.injections,
        server_restart=not args.no_server_restart,
        seed=args.seed,
        step_timeout_s=args.step_timeout,
        order_timeout_s=args.order_timeout,
        output_dir=args.output_dir,
        processes=args.processes,
        database=args.database,
    )


async def run_soak(options: SoakOptions) -> dict[str, Any]:
    seed = options.seed if options.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    plan = plan_orders(options.orders, seed, run_id)
    faults = plan_faults(
        options.orders, options.kills, options.server_restart, rng, options.injections
    )
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    log(
        f"seed {seed}: {options.orders} orders, {len(faults)} faults, run {run_id}, "
        f"{options.processes} process(es) each, {options.database}"
    )

    stats, fault_log = HttpStats(), FaultLog()
    extra_env = {
        "SAGAWORKS_STEP_TIMEOUT_S": str(options.step_timeout_s),
        "SAGAWORKS_APPROVAL_TIMEOUT_S": str(int(options.order_timeout_s) * 2),
        # Returns left without a parcel expire within the run; the others are received or
        # cancelled long before (a server restart takes seconds, not a minute).
        "SAGAWORKS_RETURN_PARCEL_TIMEOUT_S": str(RETURN_PARCEL_TIMEOUT_S),
    }
    with tempfile.TemporaryDirectory(prefix="sagaworks-soak-") as tmp, ExitStack() as cluster:
        root = Path(tmp)
        data_dir = root / "data"
        data_dir.mkdir()
        postgres = (
            cluster.enter_context(postgres_cluster()) if options.database != "sqlite" else None
        )
        extra_env |= database_env(options.database, postgres)
        processes = options.processes
        with (
            dev_server(root, log_dir=data_dir) as server,
            run_stack(
                server.address,
                data_dir,
                extra_env=extra_env,
                processes=processes,
                api_processes=processes,
            ) as stack,
        ):
            # Any worker process may be killed, the second of a role as well as the first.
            workers = tuple(name for name in stack.processes if not name.startswith("api"))
            injector = FaultInjector(server, stack, workers, rng, fault_log)
            try:
                results = await _drive(options, plan, stack, injector, faults, stats)
            except BaseException:
                print(stack.logs(), file=sys.stderr)
                raise
            survivors = _survivors(stack)
            stuck = [r for r in results if r.problem]
            # A stuck order or a process that died: its logs say why, and go with the stack.
            if stuck or any(code is not None for code in survivors.values()):
                print(stack.logs(), file=sys.stderr)
        # Every process has stopped: nothing can still write what the checks read.
        statuses = {r.order_id: r.status or "UNKNOWN" for r in results if r.order_id}
        returns = _return_statuses(results)
        databases = read_databases(stack.database_urls())
        checks = check_all(databases, statuses, INITIAL_STOCK, returns)
    checks += [
        outcomes_as_planned(results),
        returns_as_planned(results),
        _processes_check(survivors, fault_log),
    ]

    result = {
        "params": {
            "orders": options.orders,
            "concurrency": options.concurrency,
            "kills": options.kills,
            "injections": options.injections,
            "server_restart": options.server_restart,
            "seed": seed,
            "step_timeout_s": options.step_timeout_s,
            "processes": options.processes,
            "api_processes": options.processes,
            "database": options.database,
        },
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(time.monotonic() - clock, 1),
        "orders": _order_counts(results),
        "returns": _return_counts(results),
        "faults": fault_log.to_json(),
        "http": stats.to_json(),
        "invariants": {check.name: check.to_json() for check in checks},
        "violations": violations(checks),
    }
    print(render(result))
    for path in write_results(result, options.output_dir, started_at):
        log(f"wrote {path}")
    return result


async def _drive(
    options: SoakOptions,
    plan: list[PlannedOrder],
    stack: Stack,
    injector: FaultInjector,
    faults: list[Fault],
    stats: HttpStats,
) -> list[OrderResult]:
    assert stack.api_url is not None
    limits = httpx.Limits(max_connections=options.concurrency + 10)
    async with AsyncExitStack() as clients:
        # One client per API process; lane i drives through API i mod M, as a load
        # balancer would spread the callers, so every process serves orders all along.
        drivers = [
            Driver(
                await clients.enter_async_context(
                    httpx.AsyncClient(
                        base_url=url, timeout=30, limits=limits, headers=stack.auth_headers()
                    )
                ),
                stats,
                options.order_timeout_s,
            )
            for url in stack.api_urls
        ]
        placed = 0
        finished = asyncio.Event()

        def count_placed() -> None:
            nonlocal placed
            placed += 1
            if placed % 100 == 0:
                log(f"{placed} orders placed")

        tickets = iter(plan)
        results: list[OrderResult] = []

        async def lane(driver: Driver) -> None:
            for planned in tickets:  # lanes share the iterator: each takes the next free order
                results.append(await driver.drive(planned, count_placed))

        faulting = asyncio.create_task(injector.run(faults, lambda: placed, finished))
        try:
            lanes = min(options.concurrency, len(plan))
            await asyncio.gather(*(lane(drivers[n % len(drivers)]) for n in range(lanes)))
        finally:
            finished.set()
            await faulting
    return sorted(results, key=lambda r: r.planned.index)


def _survivors(stack: Stack) -> dict[str, int | None]:
    """Each process's exit code now: None for every one still running, as all should be."""
    return {name: process.poll() for name, process in stack.processes.items()}


def outcomes_as_planned(results: list[OrderResult]) -> Check:
    check = Check("every order ends as its fixture says", checked=len(results))
    for result in results:
        fixture = result.planned.fixture
        want = (fixture.status, fixture.failure_reason)
        got = (result.status, result.failure_reason)
        if result.problem or got != want:
            check.fail(
                f"{result.order_id or result.planned.idempotency_key} ({fixture.name}): "
                f"{got}, expected {want}{'; ' + result.problem if result.problem else ''}"
            )
    return check


def _return_statuses(results: list[OrderResult]) -> dict[str, str]:
    """Every return the run made: planned ones as last seen, refused over-claims FAILED."""
    statuses = {r.return_id: r.return_status or "UNKNOWN" for r in results if r.return_id}
    for result in results:
        statuses |= dict.fromkeys(result.refused_returns, "FAILED")
    return statuses


def returns_as_planned(results: list[OrderResult]) -> Check:
    planned = [r for r in results if r.planned.ret is not None and r.status == "COMPLETED"]
    check = Check("every return ends as its fixture says", checked=len(planned))
    for result in planned:
        assert result.planned.ret is not None
        fixture = result.planned.ret.fixture
        if result.problem or result.return_status != fixture.status:
            check.fail(
                f"{result.return_id or result.order_id} ({fixture.name}): "
                f"{result.return_status}, expected {fixture.status}"
                f"{'; ' + result.problem if result.problem else ''}"
            )
        if len(result.refused_returns) != 1:
            check.fail(f"{result.order_id}: over-claim refused as {result.refused_returns}")
    return check


def _return_counts(results: list[OrderResult]) -> dict[str, Any]:
    made = [r for r in results if r.return_id]
    return {
        "total": len(made),
        "by_status": dict(sorted(Counter(r.return_status or "UNKNOWN" for r in made).items())),
        "over_claims_refused": sum(len(r.refused_returns) for r in results),
    }


def _processes_check(survivors: dict[str, int | None], fault_log: FaultLog) -> Check:
    check = Check("no process died unless a fault killed it", checked=len(survivors))
    for dead in fault_log.found_dead:
        check.fail(dead)
    for name, code in sorted(survivors.items()):
        if code is not None:
            check.fail(f"{name} had exited with {code} at the end of the run")
    return check


def _order_counts(results: list[OrderResult]) -> dict[str, Any]:
    return {
        "total": len(results),
        "by_status": dict(sorted(Counter(r.status or "UNKNOWN" for r in results).items())),
        "by_outcome": dict(
            sorted(
                Counter(
                    f"{r.status}/{r.failure_reason}" if r.failure_reason else str(r.status)
                    for r in results
                ).items()
            )
        ),
        "by_fixture": dict(sorted(Counter(r.planned.fixture.name for r in results).items())),
    }


def render(result: dict[str, Any]) -> str:
    orders, faults, http = result["orders"], result["faults"], result["http"]
    lines = [
        f"soak: {orders['total']} orders in {result['duration_s']:.0f} s "
        f"(seed {result['params']['seed']})",
        "orders by status:    " + _pairs(orders["by_status"]),
        "orders by outcome:   " + _pairs(orders["by_outcome"]),
        "orders by fixture:   " + _pairs(orders["by_fixture"]),
        f"returns: {result['returns']['total']}, by status "
        + _pairs(result["returns"]["by_status"])
        + f"; over-claims refused {result['returns']['over_claims_refused']}",
        "faults by kind:      " + _pairs(faults["by_kind"]),
        "workers killed:      " + _pairs(faults["worker_kills_by_target"]),
        f"http: {http['retries']} retries, {http['replayed_posts']} POSTs answered by the "
        f"saga a lost attempt had started, {http['late_decisions']} late decisions, "
        f"{http['server_errors']} answers 500",
        "invariants:",
    ]
    for name, check in result["invariants"].items():
        lines.append(f"  {name:<55} {check['checked']:>6} checked  {check['violations']} violated")
        lines.extend(f"      {example}" for example in check["examples"][:5])
    lines.append(f"violations: {result['violations']}")
    return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "none"


def write_results(result: dict[str, Any], output_dir: Path, started_at: datetime) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    paths = [
        output_dir / "soak-latest.json",
        output_dir / f"soak-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json",
    ]
    for path in paths:
        path.write_text(text)
    return paths


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


async def _main(options: SoakOptions) -> int:
    # SIGINT and SIGTERM cancel the run, so every process started is stopped on the way out.
    current = asyncio.current_task()
    assert current is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, current.cancel)
    result = await run_soak(options)
    return 1 if result["violations"] else 0


def main() -> None:
    exit_after(_main(parse_args()), log=log, interrupted=lambda: 130, failed=2)


if __name__ == "__main__":
    main()
