"""Metrics and JSON logs on the real stack: dev server, five worker processes, uvicorn.

One stack, one scenario, several checks. The orders worker keeps no workflow in its cache
(`SAGAWORKS_MAX_CACHED_WORKFLOWS=0`), so every workflow task replays the saga's history
first: the finished-saga counters must still count each saga exactly once. Tracing is on
(a loopback OTLP receiver), so the API's log lines carry trace and span IDs.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.otlp_receiver import otlp_receiver
from tests.support.api_client import Api, order_body, poll
from tests.support.auth import bearer, issue_key
from tests.support.stack import free_port, run_stack, wait_until_ready
from tests.support.temporal import dev_server_env

pytestmark = pytest.mark.e2e

ROLES = ("orders", "inventory", "payments", "shipping", "notifications")
OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"
PORT_OFFSET = {role: index + 1 for index, role in enumerate(ROLES)}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Observed:
    api: Api
    metrics_base: int
    secrets: list[str]
    orders: dict[str, str] = field(default_factory=dict)  # what -> order_id

    def worker_url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.metrics_base + PORT_OFFSET[role]}/metrics"


def free_port_block(count: int) -> int:
    """A base port whose next `count` ports are free on loopback right now."""
    for _ in range(100):
        base = random.randrange(20_000, 60_000)
        sockets: list[socket.socket] = []
        try:
            for port in range(base + 1, base + count + 1):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no block of free ports found")


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def secret_body(card: str, secrets: list[str], **overrides: Any) -> dict[str, Any]:
    """An order whose card token (unless a fixture) and address lines are unique markers."""
    body = order_body(card=card, **overrides)
    marker = uuid.uuid4().hex[:10]
    body["shipping_address"]["name"] = f"Ada Geheim{marker}"
    body["shipping_address"]["line1"] = f"Verborgene Gasse {marker}"
    secrets.extend([f"Geheim{marker}", f"Verborgene Gasse {marker}"])
    if card.startswith("tok_secret_"):
        secrets.append(card)
    return body


@pytest_asyncio.fixture(scope="module")
async def observed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Observed]:
    base = free_port_block(len(ROLES))
    data_dir = tmp_path_factory.mktemp("observed-stack")
    with otlp_receiver() as receiver:
        env = {
            "SAGAWORKS_METRICS_PORT_BASE": str(base),
            "SAGAWORKS_LOG_FORMAT": "json",
            # DEBUG: the SDK then logs each activity completion it sends, so a payload that
            # reached the logs unencrypted would show in the secrets scan below.
            "SAGAWORKS_LOG_LEVEL": "DEBUG",
            "SAGAWORKS_MAX_CACHED_WORKFLOWS": "0",
            "SAGAWORKS_APPROVAL_TIMEOUT_S": "900",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        }
        async with dev_server_env() as server:
            target = server.client.service_client.config.target_host
            with run_stack(target, data_dir, with_api=False, extra_env=env) as stack:
                # uvicorn at INFO (the shared helper runs it at WARNING): its access lines
                # are part of what must be JSON and free of secrets.
                port = free_port()
                stack.api_url = f"http://127.0.0.1:{port}"
                command = ["-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
                stack.start("api", [sys.executable, *command, "--port", str(port)])
                wait_until_ready(stack)
                async with httpx.AsyncClient(
                    base_url=stack.api_url, timeout=30, headers=stack.auth_headers()
                ) as http:
                    scene = Observed(Api(stack, http, server.client), base, [])
                    await play(scene)
                    yield scene


async def play(scene: Observed) -> None:
    """Two completed orders, a declined card, an order cancelled while held for approval."""
    api, secrets = scene.api, scene.secrets
    scene.orders["completed"] = await api.place(
        secret_body(f"tok_secret_{uuid.uuid4().hex[:12]}", secrets)
    )
    scene.orders["completed_2"] = await api.place(secret_body("tok_visa", secrets))
    scene.orders["declined"] = await api.place(secret_body("tok_decline", secrets))
    scene.orders["cancelled"] = await api.place(secret_body("tok_visa", secrets, sku="SKU-3"))
    await api.wait_for(scene.orders["cancelled"], "AWAITING_APPROVAL")
    response = await api.http.post(f"/orders/{scene.orders['cancelled']}/cancel")
    assert response.status_code == 202, response.text
    for what, state in (
        ("completed", "COMPLETED"),
        ("completed_2", "COMPLETED"),
        ("declined", "COMPENSATED"),
        ("cancelled", "COMPENSATED"),
    ):
        await api.wait_for(scene.orders[what], state)


async def api_metrics(scene: Observed) -> Samples:
    response = await scene.api.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def worker_metrics(scene: Observed, role: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:  # loopback, no key: as Prometheus does
        response = await http.get(scene.worker_url(role))
    assert response.status_code == 200, response.text
    return parse(response.text)


async def operate(scene: Observed, action: str, service: str | None = None) -> None:
    body = {"action": action, **({"service": service} if service else {})}
    response = await scene.api.http.post("/coordination/operate", json=body)
    assert response.status_code == 200, response.text


# --- metrics ------------------------------------------------------------------------------------


async def test_the_api_counts_starts_and_answers_by_route_template(observed: Observed) -> None:
    samples = await api_metrics(observed)
    assert value(samples, "sagaworks_sagas_started_total", type="OrderWorkflow") == 4
    post = {"method": "POST", "route": "/orders"}
    assert value(samples, "sagaworks_http_requests_total", **post, status="202") == 4
    polled = value(
        samples,
        "sagaworks_http_requests_total",
        method="GET",
        route="/orders/{order_id}",
        status="200",
    )
    assert polled is not None and polled >= 4
    cancel = {"method": "POST", "route": "/orders/{order_id}/cancel", "status": "202"}
    assert value(samples, "sagaworks_http_requests_total", **cancel) == 1
    assert value(samples, "sagaworks_http_request_duration_seconds_count", **post) == 4
    # Bounded labels: no order ID anywhere on the page, as a label or otherwise.
    page = (await observed.api.http.get("/metrics")).text
    assert "order-" not in page


async def test_metrics_need_an_operator(observed: Observed) -> None:
    http, stack = observed.api.http, observed.api.stack
    customer = issue_key(stack.env, "customer", customer_id="c-metrics", name="metrics test")
    assert (await http.get("/metrics", headers=bearer(customer))).status_code == 403
    async with httpx.AsyncClient(base_url=stack.api_url or "") as plain:
        anonymous = await plain.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    samples = await api_metrics(observed)
    refused = {"method": "GET", "route": "/metrics"}
    assert (value(samples, "sagaworks_http_requests_total", **refused, status="403") or 0) >= 1
    assert (value(samples, "sagaworks_http_requests_total", **refused, status="401") or 0) >= 1


async def test_the_orders_worker_counts_each_saga_once_by_status_and_reason(
    observed: Observed,
) -> None:
    samples = await worker_metrics(observed, "orders")
    finished = {
        (dict(labels)["status"], dict(labels)["reason"]): count
        for (name, labels), count in samples.items()
        if name == "sagaworks_sagas_finished_total" and dict(labels)["type"] == "OrderWorkflow"
    }
    # Every task of these sagas replayed its history first (no workflow cache): still once.
    assert finished == {
        ("COMPLETED", "none"): 2,
        ("COMPENSATED", "PAYMENT_DECLINED"): 1,
        ("COMPENSATED", "CANCELLED_BY_CUSTOMER"): 1,
    }
    assert value(samples, "sagaworks_sdk_metrics_up") == 1
    # The SDK's own worker metrics, on the same page.
    assert any(name.startswith("temporal_workflow_task") for name, _ in samples)


async def test_service_workers_time_steps_and_compensations(observed: Observed) -> None:
    async def count(role: str, histogram: str, activity: str, outcome: str) -> float:
        samples = await worker_metrics(observed, role)
        assert value(samples, "sagaworks_sdk_metrics_up") == 1
        assert value(samples, "temporal_worker_start_total", **_sdk_worker_labels(samples))
        labels = {"service": role, "activity": activity, "outcome": outcome}
        return value(samples, f"sagaworks_{histogram}_duration_seconds_count", **labels) or 0

    assert await count("inventory", "step", "reserve_stock", "ok") == 4
    assert await count("inventory", "compensation", "release_stock", "ok") >= 2
    assert await count("payments", "step", "authorize_payment", "ok") == 3
    assert await count("payments", "step", "authorize_payment", "business_error") == 1
    assert await count("payments", "compensation", "void_payment", "ok") >= 2
    assert await count("shipping", "step", "create_shipment", "ok") == 2
    assert await count("notifications", "step", "send_confirmation", "ok") == 2


def _sdk_worker_labels(samples: Samples) -> dict[str, str]:
    for name, labels in samples:
        if name == "temporal_worker_start_total":
            return dict(labels)
    raise AssertionError("the SDK's temporal_worker_start_total is missing")


async def test_circuit_and_load_shedding_show_in_the_api_gauges(observed: Observed) -> None:
    samples = await api_metrics(observed)
    assert value(samples, "sagaworks_coordination_up") == 1
    assert value(samples, "sagaworks_dead_letters", status="stuck") == 0
    closed = value(samples, "sagaworks_circuit_state", service="payments", state="closed")
    assert closed == 1

    async def all_roles_reported() -> Samples:
        return await api_metrics(observed)

    def fresh(samples: Samples) -> bool:
        ages = {r: value(samples, "sagaworks_worker_report_age_seconds", role=r) for r in ROLES}
        return all(age is not None and age < 30 for age in ages.values())

    await poll(all_roles_reported, fresh, within=30, interval=1)

    await operate(observed, "trip", "payments")
    try:
        samples = await api_metrics(observed)
        assert value(samples, "sagaworks_circuit_state", service="payments", state="open") == 1
        assert value(samples, "sagaworks_circuit_state", service="payments", state="closed") == 0
    finally:
        await operate(observed, "reset", "payments")
    samples = await api_metrics(observed)
    assert value(samples, "sagaworks_circuit_state", service="payments", state="closed") == 1

    await operate(observed, "pause_intake")
    try:
        refused = await observed.api.http.post("/orders", json=order_body())
        assert refused.status_code == 503, refused.text
    finally:
        await operate(observed, "resume_intake")
    samples = await api_metrics(observed)
    assert value(samples, "sagaworks_load_shed_total", reason="intake_paused") == 1
    assert value(samples, "sagaworks_intake_paused") == 0
    shed = {"method": "POST", "route": "/orders", "status": "503"}
    assert value(samples, "sagaworks_http_requests_total", **shed) == 1


# --- JSON logs ----------------------------------------------------------------------------------


def log_lines(observed: Observed) -> dict[str, list[dict[str, Any]]]:
    """Every process's log, each line parsed: a line that is not one JSON object fails."""
    logs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(observed.api.stack.data_dir).glob("*.log")):
        parsed = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"{path.name}:{number} is not JSON: {line[:300]}") from None
            assert isinstance(entry, dict), f"{path.name}:{number}: {line[:300]}"
            parsed.append(entry)
        logs[path.stem] = parsed
    return logs


def log_texts(observed: Observed) -> dict[str, str]:
    return {path.name: path.read_text() for path in Path(observed.api.stack.data_dir).glob("*.log")}


async def test_every_process_logs_one_json_object_per_line(observed: Observed) -> None:
    logs = await asyncio.to_thread(log_lines, observed)
    assert set(logs) == {"api", *ROLES}
    for role, entries in logs.items():
        assert entries, f"{role} logged nothing"
        for entry in entries:
            assert {"time", "level", "role", "logger", "message"} <= entry.keys(), entry
            assert entry["role"] == role, entry


async def test_log_lines_carry_the_order_workflow_and_trace_ids(observed: Observed) -> None:
    logs = await asyncio.to_thread(log_lines, observed)
    cancelled = observed.orders["cancelled"]
    # The saga's own log line (the SDK's workflow logger), from the orders worker.
    accepted = [e for e in logs["orders"] if e["message"].startswith("cancel accepted")]
    assert accepted, logs["orders"]
    assert accepted[0]["order_id"] == cancelled
    assert accepted[0]["workflow_id"] == cancelled
    assert accepted[0]["workflow_type"] == "OrderWorkflow"
    # uvicorn's access line for the cancel: the order from the path, the request's trace.
    cancel = [
        e
        for e in logs["api"]
        if e["logger"] == "uvicorn.access" and f"/orders/{cancelled}/cancel" in e["message"]
    ]
    assert cancel, [e["message"] for e in logs["api"]]
    assert cancel[0]["order_id"] == cancelled
    assert len(cancel[0]["trace_id"]) == 32 and int(cancel[0]["trace_id"], 16)
    assert len(cancel[0]["span_id"]) == 16


async def test_no_card_token_or_address_appears_in_any_log(observed: Observed) -> None:
    assert len(observed.secrets) >= 9
    texts = await asyncio.to_thread(log_texts, observed)
    assert sum(len(text) for text in texts.values()) > 10_000  # enough logged to mean it
    for name, text in texts.items():
        for secret in observed.secrets:
            assert secret not in text, f"{secret!r} in {name}"
    for role in ROLES:
        async with httpx.AsyncClient(timeout=10) as http:
            page = (await http.get(observed.worker_url(role))).text
        assert not [s for s in observed.secrets if s in page], role


# --- a real Prometheus with the shipped config ---------------------------------------------


def prometheus_config(observed: Observed, into: Path) -> Path:
    """The shipped prometheus.yml and alerts.yml, only the targets moved to this stack."""
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    api_address = (observed.api.stack.api_url or "").removeprefix("http://")
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            role = group["labels"]["role"]
            port = observed.metrics_base + PORT_OFFSET[role] if role != "api" else None
            group["targets"] = [api_address if port is None else f"127.0.0.1:{port}"]
    config_dir = into / "observability"
    config_dir.mkdir()
    (config_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(OBSERVABILITY / "alerts.yml", config_dir / "alerts.yml")
    # Where the shipped config reads the bearer key from, as `make observe` writes it.
    key = into / "data" / "prometheus" / "operator.key"
    key.parent.mkdir(parents=True)
    key.write_text(observed.api.stack.operator_token)
    return config_dir / "prometheus.yml"


def prometheus_binary() -> str:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    assert Path(binary).exists(), "install Debian's prometheus: sudo apt-get install prometheus"
    return binary


@contextmanager
def running_prometheus(config: Path, state: Path) -> Iterator[str]:
    """Prometheus on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    with (state / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={state / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


async def test_prometheus_scrapes_every_endpoint_with_the_shipped_config(
    observed: Observed, tmp_path: Path
) -> None:
    config = await asyncio.to_thread(prometheus_config, observed, tmp_path)
    with running_prometheus(config, tmp_path) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as prom:

            async def targets() -> list[dict[str, Any]]:
                try:
                    answer = (await prom.get("/api/v1/targets")).json()
                except httpx.HTTPError:
                    return []
                active: list[dict[str, Any]] = answer["data"]["activeTargets"]
                return active

            def all_up(active: list[dict[str, Any]]) -> bool:
                return len(active) == 6 and all(t["health"] == "up" for t in active)

            # A target whose page Prometheus cannot parse, or a refused key, stays down.
            active = await poll(targets, all_up, within=60, interval=1)
            assert {t["labels"]["role"] for t in active} == {"api", *ROLES}
            rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"][0]["rules"]
            assert len(rules) == 7 and all(rule["health"] != "err" for rule in rules), rules

            async def started() -> list[dict[str, Any]]:
                query = {"query": "sagaworks_sagas_started_total"}
                answer = (await prom.get("/api/v1/query", params=query)).json()
                result: list[dict[str, Any]] = answer["data"]["result"]
                return result

            result = await poll(started, bool, within=30, interval=1)
            assert [(r["metric"]["role"], r["value"][1]) for r in result] == [("api", "4")]
