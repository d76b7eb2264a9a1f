"""Faults the soak fires while orders flow: worker processes SIGKILLed, Temporal restarted,
errors injected into a service through the chaos-drill endpoint.

Each fault fires once the driver has placed a given number of orders (drawn at random from
the seed), so a run is spread over the whole load whatever the machine's speed. A killed
worker stays down for a random moment, then a fresh process takes its place; the dev
server is stopped and started again on the same database file, on the same port.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from common.services import BUSINESS_NAMES
from tooling.dev_server import DevServer
from tooling.stack import Stack

WORKER_KILL = "worker_kill"
SERVER_RESTART = "server_restart"
INJECTED_ERRORS = "injected_errors"
KILLED_DOWN_S = (0.5, 4.0)
SERVER_DOWN_S = 3.0
INJECTED_FOR_S = (2.0, 8.0)
INJECTED_RATIOS = (0.3, 0.6, 1.0)
# The services whose calls can be failed (the orders worker runs no activities).
INJECTABLE = BUSINESS_NAMES  # every business service (common/services.py)


@dataclass(frozen=True)
class Fault:
    at_order: int  # fires once this many orders have been placed
    kind: str


def plan_faults(
    orders: int, kills: int, server_restart: bool, rng: random.Random, injections: int = 0
) -> list[Fault]:
    """Kills and injections from 5% to 95% of the way; the server restart in the middle."""
    low, high = max(1, orders // 20), max(1, orders * 19 // 20)
    faults = [Fault(rng.randint(low, high), WORKER_KILL) for _ in range(kills)]
    faults += [Fault(rng.randint(low, high), INJECTED_ERRORS) for _ in range(injections)]
    if server_restart:
        faults.append(
            Fault(rng.randint(max(1, orders * 3 // 10), max(1, orders * 7 // 10)), SERVER_RESTART)
        )
    return sorted(faults, key=lambda fault: fault.at_order)


@dataclass
class FaultLog:
    entries: list[dict[str, Any]] = field(default_factory=list)
    # Processes found dead when a fault came for them: nothing but a fault may end one.
    found_dead: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        by_kind = Counter(entry["kind"] for entry in self.entries)
        killed = Counter(entry["target"] for entry in self.entries if entry["kind"] == WORKER_KILL)
        return {
            "by_kind": dict(sorted(by_kind.items())),
            "worker_kills_by_target": dict(sorted(killed.items())),
            "found_dead": self.found_dead,
            "log": self.entries,
        }


class FaultInjector:
    def __init__(
        self,
        server: DevServer,
        stack: Stack,
        workers: tuple[str, ...],
        rng: random.Random,
        log: FaultLog,
    ) -> None:
        self._server = server
        self._stack = stack
        self._workers = workers
        self._rng = rng
        self.log = log
        self._started = time.monotonic()

    async def run(
        self, faults: list[Fault], placed: Callable[[], int], finished: asyncio.Event
    ) -> None:
        """Fire each fault when its turn comes; stop early if the orders are all done."""
        for fault in faults:
            while placed() < fault.at_order:
                if finished.is_set():
                    return
                await asyncio.sleep(0.1)
            if fault.kind == WORKER_KILL:
                await self._kill_a_worker(fault)
            elif fault.kind == INJECTED_ERRORS:
                await self._inject_errors(fault)
            else:
                await self._restart_server(fault)

    async def _kill_a_worker(self, fault: Fault) -> None:
        name = self._rng.choice(self._workers)
        process = self._stack.processes.get(name)
        if process is not None and process.poll() is not None:
            self.log.found_dead.append(f"{name} had exited with {process.returncode}")
        at = time.monotonic() - self._started
        code = await asyncio.to_thread(self._stack.stop, name, signal.SIGKILL)
        down_s = self._rng.uniform(*KILLED_DOWN_S)
        await asyncio.sleep(down_s)  # the worker stays down: that is the fault
        await asyncio.to_thread(self._stack.start, name)
        self._record(fault, target=name, at_s=at, down_s=down_s, exit_code=code)

    async def _inject_errors(self, fault: Fault) -> None:
        """Fail a share of one service's calls for a while (PUT, wait, DELETE)."""
        service = self._rng.choice(INJECTABLE)
        ratio = self._rng.choice(INJECTED_RATIOS)
        at = time.monotonic() - self._started
        path = f"/admin/faults/{service}"
        async with httpx.AsyncClient(
            base_url=self._stack.api_url or "", timeout=30, headers=self._stack.auth_headers()
        ) as http:
            # A 503 means the service's worker is away (a kill): ask again until it applies.
            await _until(lambda: http.put(path, json={"error_ratio": ratio}), 200)
            down_s = self._rng.uniform(*INJECTED_FOR_S)
            await asyncio.sleep(down_s)
            await _until(lambda: http.delete(path), 204)
        self._record(fault, target=f"{service} x{ratio}", at_s=at, down_s=down_s, exit_code=None)

    async def _restart_server(self, fault: Fault) -> None:
        at = time.monotonic() - self._started
        await asyncio.to_thread(self._server.stop)
        await asyncio.sleep(SERVER_DOWN_S)
        started = time.monotonic()
        await asyncio.to_thread(self._server.start)
        self._record(
            fault,
            target="temporal",
            at_s=at,
            down_s=SERVER_DOWN_S + time.monotonic() - started,
            exit_code=None,
        )

    def _record(
        self, fault: Fault, *, target: str, at_s: float, down_s: float, exit_code: int | None
    ) -> None:
        self.log.entries.append(
            {
                "kind": fault.kind,
                "target": target,
                "after_orders": fault.at_order,
                "at_s": round(at_s, 1),
                "down_s": round(down_s, 1),
                "exit_code": exit_code,
            }
        )


async def _until(
    call: Callable[[], Awaitable[httpx.Response]], status: int, within_s: float = 120
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            if (await call()).status_code == status:
                return
        except httpx.HTTPError:
            pass  # the API reconnecting after a server restart
        if time.monotonic() > deadline:
            raise RuntimeError(f"the chaos-drill endpoint never answered {status}")
        await asyncio.sleep(0.5)
