"""`python -m bench.coordinator_host`: the coordination worker alone, as the orders process runs it.

The coordinator bench (bench/coordinator_bench.py) runs the root and its shards here, in a
process of their own, exactly as `workers.orders` builds them (`coordination_worker`), but
without the sagas or the orders process's own reports, so the reporters are the bench's.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from common.settings import Settings
from workers.orders import coordination_worker
from workers.runner import main


def build(client: Client, settings: Settings) -> Worker:
    return coordination_worker(client, settings)


if __name__ == "__main__":
    main("orders", build)
