"""The real system for fault tests: a dev server on a database file, real workers, the API.

`temporal server start-dev --db-filename` keeps every workflow on disk, so the server can
be stopped and started again on the same file and port while the workers and the API keep
running, as a crashed or redeployed Temporal would. `fault_system` adds the rest (the
worker processes through `run_stack`, some of them held: see `holds.py`) and the checks
read each service's database directly (`tooling/invariants.py`). The dev server itself
is `tooling/dev_server.py`, shared with the soak.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from tests.faults import held_worker
from tests.faults.holds import Holds
from tests.support.api_client import order_body, poll
from tests.support.stack import SERVICES, Stack, run_stack
from tooling.codec import TEST_DATA_CONVERTER
from tooling.dev_server import SEARCH_ATTRIBUTES, DevServer, dev_server
from tooling.invariants import (
    EFFECT_TABLES,
    INITIAL_STOCK,
    TERMINAL,
    check_all,
    query,
    read_databases,
)

# Importable from here as before they moved to tooling/dev_server.py.
__all__ = ["SEARCH_ATTRIBUTES", "DevServer", "FaultSystem", "dev_server", "fault_system"]

Status = dict[str, Any]


@dataclass
class FaultSystem:
    server: DevServer
    stack: Stack
    http: httpx.AsyncClient
    holds: Holds
    # Every order placed on this system and its last status seen: the databases hold no other.
    orders: dict[str, Status] = field(default_factory=dict)
    # The workers currently running as `held_worker`, whose steps the holds can stop.
    held: set[str] = field(default_factory=set)
    _client: Client | None = None

    @property
    def data_dir(self) -> Path:
        return self.stack.data_dir

    async def temporal(self) -> Client:
        """A Temporal client of the test's own; it reconnects by itself after a restart."""
        if self._client is None:
            self._client = await Client.connect(
                self.server.address, data_converter=TEST_DATA_CONVERTER
            )
        return self._client

    async def place(self, body: dict[str, Any], key: str | None = None) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        response = await self.http.post("/orders", json=body, headers=headers)
        assert response.status_code == 202, response.text
        order_id: str = response.json()["order_id"]
        self.orders.setdefault(order_id, response.json())
        return order_id

    async def status(self, order_id: str) -> Status | None:
        """The live status, or None while Temporal or the orders worker cannot answer (503)."""
        response = await self.http.get(f"/orders/{order_id}")
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            return None
        status: Status = response.json()
        self.orders[order_id] = status
        return status

    async def wait_until(
        self, order_id: str, condition: Callable[[Status], bool], within: float = 90
    ) -> Status:
        async def fetch() -> Status | None:
            return await self.status(order_id)

        try:
            status = await poll(
                fetch, lambda s: s is not None and condition(s), within=within, interval=0.1
            )
        except AssertionError as err:
            raise AssertionError(f"{order_id}: {err}\n{self.logs()}") from None
        assert status is not None
        return status

    async def wait_for(self, order_id: str, *states: str, within: float = 90) -> Status:
        return await self.wait_until(order_id, lambda s: s["status"] in states, within)

    async def finish(self, order_id: str, within: float = 120) -> Status:
        return await self.wait_for(order_id, *TERMINAL, within=within)

    async def decide(self, order_id: str, action: str, within: float = 60) -> httpx.Response:
        """POST approve, reject or cancel; again while the answer is 503 (a worker not back).

        A 503 means the update may not have reached the saga, so sending it again is what
        a client must do; the saga's validators make the repeat harmless.
        """

        async def send() -> httpx.Response:
            return await self.http.post(f"/orders/{order_id}/{action}")

        return await poll(send, lambda r: r.status_code != 503, within=within, interval=0.5)

    def start_worker(self, name: str, *, held: bool = False) -> None:
        self.stack.start(name, held_worker.command(name) if held else None)
        if held:
            self.held.add(name)
        else:
            self.held.discard(name)

    def swap_worker(self, name: str, *, held: bool) -> None:
        """Replace a worker (stopped cleanly) by the held or the plain variant of itself."""
        assert self.stack.stop(name, signal.SIGTERM) == 0, self.logs()
        self.start_worker(name, held=held)

    def ensure_held(self, name: str) -> None:
        if name not in self.held:
            self.swap_worker(name, held=True)

    async def wait_held(
        self, order_id: str, activity: str, phase: str, within: float = 60
    ) -> list[int]:
        """Wait until an attempt of that step stops at that hold; the attempts held so far."""

        async def fetch() -> list[int]:
            return self.holds.held_attempts(order_id, activity, phase)

        return await poll(fetch, bool, within=within, interval=0.05)

    def kill_worker(self, name: str) -> None:
        code = self.stack.stop(name, signal.SIGKILL)
        assert code == -signal.SIGKILL, f"{name} was not running (exit {code})\n{self.logs()}"

    def effect_ids(self, service: str, key: str) -> list[str]:
        """The IDs of the rows `service` holds under a step's idempotency key."""
        spec = EFFECT_TABLES[service]
        sql = f"SELECT id FROM {spec.table} WHERE {spec.key_column} = :key"
        found = query(self.stack.database_url(service), sql, {"key": key})
        return [str(row_id) for (row_id,) in found]

    def recorded_keys(self, service: str, prefix: str) -> list[str]:
        sql = "SELECT key FROM idempotency_record WHERE key LIKE :prefix"
        found = query(self.stack.database_url(service), sql, {"prefix": f"{prefix}%"})
        return sorted(str(key) for (key,) in found)

    def invariant_violations(self) -> list[str]:
        """Every invariant of `bench/invariants.py`, over every order this system has seen."""
        statuses = {order_id: status["status"] for order_id, status in self.orders.items()}
        databases = read_databases(self.stack.database_urls())
        checks = check_all(databases, statuses, INITIAL_STOCK)
        return [f"{check.name}: {v}" for check in checks for v in check.violations]

    def logs(self) -> str:
        return self.stack.logs()


@asynccontextmanager
async def fault_system(
    root: Path, *, held: tuple[str, ...] = (), extra_env: dict[str, str] | None = None
) -> AsyncIterator[FaultSystem]:
    """Dev server on a DB file, every worker (those in `held` holdable) and the API."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    plain = tuple(name for name in SERVICES if name not in held)
    holds = Holds(data_dir)
    with (
        dev_server(root, log_dir=data_dir) as server,
        run_stack(server.address, data_dir, services=plain, extra_env=extra_env) as stack,
    ):
        try:
            for name in held:
                stack.start(name, held_worker.command(name))
            assert stack.api_url is not None
            async with httpx.AsyncClient(
                base_url=stack.api_url, timeout=30, headers=stack.auth_headers()
            ) as http:
                system = FaultSystem(server, stack, http, holds, held=set(held))
                # One order through every worker: each is up and polling (and inventory has
                # seeded its catalogue) before a test starts counting.
                warm_up = await system.place(order_body())
                final = await system.finish(warm_up, within=120)
                assert final["status"] == "COMPLETED", final
                yield system
        finally:
            # A step still held would make its worker's clean stop wait for it.
            holds.release_all()
