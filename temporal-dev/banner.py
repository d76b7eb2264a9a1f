"""Waits for the API to be ready, prints where everything lives, then idles until stopped.

It runs under honcho beside the real processes. honcho stops the whole stack as soon as any
process exits, so this one never exits on its own: not after printing, not on a timeout.
Stdlib only, so it works before and regardless of the project's own imports.
"""

from __future__ import annotations

import http.client
import os
import signal
import sys
import time
import urllib.request
from types import FrameType

API = os.environ.get("SAGAWORKS_BANNER_API", "http://127.0.0.1:8000").rstrip("/")
UI = f"http://127.0.0.1:{os.environ.get('SAGAWORKS_TEMPORAL_UI_PORT', '8233')}"
DEADLINE_S = float(os.environ.get("SAGAWORKS_BANNER_DEADLINE_S", "120"))

EXAMPLE_ORDER = (
    '{"customer_id":"c-1","items":[{"sku":"SKU-1","quantity":2}],'
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


def banner() -> str:
    rule = "=" * 72
    return "\n".join(
        [
            rule,
            "  sagaworks is up",
            f"  API docs           {API}/docs",
            f"  Temporal Web UI    {UI}",
            f"  Coordination state {API}/coordination",
            f"  Orders             {API}/orders",
            "  Try:",
            f"  curl -si -X POST {API}/orders -H 'Content-Type: application/json'"
            f" -H 'Idempotency-Key: demo-1' -d '{EXAMPLE_ORDER}'",
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
