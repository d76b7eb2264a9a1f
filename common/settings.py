"""Settings shared by every process, read from the environment or `.env`.

Every variable is prefixed ``SAGAWORKS_``; e.g. ``SAGAWORKS_TEMPORAL_ADDRESS``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.services import BUSINESS_NAMES, WORKERS

DEFAULT_DATA_DIR = Path("data")
# The business services' names, as the API, the coordinator and the metrics list them.
SERVICES = BUSINESS_NAMES


def _service_fields() -> dict[str, Any]:
    """One task queue per worker process and one database URL per business service.

    Derived from common/services.py, so a new service brings its settings with it:
    `SAGAWORKS_<NAME>_TASK_QUEUE` (default: its name; tests override them with UUIDs) and
    `SAGAWORKS_<NAME>_DATABASE_URL` (default: a SQLite file under data_dir).
    """
    fields: dict[str, Any] = {f"{s.name}_task_queue": (str, s.name) for s in WORKERS}
    for service in WORKERS:
        if service.owns_database:
            fields[f"{service.name}_database_url"] = (str | None, None)
    return fields


if TYPE_CHECKING:
    # mypy cannot see fields made at run time; code reads them through `task_queue()` and
    # `database_url()`, except the orders queue, which every process names directly.
    class _ServiceSettings(BaseSettings):
        orders_task_queue: str
else:
    _ServiceSettings = create_model("_ServiceSettings", __base__=BaseSettings, **_service_fields())


class Settings(_ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="SAGAWORKS_", env_file=".env", extra="ignore", frozen=True
    )

    # Temporal connection: the dev server by default, a cluster or Temporal Cloud by setting.
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_api_key: SecretStr | None = None
    temporal_connect_timeout_s: float = Field(default=60.0, gt=0)

    # Each service's task queue and database URL come from common/services.py (above);
    # the default SQLite files live here.
    data_dir: Path = DEFAULT_DATA_DIR

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

    # Coordination State Layer (ARCHITECTURE.md). Off: workers neither report nor break
    # circuits, and the API sheds no load (the benchmark's "coordination off" arm).
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
    # Load shedding: POST /orders answers 503 at this many checkouts actively running steps
    # (the name predates the distinction); parked sagas, held for approval, waiting for a
    # parcel or for an operator, never count (workflows/coordination_models.py, is_parked).
    max_in_flight_sagas: int = Field(default=2_000, gt=0)
    # POST /orders/{id}/returns answers 503 at this many returns actively running steps
    # (claiming, labelling, refunding); returns waiting for their parcel never count.
    max_active_returns: int = Field(default=500, gt=0)
    shed_retry_after_s: int = Field(default=5, gt=0)
    # GET /coordination/stream sends a heartbeat comment when idle this long.
    sse_heartbeat_s: float = Field(default=15.0, gt=0)

    # --- Gateway security (the API as a security boundary) ---------------------------------
    # The gateway's own database: API keys (hashed), browser sessions, the idempotency secret.
    gateway_database_url: str | None = None
    # JWTs from an existing identity provider: accepted when an issuer is set, verified
    # against a JWKS fetched from a URL or read from a file.
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_file: Path | None = None
    jwt_algorithms: list[str] = ["RS256", "ES256"]
    # Claims that name the principal's role ("customer" or "operator") and customer.
    jwt_role_claim: str = "role"
    jwt_customer_claim: str = "customer_id"
    jwt_leeway_s: int = Field(default=30, ge=0)
    # The operator's browser session (login page): cookie lifetime; Secure behind HTTPS.
    session_ttl_s: int = Field(default=8 * 3600, gt=0)
    session_cookie_secure: bool = False
    # Host headers the gateway answers (TrustedHostMiddleware); "*" allows any.
    trusted_hosts: list[str] = ["127.0.0.1", "localhost", "::1"]
    # Chaos drills (/admin/faults) exist only when enabled; `make up` enables them.
    chaos_enabled: bool = False
    # Limits (OWASP API4): per-principal rate, in the `limits` library's notation, kept in
    # memory or, for several API processes, in Redis (redis://host:port/db).
    rate_limit: str = "50/second;1000/minute"
    rate_limit_storage_url: str = "memory://"
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    max_validation_errors: int = Field(default=20, gt=0)
    stream_max_per_principal: int = Field(default=3, gt=0)
    stream_max_lifetime_s: float = Field(default=300.0, gt=0)
    # How long the gateway remembers an Idempotency-Key that started a saga (api/idempotency.py):
    # a repeat within it never starts a second saga, even after Temporal's retention (a day on
    # the dev server) deleted the first. 30 days, the return window: a client acts on an order
    # (returns it) that long, so that long its key must keep naming that order and no other.
    idempotency_key_ttl_days: int = Field(default=30, gt=0)
    # Orders held for approval hold stock and money: a customer may have this many, and
    # this much in value, waiting at once. Enforced by the payments service's hold ledger,
    # one customer at a time, so parallel orders cannot pass it (README, "Approval holds").
    max_held_orders_per_customer: int = Field(default=3, gt=0)
    max_held_cents_per_customer: int = Field(default=1_000_000, gt=0)

    # --- Saga safety: step retry ceiling and heartbeats (workflows/order.py, guard.py) -----
    # Carried into each saga's input like step_timeout_s. A step before the pivot that
    # still fails after this many attempts rolls the saga back (STEP_EXHAUSTED).
    step_max_attempts: int = Field(default=20, gt=0)
    # A step whose worker stops heartbeating this long is retried (a killed worker costs
    # this, not the whole step timeout). 0 turns step heartbeats off.
    step_heartbeat_timeout_s: int = Field(default=5, ge=0)

    # --- Operator dashboard (api/routes/dashboard.py) -------------------------------------
    # Where the dashboard links each order: <temporal_ui_url>/namespaces/<ns>/workflows/<id>.
    temporal_ui_url: str = "http://127.0.0.1:8233"
    # With a tracing backend, trace IDs become links: "{trace_id}" is replaced, e.g.
    # "http://127.0.0.1:16686/trace/{trace_id}" for Jaeger. Unset, they show as text.
    trace_url_template: str | None = None
    # How often the page re-lists the orders held for approval (a visibility query).
    dashboard_held_poll_s: float = Field(default=5.0, ge=1.0)

    # --- Payload encryption and the codec endpoint (common/codec.py, api/routes/codec.py) ---
    # "production" refuses to start without a configured codec key (never the dev key file).
    environment: str = Field(default="development", pattern="^(development|production)$")
    # The key ring as one JSON object, {"<key id>": "<base64 of 32 random bytes>", ...}:
    # every key decrypts, the active one encrypts. Set, it replaces the key file.
    codec_keys: SecretStr | None = None
    # Which key encrypts; needed when SAGAWORKS_CODEC_KEYS holds several. Overrides the file's.
    codec_active_key_id: str | None = None
    # The key file (`python -m common.codec_keys`); unset: data_dir/codec-keys.json.
    codec_key_file: Path | None = None
    # The codec endpoint answers CORS for these origins only: the Temporal Web UI's.
    codec_cors_origins: list[str] = ["http://127.0.0.1:8233", "http://localhost:8233"]

    # --- Observability: metrics, JSON logs, Web UI links (common/telemetry.py, logging.py) --
    # Each worker process serves Prometheus text on metrics_port_base + its role's offset
    # (orders +1, inventory +2, payments +3, shipping +4, notifications +5); 0 turns it off.
    # Loopback by default: the SDK's worker metrics say a lot about the system.
    metrics_host: str = "127.0.0.1"
    metrics_port_base: int = Field(default=9100, ge=0, le=65_000)
    # "text" for a terminal, "json" for a log pipeline: one object per line, with IDs.
    log_format: str = Field(default="text", pattern="^(text|json)$")
    log_level: str = Field(default="INFO", pattern="^(?i:debug|info|warning|error|critical)$")
    # Where people reach the API, for links from the Temporal Web UI (dashboard, orders).
    public_api_url: str = "http://127.0.0.1:8000"

    # --- Sharded coordinator and drift reconciliation (workflows/coordination_shard.py) ---
    # Shard workflows between the worker processes and the coordinator, so none takes more
    # than a few signals a second; 1 sends every report to the coordinator itself, as on
    # one machine. README, "Sharding the fan-in", says how to size it.
    coordinator_shards: int = Field(default=1, ge=1, le=32)
    # How often the coordinator checks the sagas it counts in flight against Temporal
    # visibility: a saga whose end was never reported stops counting within two of these.
    coordinator_reconcile_s: int = Field(default=30, ge=5)

    # --- A Temporal cluster or Temporal Cloud: TLS (common/temporal.py connect_options) ---
    # With temporal_address, temporal_namespace and temporal_api_key above. Any of these
    # turns TLS on. A CA file (PEM) replaces the system roots, for a cluster with its own
    # CA; a client certificate and its key (both PEM, both or neither) do mTLS, as Cloud's
    # certificate-authenticated namespaces and most clusters want; the server name is what
    # the server's certificate says when the address does not (an IP, a load balancer).
    temporal_tls_ca_file: Path | None = None
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_tls_server_name: str | None = None

    # --- Returns (workflows/returns.py, api/routes/returns.py) ------------------------------
    # A completed order may be returned this long after it completed (30 days).
    return_window_s: int = Field(default=30 * 24 * 3600, gt=0)
    # Carried into each return's input: with no parcel this long after the request, the
    # return expires and its label is cancelled (14 days).
    return_parcel_timeout_s: int = Field(default=14 * 24 * 3600, gt=0)

    @property
    def codec_key_path(self) -> Path:
        return self.codec_key_file or self.data_dir / "codec-keys.json"

    def task_queue(self, service: str) -> str:
        """The task queue of a worker process named in common/services.py."""
        queue: str = getattr(self, f"{service}_task_queue")
        return queue

    def database_url(self, service: str) -> str:
        """A business service's database, or the gateway's ("gateway")."""
        explicit: str | None = getattr(self, f"{service}_database_url")
        if explicit:
            return explicit
        return f"sqlite:///{self.data_dir / f'{service}.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
