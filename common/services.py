"""The services, defined once: name, task queue, database, worker entry point.

Everything that lists services derives from `SERVICES` here: the settings
(`SAGAWORKS_<NAME>_TASK_QUEUE`, `SAGAWORKS_<NAME>_DATABASE_URL`), the sagas' task-queue
map, the API's service names (chaos drills, circuit actions), the coordinator's list, the
metrics ports, the Procfile (`python -m common.services procfile`; a test keeps the file
in step), the test stacks, the bench, the soak and the invariants. ARCHITECTURE.md, "Adding
a service", lists what else a new service brings (its activities, worker and migrations).

No imports from the rest of the project: settings, workflows and tools all read this.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    name: str
    # `python -m <worker>` runs its worker process (workers/<name>.py).
    worker: str
    # A business service owns a database (migrations/<name>/) and serves activities; the
    # orders process runs the sagas and the coordinator instead.
    owns_database: bool = True
    # Where its steps' effects live, one row per step under the step's idempotency key:
    # what the invariants count to prove each step took effect at most once.
    effect_table: str | None = None
    effect_key: str | None = None

    @property
    def task_queue_env(self) -> str:
        return f"SAGAWORKS_{self.name.upper()}_TASK_QUEUE"

    @property
    def database_env(self) -> str:
        return f"SAGAWORKS_{self.name.upper()}_DATABASE_URL"


ORDERS = Service("orders", "workers.orders", owns_database=False)
INVENTORY = Service(
    "inventory", "workers.inventory", True, "inventory_reservation", "reservation_key"
)
PAYMENTS = Service("payments", "workers.payments", True, "payments_payment", "authorization_key")
SHIPPING = Service("shipping", "workers.shipping", True, "shipping_shipment", "shipment_key")
NOTIFICATIONS = Service(
    "notifications", "workers.notifications", True, "notifications_notification", "notification_key"
)

# The business services: each its own worker process, task queue and database.
BUSINESS_SERVICES: tuple[Service, ...] = (INVENTORY, PAYMENTS, SHIPPING, NOTIFICATIONS)
BUSINESS_NAMES: tuple[str, ...] = tuple(service.name for service in BUSINESS_SERVICES)
# Every worker process. The order is part of the contract: worker metrics ports are
# `SAGAWORKS_METRICS_PORT_BASE` + 1 + the index here, so a new service goes at the end.
WORKERS: tuple[Service, ...] = (ORDERS, *BUSINESS_SERVICES)
BY_NAME = {service.name: service for service in WORKERS}


def get(name: str) -> Service:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no service named {name!r}; known: {', '.join(BY_NAME)}") from None


# --- the process list (`make up` runs it with honcho) ---------------------------------------

PROCFILE_HEAD = ("temporal: temporal-dev/start.sh",)
PROCFILE_TAIL = (
    "api: SAGAWORKS_CHAOS_ENABLED=true .venv/bin/python -m uvicorn api.main:app"
    " --host 127.0.0.1 --port 8000",
    "banner: .venv/bin/python temporal-dev/banner.py",
)


def procfile() -> str:
    """The Procfile: the dev server, the business services, the orders worker, the API."""
    workers = [f"{s.name}: .venv/bin/python -m {s.worker}" for s in (*BUSINESS_SERVICES, ORDERS)]
    return "\n".join([*PROCFILE_HEAD, *workers, *PROCFILE_TAIL]) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["procfile"]:
        sys.stdout.write(procfile())
        return 0
    if argv == ["names"]:
        sys.stdout.write("\n".join(BUSINESS_NAMES) + "\n")
        return 0
    sys.stderr.write("usage: python -m common.services procfile|names\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
