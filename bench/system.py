"""Everything the bench runs, started as `make up` starts it, and which process serves what.

- the tuned dev server: temporal-dev/start.sh on a database file (bench/servers.py), with
  three stacks on it, each as `make up` runs it (one process per worker, the API): one
  with the coordination layer on, one with it off (`SAGAWORKS_COORDINATION_ENABLED=false`),
  both with observability off (no OTLP endpoint, no metrics ports), and one coordinated
  with observability on (`OBSERVED_ENV`: spans exported over OTLP/HTTP to a loopback
  receiver process, tooling/otlp_receiver.py; JSON logs; worker metrics on free ports);
  and the baseline's own workflow and activity worker processes (bench/baseline_worker.py);
- the stock dev server: bare `temporal server start-dev` on a database file of its own,
  with baseline worker processes of its own.

Each kind of saga is charged the CPU of the processes that serve it plus its server's
(`System.processes`): that is what a saga costs the machine, the bench's own driver apart.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.client import Client

from bench.baseline_worker import ROLES
from bench.servers import Server, connect, server
from tooling.auth import issue_key
from tooling.codec import TEST_CODEC_ENV, TEST_DATA_CONVERTER
from tooling.otlp_receiver import RunningReceiver, running_receiver
from tooling.stack import REPO_ROOT, Stack, run_stack

# The bench's own limits, set high on purpose: one customer key places every order, and
# the per-principal rate limit (ARCHITECTURE.md, Security) would otherwise measure itself,
# not the system.
BENCH_ENV = {"SAGAWORKS_RATE_LIMIT": "1000000/second", **TEST_CODEC_ENV}
UNCOORDINATED_ENV = {"SAGAWORKS_COORDINATION_ENABLED": "false"}
# Everything ARCHITECTURE.md, Observability switches on, as an operator would (the
# endpoint is added per run).
OBSERVED_ENV = {"SAGAWORKS_LOG_FORMAT": "json"}
# The customer the bench's orders belong to (bench/load.py ORDER_BODY).
BENCH_CUSTOMER = "bench"
KEEPALIVE_S = 2.0
METRICS_PORTS_PER_STACK = 6  # base + one per worker role (common/telemetry.py)


@dataclass
class Baseline:
    workflow_queue: str
    activity_queue: str
    workers: Stack


@dataclass
class System:
    tuned: Server
    client: Client  # on the tuned server
    on: Stack
    off: Stack | None
    http_on: httpx.AsyncClient
    http_off: httpx.AsyncClient | None
    baseline: Baseline
    stock: Server | None
    stock_client: Client | None
    stock_baseline: Baseline | None
    observed: Stack | None = None  # coordinated, observability on
    http_observed: httpx.AsyncClient | None = None
    receiver: RunningReceiver | None = None

    def metrics_urls(self) -> list[str]:
        """The observed stack's worker metrics endpoints (common/telemetry.py's offsets)."""
        if self.observed is None:
            return []
        base = int(self.observed.env["SAGAWORKS_METRICS_PORT_BASE"])
        return [f"http://127.0.0.1:{base + i}/metrics" for i in range(1, METRICS_PORTS_PER_STACK)]

    def processes(self) -> dict[str, dict[str, int]]:
        """Per kind of saga, the processes (name: pid) charged with its CPU."""
        kinds = {
            "orders": {"server": self.tuned.pid, **_pids(self.on)},
            "baseline": {"server": self.tuned.pid, **_pids(self.baseline.workers)},
        }
        if self.off is not None:
            kinds["orders_uncoordinated"] = {"server": self.tuned.pid, **_pids(self.off)}
        if self.observed is not None:
            kinds["orders_observed"] = {"server": self.tuned.pid, **_pids(self.observed)}
        if self.stock is not None and self.stock_baseline is not None:
            kinds["stock_baseline"] = {
                "server": self.stock.pid,
                **_pids(self.stock_baseline.workers),
            }
        return kinds

    def every_process(self) -> dict[str, int]:
        """Every process the bench started, by a name that says which stack it belongs to."""
        named = {"server_tuned": self.tuned.pid}
        if self.stock is not None:
            named["server_stock"] = self.stock.pid
        if self.receiver is not None:
            named["otlp_receiver"] = self.receiver.process.pid
        stacks = {"coordinated": self.on, "uncoordinated": self.off, "observed": self.observed}
        stacks |= {"baseline": self.baseline.workers}
        if self.stock_baseline is not None:
            stacks["stock_baseline"] = self.stock_baseline.workers
        for label, stack in stacks.items():
            if stack is not None:
                named |= {f"{label}.{name}": pid for name, pid in _pids(stack).items()}
        return named

    def logs(self) -> str:
        parts = [f"===== {self.tuned.name} server =====\n{self.tuned.log_tail()}"]
        for label, stack in (
            ("coordinated", self.on),
            ("uncoordinated", self.off),
            ("observed", self.observed),
        ):
            if stack is not None:
                parts.append(f"===== {label} stack =====\n{stack.logs()}")
        parts.append(f"===== baseline workers =====\n{self.baseline.workers.logs()}")
        return "\n".join(parts)


def _pids(stack: Stack) -> dict[str, int]:
    return {name: process.pid for name, process in stack.processes.items()}


def _metrics_base() -> str:
    """A base port whose next few ports are free: two stacks must not share metrics ports."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + METRICS_PORTS_PER_STACK < 65_000 and all(
            _free(base + i) for i in range(METRICS_PORTS_PER_STACK)
        ):
            return str(base)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _baseline_workers(address: str, data_dir: Path) -> Baseline:
    """The baseline's two worker processes, hosted like the real ones (workers/runner.py)."""
    import os

    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SAGAWORKS_TEMPORAL_ADDRESS": address,
        "SAGAWORKS_DATA_DIR": str(data_dir),
        "SAGAWORKS_LOG_LEVEL": "WARNING",
        "SAGAWORKS_METRICS_PORT_BASE": "0",
        **BENCH_ENV,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    workers = Stack(env, data_dir, None)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    queues = {role: f"{prefix}-{role}" for role in ROLES}
    for role, queue in queues.items():
        workers.start(
            role, [sys.executable, "-m", "bench.baseline_worker", role, "--task-queue", queue]
        )
    return Baseline(queues["workflows"], queues["activities"], workers)


@contextlib.asynccontextmanager
async def _http(stack: Stack, concurrency: int) -> AsyncIterator[httpx.AsyncClient]:
    """A pooled client holding a real customer key, sized so no request waits for a socket."""
    assert stack.api_url is not None
    token = issue_key(stack.env, "customer", customer_id=BENCH_CUSTOMER, name="bench")
    limits = httpx.Limits(
        max_connections=concurrency,
        max_keepalive_connections=concurrency,
        # Well inside uvicorn's 5 s keep-alive: with httpx's default, also 5 s, a POST can
        # go out on a connection the API is closing at that moment, and fail as ReadError.
        keepalive_expiry=KEEPALIVE_S,
    )
    async with httpx.AsyncClient(
        base_url=stack.api_url,
        limits=limits,
        timeout=30,
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        yield http


@contextlib.asynccontextmanager
async def running_system(
    root: Path, concurrency: int, *, references: bool = True
) -> AsyncIterator[System]:
    """Start it all under `root`; `references=False` leaves out the uncoordinated and the
    observed stacks and the stock server (the curve compares the checkout with the
    baseline only)."""
    async with contextlib.AsyncExitStack() as exits:
        tuned = exits.enter_context(server("tuned", root / "tuned"))
        stock = exits.enter_context(server("stock", root / "stock")) if references else None
        client = await connect(tuned, TEST_DATA_CONVERTER)
        on = exits.enter_context(run_stack(tuned.address, root / "on", extra_env=_stack_env()))
        off = (
            exits.enter_context(
                run_stack(tuned.address, root / "off", extra_env=_stack_env(UNCOORDINATED_ENV))
            )
            if references
            else None
        )
        receiver = observed = None
        if references:
            receiver = exits.enter_context(running_receiver())
            observed_env = {
                **OBSERVED_ENV,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "SAGAWORKS_METRICS_PORT_BASE": _metrics_base(),
            }
            observed = exits.enter_context(
                run_stack(tuned.address, root / "observed", extra_env=_stack_env(observed_env))
            )
        baseline = _baseline_workers(tuned.address, root / "baseline")
        exits.callback(baseline.workers.stop_all)
        stock_client = stock_baseline = None
        if stock is not None:
            stock_client = await connect(stock, TEST_DATA_CONVERTER)
            stock_baseline = _baseline_workers(stock.address, root / "stock-baseline")
            exits.callback(stock_baseline.workers.stop_all)
        http_on = await exits.enter_async_context(_http(on, concurrency))
        http_off = await exits.enter_async_context(_http(off, concurrency)) if off else None
        http_observed = (
            await exits.enter_async_context(_http(observed, concurrency)) if observed else None
        )
        yield System(
            tuned=tuned,
            client=client,
            on=on,
            off=off,
            http_on=http_on,
            http_off=http_off,
            baseline=baseline,
            stock=stock,
            stock_client=stock_client,
            stock_baseline=stock_baseline,
            observed=observed,
            http_observed=http_observed,
            receiver=receiver,
        )


def _stack_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Observability off unless `extra` turns it on: no metrics ports, and no OTLP endpoint
    as long as the bench's own environment sets none (run_stack passes it through)."""
    return {**BENCH_ENV, "SAGAWORKS_METRICS_PORT_BASE": "0", **(extra or {})}
