"""Settings shared by every process, read from the environment or `.env`.

Every variable is prefixed ``SAGAWORKS_``; e.g. ``SAGAWORKS_TEMPORAL_ADDRESS``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("data")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAGAWORKS_", env_file=".env", extra="ignore", frozen=True
    )

    # Temporal connection: the dev server by default, a cluster or Temporal Cloud by setting.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_api_key: SecretStr | None = None
    temporal_connect_timeout_s: float = Field(default=60.0, gt=0)

    # One task queue per service (DESIGN §2). Tests override them with UUIDs.
    orders_task_queue: str = "orders"
    inventory_task_queue: str = "inventory"
    payments_task_queue: str = "payments"
    shipping_task_queue: str = "shipping"
    notifications_task_queue: str = "notifications"

    # Each service owns its database; SQLite files under data_dir unless a URL is set.
    data_dir: Path = DEFAULT_DATA_DIR
    inventory_database_url: str | None = None
    payments_database_url: str | None = None
    shipping_database_url: str | None = None
    notifications_database_url: str | None = None

    # Business rules carried into each saga's input so workflow code stays deterministic.
    approval_threshold_cents: int = Field(default=100_000, ge=0)
    approval_timeout_s: int = Field(default=3600, gt=0)
    step_timeout_s: int = Field(default=30, gt=0)
    notification_timeout_s: int = Field(default=10, gt=0)

    # Gateway bounds: a request never waits longer than this on Temporal or a worker.
    api_temporal_timeout_s: float = Field(default=5.0, gt=0)

    # Worker bulkhead: concurrent activities per worker process.
    max_concurrent_activities: int = Field(default=50, gt=0)
    # Workflows the orders worker keeps in memory. 0 replays every workflow task from
    # history, which the test suite uses once to flush out hidden nondeterminism.
    max_cached_workflows: int = Field(default=1000, ge=0)

    # Coordination State Layer (DESIGN §3). Off: workers neither report nor break circuits,
    # and the API sheds no load (the benchmark's "coordination off" arm).
    coordination_enabled: bool = True
    coordinator_workflow_id: str = "sagaworks-coordinator"
    # Its own task queue (served by the orders process), so reports never wait behind a
    # backlog of saga tasks.
    coordinator_task_queue: str = "coordination"
    # Each worker process sends at most one report per interval; Temporal advises at most
    # ~5 signals/s into one workflow, so never below a second.
    report_interval_s: float = Field(default=1.0, ge=1.0)
    # Circuit breaking: open when at least `min_calls` calls in the last `window_s` seconds
    # failed at `error_ratio` or more; stay open `open_s` seconds, then let a probe through.
    circuit_breaker_enabled: bool = True
    circuit_min_calls: int = Field(default=10, gt=0)
    circuit_error_ratio: float = Field(default=0.5, gt=0, le=1)
    circuit_window_s: int = Field(default=30, gt=0)
    circuit_open_s: int = Field(default=10, gt=0)
    # Statistics (rates, error ratio, latency percentiles, throughput) cover this window.
    stats_window_s: int = Field(default=60, gt=0)
    # Load shedding: POST /orders answers 503 past this many sagas in flight.
    max_in_flight_sagas: int = Field(default=2_000, gt=0)
    shed_retry_after_s: int = Field(default=5, gt=0)
    # GET /coordination/stream sends a heartbeat comment when idle this long.
    sse_heartbeat_s: float = Field(default=15.0, gt=0)

    def database_url(self, service: str) -> str:
        explicit: str | None = getattr(self, f"{service}_database_url")
        if explicit:
            return explicit
        return f"sqlite:///{self.data_dir / f'{service}.db'}"


SERVICES = ("inventory", "payments", "shipping", "notifications")


@lru_cache
def get_settings() -> Settings:
    return Settings()
