"""Each worker process's Temporal runtime and its one Prometheus endpoint.

ARCHITECTURE.md, Observability.

A worker exposes two kinds of metrics: the SDK's (`temporal_*`: task slots, poll and
schedule-to-start latencies, sticky cache...) from the Temporal core, and the app's own
(`sagaworks_*`, common/metrics.py) from prometheus_client. They cannot share a port, and
two ports per process would double every URL and scrape target. So the core exports on a
private loopback port that nobody scrapes, and the process's single public endpoint, served
by prometheus_client on `metrics_port_base + offset` (README, "Metrics"), re-exposes the
core's text beside the app's metrics on each scrape. A failure to bind costs the metrics,
never the worker: it logs a warning and runs on.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from common.settings import SERVICES, Settings

log = logging.getLogger("sagaworks.telemetry")

# Port offsets from `metrics_port_base`, fixed so the scrape config and README can list them.
ROLES = ("orders", *SERVICES)
SDK_SCRAPE_TIMEOUT_S = 2.0


def metrics_port(settings: Settings, role: str) -> int | None:
    if not settings.metrics_port_base or role not in ROLES:
        return None
    return settings.metrics_port_base + ROLES.index(role) + 1


def metrics_urls(settings: Settings) -> dict[str, str]:
    """Every worker role's metrics URL, for the banner and the README."""
    urls = {}
    for role in ROLES:
        port = metrics_port(settings, role)
        if port is not None:
            urls[role] = f"http://{settings.metrics_host}:{port}/metrics"
    return urls


def core_logging(settings: Settings) -> LoggingConfig:
    """Temporal core's own log lines: forwarded into Python logging when they must be JSON."""
    if settings.log_format != "json":
        return LoggingConfig.default
    return LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )


def start_worker_telemetry(role: str, settings: Settings) -> Runtime:
    """The runtime this worker's client must use; starts its metrics endpoint if configured."""
    port = metrics_port(settings, role)
    if port is None:
        return Runtime(telemetry=TelemetryConfig(logging=core_logging(settings)))
    sdk_port = _free_loopback_port()
    try:
        runtime = Runtime(
            telemetry=TelemetryConfig(
                logging=core_logging(settings),
                metrics=PrometheusConfig(
                    bind_address=f"127.0.0.1:{sdk_port}",
                    # Prometheus conventions: counters end in _total, durations in seconds.
                    counters_total_suffix=True,
                    durations_as_seconds=True,
                    unit_suffix=True,
                ),
            )
        )
    except ValueError as err:  # the private port was taken in the meantime
        log.warning("SDK metrics off: %s", err)
        runtime = Runtime(telemetry=TelemetryConfig(logging=core_logging(settings)))
    else:
        REGISTRY.register(SdkMetrics(f"http://127.0.0.1:{sdk_port}/metrics"))
    try:
        start_http_server(port, addr=settings.metrics_host)
    except OSError as err:
        log.warning(
            "metrics endpoint %s:%d not started (%s); set SAGAWORKS_METRICS_PORT_BASE",
            settings.metrics_host,
            port,
            err,
        )
    else:
        log.info("%s metrics at http://%s:%d/metrics", role, settings.metrics_host, port)
    return runtime


class SdkMetrics(Collector):
    """Re-exposes the Temporal core's Prometheus text on prometheus_client's endpoint."""

    def __init__(self, url: str) -> None:
        self._url = url

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "sagaworks_sdk_metrics_up", "1 when the Temporal core's metrics could be read"
        )
        try:
            with urllib.request.urlopen(self._url, timeout=SDK_SCRAPE_TIMEOUT_S) as response:
                text = response.read().decode()
            families = list(text_string_to_metric_families(text))
        except (OSError, ValueError) as err:
            log.debug("SDK metrics unreadable: %s", err)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def describe(self) -> Iterator[Metric]:
        # Nothing up front: the core's families are only known once it has recorded them.
        return iter(())


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
