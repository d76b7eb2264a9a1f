"""Waits for the API to be ready, prints where everything lives, then idles until stopped.

It runs under honcho beside the real processes. honcho stops the whole stack as soon as any
process exits, so this one never exits on its own: not after printing, not on a timeout.
Stdlib only, so it works before and regardless of the project's own imports.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import time
import urllib.request
from types import FrameType

API = os.environ.get("SAGAWORKS_BANNER_API", "http://127.0.0.1:8000").rstrip("/")
UI = f"http://127.0.0.1:{os.environ.get('SAGAWORKS_TEMPORAL_UI_PORT', '8233')}"
DEADLINE_S = float(os.environ.get("SAGAWORKS_BANNER_DEADLINE_S", "120"))
# Worker metrics: SAGAWORKS_METRICS_PORT_BASE + 1..5, in this order (common/telemetry.py).
METRICS_HOST = os.environ.get("SAGAWORKS_METRICS_HOST", "127.0.0.1")
METRICS_BASE = int(os.environ.get("SAGAWORKS_METRICS_PORT_BASE", "9100") or 0)
METRICS_ROLES = ("orders", "inventory", "payments", "shipping", "notifications")
DEMO_KEYS = os.path.join(os.environ.get("SAGAWORKS_DATA_DIR", "data"), "demo-keys.json")

EXAMPLE_ORDER = (
    '{"items":[{"sku":"SKU-1","quantity":2}],'
    '"payment":{"card_token":"tok_visa"},'
    '"shipping_address":{"name":"A","line1":"B","city":"C",'
    '"postal_code":"10115","country":"DE"}}'
)


def _stop(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds quietly from wherever we are (sleeping, inside urllib, paused).
    raise SystemExit(0)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException, ValueError):
        # HTTPError (503 until Temporal is reachable) is an OSError via URLError.
        return False


def wait_ready(url: str, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if _ready(url):
            return True
        time.sleep(1)
    return False


def demo_keys() -> dict[str, str]:
    try:
        with open(DEMO_KEYS) as keys:
            loaded: dict[str, str] = json.load(keys)
            return loaded
    except (OSError, ValueError):
        return {}


def worker_metrics() -> list[str]:
    if not METRICS_BASE:
        return ["  Worker metrics     off (SAGAWORKS_METRICS_PORT_BASE=0)"]
    return [
        f"  {'Worker metrics' if offset == 1 else '':<18} "
        f"http://{METRICS_HOST}:{METRICS_BASE + offset}/metrics   {role}"
        for offset, role in enumerate(METRICS_ROLES, 1)
    ]


def banner() -> str:
    rule = "=" * 72
    keys = demo_keys()
    customer = keys.get("customer", "<run: python -m api.keys create --role customer ...>")
    operator = keys.get("operator", "<run: python -m api.keys create --role operator ...>")
    return "\n".join(
        [
            rule,
            "  sagaworks is up",
            f"  Operator login     {API}/login   (paste the operator key; then /docs)",
            f"  Dashboard          {API}/dashboard   (live; log in with the operator key)",
            f"  API docs           {API}/docs",
            f"  Temporal Web UI    {UI}",
            f"  Coordination state {API}/coordination   (operator key)",
            f"  Metrics            {API}/metrics   (operator key; `make observe` runs Prometheus)",
            *worker_metrics(),
            f"  Orders             {API}/orders",
            "",
            f"  Demo customer key (customer c-1): {customer}",
            f"  Demo operator key:                {operator}",
            f"  (kept in {DEMO_KEYS}; make more with `make key`)",
            "  Chaos drills are ENABLED for this demo: PUT/DELETE /admin/faults/<service>",
            "",
            "  Try, as customer c-1:",
            f"  export CUSTOMER_KEY={customer}",
            f"  export OPERATOR_KEY={operator}",
            f'  curl -si -X POST {API}/orders -H "Authorization: Bearer $CUSTOMER_KEY"'
            f" -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1'"
            f" -d '{EXAMPLE_ORDER}'",
            f'  curl -s {API}/orders -H "Authorization: Bearer $CUSTOMER_KEY"',
            rule,
        ]
    )


def main() -> None:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if wait_ready(f"{API}/readyz", DEADLINE_S):
        print(banner(), flush=True)
    else:
        print(
            f"banner: {API}/readyz did not answer 200 within {DEADLINE_S:.0f}s; "
            "check the api, temporal and worker logs above. The stack keeps running.",
            flush=True,
        )
    while True:
        signal.pause()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # a SIGINT that lands before the handler is installed
        sys.exit(0)
