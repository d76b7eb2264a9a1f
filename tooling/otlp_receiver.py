"""A tiny OTLP/HTTP trace receiver on loopback, standing in for an OpenTelemetry Collector.

It accepts `POST /v1/traces` bodies (`ExportTraceServiceRequest` protobufs, gzipped or not)
as a collector does and counts the spans by the service.name of the process that sent
them. `GET /stats` answers those counts as JSON.

The bench runs it as its own process (`python -m tooling.otlp_receiver`, see
`running_receiver`): decoding every export in the bench's driver would take the driver's
GIL from the very orders it is timing. (tests/observability/otlp_receiver.py keeps each
span for the trace tests' asserts; this one only counts.)
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SpanCounts:
    by_service: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        # Imported here: only the receiver's own process needs the protobuf classes.
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest.FromString(body)
        counts: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            counts[service] += sum(len(s.spans) for s in resource_spans.scope_spans)
        with self._lock:
            self.by_service.update(counts)
            self.requests += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "spans": sum(self.by_service.values()),
                "requests": self.requests,
                "by_service": dict(self.by_service),
            }


def serve(counts: SpanCounts) -> ThreadingHTTPServer:
    """A server on a free loopback port; the caller runs `serve_forever`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            counts.add(body)
            # An empty ExportTraceServiceResponse serialises to no bytes at all.
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            if self.path != "/stats":
                self.send_error(404)
                return
            answer = json.dumps(counts.stats()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the counts are what matters

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@dataclass
class RunningReceiver:
    endpoint: str  # base URL, for OTEL_EXPORTER_OTLP_ENDPOINT
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint}/stats", timeout=10) as response:
            stats: dict[str, Any] = json.loads(response.read())
        return stats


@contextlib.contextmanager
def running_receiver() -> Iterator[RunningReceiver]:
    """The receiver as a child process until the block ends, stopped even on failure."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tooling.otlp_receiver"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()  # its first line: the base URL
        if not endpoint.startswith("http://"):
            raise RuntimeError(f"the OTLP receiver did not start (exit {process.poll()})")
        yield RunningReceiver(endpoint, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    counts = SpanCounts()
    server = serve(counts)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    import signal

    # SIGTERM (running_receiver's stop) ends serve_forever like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
