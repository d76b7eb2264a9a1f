"""`temporal server start-dev` on a database file, restartable on the same file and port.

`--db-filename` keeps every workflow on disk, so the server can be stopped and started
again on the same file and port while the workers and the API keep running, as a crashed
or redeployed Temporal would. The fault suite and the soak use it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common.binaries import find_binary
from tooling.ports import free_port
from tooling.server_profile import profile_args
from tooling.temporal import SEARCH_ATTRIBUTES as SEARCH_ATTRIBUTE_KEYS

SEARCH_ATTRIBUTES = tuple(key.name for key in SEARCH_ATTRIBUTE_KEYS)


@dataclass
class DevServer:
    """`temporal server start-dev` on a database file, restartable on the same file and port."""

    db_path: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        assert self.process is None, "already running"
        temporal = find_binary("temporal")
        command = [
            temporal,
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_path),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--headless",
            "--log-level",
            "error",
            # The same tuned profile as `make up` (temporal-dev/profile.args).
            *profile_args(),
        ]
        # Applied only when the file is new; a restart finds them registered already.
        for name in SEARCH_ATTRIBUTES:
            command += ["--search-attribute", f"{name}=Keyword"]
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(temporal, timeout)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _wait_ready(self, temporal: str, timeout: float) -> None:
        """Ready once the default namespace answers with our search attributes in it."""
        deadline = time.monotonic() + timeout
        probe = [
            temporal,
            "operator",
            "search-attribute",
            "list",
            "--address",
            self.address,
            "--namespace",
            "default",
            "--command-timeout",
            "3s",
        ]
        last = ""
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dev server exited with {self.process.returncode}: {self.log_tail()}"
                )
            answer = subprocess.run(probe, capture_output=True, text=True, timeout=15)
            last = answer.stdout + answer.stderr
            if answer.returncode == 0 and all(name in answer.stdout for name in SEARCH_ATTRIBUTES):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"dev server not ready after {timeout}s: {last[-2000:]}")
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        return process.returncode

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


@contextmanager
def dev_server(root: Path, log_dir: Path | None = None) -> Iterator[DevServer]:
    server = DevServer(root / "temporal" / "temporal.db", (log_dir or root) / "temporal.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
