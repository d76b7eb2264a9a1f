"""Scaled out, as production runs it: two processes of every worker and two API processes,
every database on PostgreSQL, through the soak's faults (`make soak SOAK_ARGS="--processes
2 --database postgresql"` in small).

Two processes of a service race for the same tasks, and each migrated its database at start
beside the other; two API processes take the same callers' requests. Still no step takes
effect twice and every invariant holds, through worker kills (the second of a role as well
as the first), injected errors and a dev-server restart.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak import SoakOptions, run_soak

ORDERS = 40


async def test_two_of_each_process_on_postgresql_keep_every_invariant(tmp_path: Path) -> None:
    options = SoakOptions(
        orders=ORDERS,
        concurrency=8,
        kills=2,
        injections=1,
        seed=20261201,
        step_timeout_s=5,
        order_timeout_s=240,
        output_dir=tmp_path,
        processes=2,
        database="postgresql",
    )
    result = await run_soak(options)

    params = result["params"]
    assert (params["processes"], params["api_processes"], params["database"]) == (
        2,
        2,
        "postgresql",
    )
    assert result["faults"]["by_kind"] == {
        "injected_errors": 1,
        "server_restart": 1,
        "worker_kill": 2,
    }
    assert result["faults"]["found_dead"] == []
    assert result["orders"]["total"] == ORDERS
    failed = {name: c for name, c in result["invariants"].items() if c["violations"]}
    assert result["violations"] == 0, json.dumps(failed, indent=2)
    assert all(check["checked"] > 0 for check in result["invariants"].values())
    # Twelve processes ran to the end: five roles twice over, and two APIs.
    survivors = result["invariants"]["no process died unless a fault killed it"]
    assert survivors["checked"] == 12
