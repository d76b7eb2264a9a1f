"""Dev servers for the bench, each on a database file of its own, on free ports.

- `tuned`: temporal-dev/start.sh itself, as `make up` runs it, so the bench measures the
  very profile (temporal-dev/profile.args) and search attributes a developer gets;
- `stock`: a bare `temporal server start-dev --db-filename ...`: no tuning at all, the
  reference that shows what the profile buys;
- `custom`: the bare server plus given arguments (bench/levers.py tries them one by one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client
from temporalio.converter import DataConverter

from common.binaries import find_binary
from tooling.stack import REPO_ROOT, free_port

START_SH = REPO_ROOT / "temporal-dev" / "start.sh"


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    address: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def _command(kind: str, db: Path, port: int, ui_port: int, extra: Sequence[str]) -> list[str]:
    if kind == "tuned":
        # start.sh reads its port, UI port and DB from the environment (see _env).
        return [str(START_SH), "--headless", *extra]
    return [
        find_binary("temporal"),
        "server",
        "start-dev",
        "--db-filename",
        str(db),
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--headless",
        "--log-level",
        "error",
        *extra,
    ]


def _env(db: Path, port: int, ui_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "SAGAWORKS_TEMPORAL_PORT": str(port),
        "SAGAWORKS_TEMPORAL_UI_PORT": str(ui_port),
        "SAGAWORKS_TEMPORAL_DB": str(db),
        "SAGAWORKS_TEMPORAL_IP": "127.0.0.1",
        "SAGAWORKS_TEMPORAL_LOG_LEVEL": "error",
        "SAGAWORKS_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
    }


@contextlib.contextmanager
def server(kind: str, root: Path, extra: Sequence[str] = ()) -> Iterator[Server]:
    """Start a dev server of `kind` with its DB and log under `root`; stop it on exit."""
    root.mkdir(parents=True, exist_ok=True)
    db, port, ui_port = root / "temporal.db", free_port(), free_port()
    log_path = root / f"temporal-{kind}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            _command(kind, db, port, ui_port, extra),
            env=_env(db, port, ui_port),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: start.sh's search-attribute helper goes with it.
            start_new_session=True,
        )
    try:
        yield Server(kind, process, f"127.0.0.1:{port}", log_path)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    # Anything left in its group (the helper, if it outlived a failed start).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def connect(
    server: Server, converter: DataConverter | None = None, timeout_s: float = 60
) -> Client:
    """Connect once the server answers, and (tuned) once the search attributes exist."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} server exited: {server.log_tail()}")
        try:
            client = await Client.connect(
                server.address, data_converter=converter or DataConverter.default
            )
            if server.name != "tuned" or await _has_search_attributes(client):
                return client
        except RuntimeError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{server.name} server not ready: {server.log_tail()}")
        await asyncio.sleep(0.3)


async def _has_search_attributes(client: Client) -> bool:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    from tooling.temporal import SEARCH_ATTRIBUTES

    answer = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return all(key.name in answer.custom_attributes for key in SEARCH_ATTRIBUTES)
