"""A throwaway PostgreSQL cluster for tests, from Debian's `postgresql` package.

Each service can move to PostgreSQL by URL (ARCHITECTURE.md, Processes and data flow); the
activity tests run against
both backends so that the idempotency and no-oversell guarantees hold on each.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tooling.ports import free_port

USER = "sagaworks"


def _binary(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    found = candidates[0] if candidates else shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"PostgreSQL's {name} not found: install Debian's `postgresql` package "
            "(.ci/run does this)"
        )
    return found


def _as_server_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; the Debian package provides a `postgres` user.
    if os.geteuid() == 0:
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if runuser is None:
            raise FileNotFoundError("runuser (util-linux) is needed to start PostgreSQL as root")
        return [runuser, "-u", "postgres", "--", *command]
    return command


@dataclass(frozen=True)
class PostgresCluster:
    port: int

    def new_database(self, prefix: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={database}"


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    root = Path(tempfile.mkdtemp(prefix="sagaworks-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres")
    data, port = root / "data", free_port()
    run = _as_server_user
    subprocess.run(
        run([_binary("initdb"), "-D", str(data), "-A", "trust", "-U", USER, "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = _binary("pg_ctl")
    subprocess.run(
        run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresCluster(port)
    finally:
        subprocess.run(
            run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)
