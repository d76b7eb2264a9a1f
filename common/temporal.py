"""Connecting to Temporal the same way from every process."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import RPCError, TLSConfig

from common import tracing
from common.codec import data_converter
from common.settings import Settings

log = logging.getLogger(__name__)


def connect_options(settings: Settings) -> dict[str, Any]:
    """Where and how to reach Temporal: the dev server, a cluster, or Temporal Cloud.

    TLS is on when asked for, with an API key (Cloud accepts keys over TLS only), or with
    any TLS file or name set; a `TLSConfig` carries the CA, the client pair and the name.
    """
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    cert, key = settings.temporal_tls_cert_file, settings.temporal_tls_key_file
    if (cert is None) != (key is None):
        raise ValueError(
            "mTLS needs both SAGAWORKS_TEMPORAL_TLS_CERT_FILE and SAGAWORKS_TEMPORAL_TLS_KEY_FILE"
        )
    ca, name = settings.temporal_tls_ca_file, settings.temporal_tls_server_name
    tls: bool | TLSConfig = settings.temporal_tls or api_key is not None
    if ca or cert or name:
        tls = TLSConfig(
            server_root_ca_cert=_read(ca, "SAGAWORKS_TEMPORAL_TLS_CA_FILE"),
            domain=name,
            client_cert=_read(cert, "SAGAWORKS_TEMPORAL_TLS_CERT_FILE"),
            client_private_key=_read(key, "SAGAWORKS_TEMPORAL_TLS_KEY_FILE"),
        )
    return {
        "target_host": settings.temporal_address,
        "namespace": settings.temporal_namespace,
        "api_key": api_key,
        "tls": tls,
    }


def _read(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(f"{variable}={path}: {err.strerror or err}") from err


async def connect(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """`lazy=True` returns at once and connects on first use, so a caller can start first.

    Every process connects here, so every payload it writes is encrypted and every failure
    it reports has its message encoded (common/codec.py).
    """
    return await Client.connect(
        **connect_options(settings),
        lazy=lazy,
        # A worker's own runtime carries its SDK metrics endpoint (common/telemetry.py).
        runtime=runtime,
        data_converter=data_converter(settings),
        # Empty unless OTEL_EXPORTER_OTLP_ENDPOINT is set (common/tracing.py).
        interceptors=tracing.interceptors(),
    )


async def connect_with_retry(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """Wait for Temporal to come up: `make up` starts workers beside the server."""
    deadline = time.monotonic() + settings.temporal_connect_timeout_s
    while True:
        try:
            return await connect(settings, runtime=runtime)
        except (RPCError, RuntimeError, OSError) as err:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Temporal at {settings.temporal_address} did not answer within "
                    f"{settings.temporal_connect_timeout_s:.0f}s: {err}"
                ) from err
            log.info("waiting for Temporal at %s: %s", settings.temporal_address, err)
            await asyncio.sleep(1)
