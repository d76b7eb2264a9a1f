"""Running the real worker processes and the API, as `make up` does, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("inventory", "payments", "shipping", "notifications", "orders")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    api_url: str | None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def task_queue(self, service: str) -> str:
        return self.env[f"SAGAWORKS_{service.upper()}_TASK_QUEUE"]

    def start(self, name: str, command: list[str] | None = None) -> None:
        """Start `name` (a worker, "api", or any `command`), logging to the data dir."""
        if command is None and name == "api":
            assert self.api_url is not None
            port = self.api_url.rsplit(":", 1)[1]
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
            command = [sys.executable, "-m", f"workers.{name}"]
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
) -> Iterator[Stack]:
    """Start one process per service (and the API) on UUID task queues; stop them all after."""
    prefix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SAGAWORKS_TEMPORAL_ADDRESS": temporal_address,
        "SAGAWORKS_DATA_DIR": str(data_dir),
        "SAGAWORKS_LOG_LEVEL": "WARNING",
        **{f"SAGAWORKS_{s.upper()}_TASK_QUEUE": f"{prefix}-{s}" for s in SERVICES},
        # Each stack its own coordinator, so stacks sharing a dev server never mix reports.
        "SAGAWORKS_COORDINATOR_WORKFLOW_ID": f"{prefix}-coordinator",
        "SAGAWORKS_COORDINATOR_TASK_QUEUE": f"{prefix}-coordination",
        **(extra_env or {}),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(env, data_dir, f"http://127.0.0.1:{free_port()}" if with_api else None)
    try:
        for name in services:
            stack.start(name)
        if with_api:
            stack.start("api")
            wait_until_ready(stack)
        yield stack
    finally:
        stack.stop_all()


def wait_until_ready(stack: Stack, timeout: float = 60) -> None:
    assert stack.api_url is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        api = stack.processes.get("api")
        if api is not None and api.poll() is not None:
            raise RuntimeError(f"API exited with {api.returncode}\n{stack.logs()}")
        try:
            if httpx.get(f"{stack.api_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"API not ready after {timeout}s\n{stack.logs()}")
