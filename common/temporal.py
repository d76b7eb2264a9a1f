"""Connecting to Temporal the same way from every process."""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.client import Client
from temporalio.service import RPCError

from common.settings import Settings

log = logging.getLogger(__name__)


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """`lazy=True` returns at once and connects on first use, so a caller can start first."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key,
        tls=settings.temporal_tls or api_key is not None,
        lazy=lazy,
    )


async def connect_with_retry(settings: Settings) -> Client:
    """Wait for Temporal to come up: `make up` starts workers beside the server."""
    deadline = time.monotonic() + settings.temporal_connect_timeout_s
    while True:
        try:
            return await connect(settings)
        except (RPCError, RuntimeError, OSError) as err:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Temporal at {settings.temporal_address} did not answer within "
                    f"{settings.temporal_connect_timeout_s:.0f}s: {err}"
                ) from err
            log.info("waiting for Temporal at %s: %s", settings.temporal_address, err)
            await asyncio.sleep(1)
