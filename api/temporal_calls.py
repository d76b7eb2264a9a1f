"""Calling Temporal from the gateway: every call bounded, every refusal in its own words.

Nothing here knows a saga type: the order and return gateways build on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionDescription,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import TemporalUnavailable, means_unavailable
from common.settings import Settings

T = TypeVar("T")

# The gateway secret (made once per gateway database) that keys Idempotency-Key → saga ID.
IDEMPOTENCY_SECRET = "idempotency"


async def bounded(settings: Settings, call: Callable[[timedelta], Awaitable[T]]) -> T:
    """Run one Temporal call under the gateway's deadline, both on the RPC and around it."""
    seconds = settings.api_temporal_timeout_s
    try:
        return await asyncio.wait_for(call(timedelta(seconds=seconds)), seconds)
    except (TimeoutError, RPCTimeoutOrCancelledError) as err:
        raise TemporalUnavailable(
            f"no answer from Temporal or the order worker within {seconds:g}s"
        ) from err
    except RPCError as err:
        if means_unavailable(err):
            raise TemporalUnavailable(f"Temporal is unavailable: {err.message}") from err
        raise
    except RuntimeError as err:
        # A lazy client that cannot reach the server raises this on each call.
        if str(err).startswith("Failed client connect"):
            raise TemporalUnavailable("Temporal is unreachable") from err
        raise


def refusal(err: WorkflowUpdateFailedError) -> str:
    """The validator's own words, without the exception type Temporal prefixes."""
    cause = err.cause
    return cause.message if isinstance(cause, FailureError) else str(cause)


def keyed_id(prefix: str, secret: bytes, message: str | None) -> str:
    """A saga ID: random, or an HMAC of `message` (scope and Idempotency-Key) under `secret`.

    Keyed, so nobody can compute another caller's saga ID from a key they know.
    """
    if message is None:
        return f"{prefix}-{uuid.uuid4().hex}"
    return f"{prefix}-{hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()[:32]}"


async def describe(
    client: Client, settings: Settings, workflow_id: str
) -> WorkflowExecutionDescription | None:
    """The execution, or None when Temporal knows no workflow with this ID."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await bounded(settings, lambda t: handle.describe(rpc_timeout=t))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
