"""Running the real worker processes and the API, as `make up` does: tests, bench, soak."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from common import services as registry
from common.settings import SERVICES as BUSINESS_SERVICES
from tooling.auth import issue_key
from tooling.codec import TEST_CODEC_ENV
from tooling.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every worker process, the business services first (common/services.py).
SERVICES = tuple(s.name for s in (*registry.BUSINESS_SERVICES, registry.ORDERS))

__all__ = ["REPO_ROOT", "SERVICES", "Stack", "free_port", "run_stack", "wait_until_ready"]


@dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    api_url: str | None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # An operator key issued through the real key store before the API starts.
    operator_token: str = ""
    # API processes beside the first ("api.2", "api.3", ...), each on a port of its own.
    more_api_urls: list[str] = field(default_factory=list)

    @property
    def api_urls(self) -> list[str]:
        return [self.api_url, *self.more_api_urls] if self.api_url else []

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_token}"}

    def task_queue(self, service: str) -> str:
        return self.env[f"SAGAWORKS_{service.upper()}_TASK_QUEUE"]

    def database_url(self, service: str) -> str:
        """The service's database, as its processes see it: a URL from the env, else SQLite."""
        url = self.env.get(f"SAGAWORKS_{service.upper()}_DATABASE_URL")
        return url or f"sqlite:///{self.data_dir / f'{service}.db'}"

    def database_urls(self) -> dict[str, str]:
        """Each business service's database (the orders process owns none)."""
        return {service: self.database_url(service) for service in BUSINESS_SERVICES}

    def start(self, name: str, command: list[str] | None = None) -> None:
        """Start `name` (a worker, "api", or any `command`), logging to the data dir.

        `<role>.<n>` is the n-th process of a worker role or of the API (n from 2).
        """
        role, _, nth = name.partition(".")
        if command is None and role == "api":
            port = self.api_urls[int(nth or 1) - 1].rsplit(":", 1)[1]
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--log-level",
                "warning",
            ]
        elif command is None:
            command = [sys.executable, "-m", f"workers.{role}"]
        with (self.data_dir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(sig)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout=timeout)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.data_dir.glob("*.log"))
        )


@contextmanager
def run_stack(
    temporal_address: str,
    data_dir: Path,
    *,
    with_api: bool = True,
    services: tuple[str, ...] = SERVICES,
    extra_env: dict[str, str] | None = None,
    processes: int = 1,
    api_processes: int = 1,
) -> Iterator[Stack]:
    """Start `processes` per service (and the API's) on UUID task queues; stop all after.

    Several API processes listen on ports of their own (`Stack.api_urls`), as behind a
    load balancer: they share only their databases and the rate limiter's storage.
    """
    prefix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SAGAWORKS_TEMPORAL_ADDRESS": temporal_address,
        "SAGAWORKS_DATA_DIR": str(data_dir),
        "SAGAWORKS_LOG_LEVEL": "WARNING",
        **{registry.get(s).task_queue_env: f"{prefix}-{s}" for s in SERVICES},
        # Tests poll hard; a suite that checks the limits sets its own.
        "SAGAWORKS_RATE_LIMIT": "100000/second",
        "SAGAWORKS_CHAOS_ENABLED": "true",
        # Stacks run side by side: no fixed metrics ports unless a test asks for them.
        "SAGAWORKS_METRICS_PORT_BASE": "0",
        # Each stack its own coordinator, so stacks sharing a dev server never mix reports.
        "SAGAWORKS_COORDINATOR_WORKFLOW_ID": f"{prefix}-coordinator",
        "SAGAWORKS_COORDINATOR_TASK_QUEUE": f"{prefix}-coordination",
        **TEST_CODEC_ENV,  # the key ring the tests' own clients read with (tests/support/codec.py)
        **(extra_env or {}),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(api_processes if with_api else 0)]
    stack = Stack(env, data_dir, urls[0] if urls else None, more_api_urls=urls[1:])
    stack.operator_token = issue_key(env, "operator", name="tests")
    try:
        for name in services:
            for nth in range(1, processes + 1):
                stack.start(name if nth == 1 else f"{name}.{nth}")
        for nth in range(1, len(urls) + 1):
            stack.start("api" if nth == 1 else f"api.{nth}")
        if urls:
            # Every process imports and connects at once; twice the processes, twice the wait.
            wait_until_ready(stack, timeout=60 * max(processes, api_processes))
        yield stack
    finally:
        stack.stop_all()


def wait_until_ready(stack: Stack, timeout: float = 60) -> None:
    assert stack.api_url is not None
    deadline = time.monotonic() + timeout
    for nth, url in enumerate(stack.api_urls, 1):
        name = "api" if nth == 1 else f"api.{nth}"
        while True:
            api = stack.processes.get(name)
            if api is not None and api.poll() is not None:
                raise RuntimeError(f"{name} exited with {api.returncode}\n{stack.logs()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {timeout}s\n{stack.logs()}")
            time.sleep(0.2)
