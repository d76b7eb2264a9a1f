"""How a saga tells failures apart and describes them without leaking what they carry.

- `is_permanent`: a failure no retry can fix (a non-retryable `ApplicationError`, or
  retries the server gave up on as non-retryable).
- `safe_error`: a stable code and a short message written here, never the exception's own
  text, which can carry bound SQL parameters, card tokens or addresses. The raw text stays
  in the (encrypted) history and in the logs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
    RetryState,
    TimeoutError,
)

# A code is shown as is, so only a plain identifier qualifies; anything else is generic.
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class SafeError:
    """What a user may see of a failure: a stable code and a short message we wrote."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def safe_error(err: BaseException, messages: Mapping[str, str] | None = None) -> SafeError:
    """Describe `err` without its text.

    The code is the `ApplicationError.type` (the services' stable types, or the exception
    class the SDK names for an unexpected error), or the kind of Temporal failure; the
    message comes from `messages` by code, else a generic one for its kind.
    """
    cause = err.cause if isinstance(err, ActivityError | ChildWorkflowError) else err
    cause = cause or err
    if isinstance(cause, ApplicationError):
        code = cause.type if cause.type and _CODE.match(cause.type) else "ApplicationError"
        generic = "the service refused the request" if cause.non_retryable else "the call failed"
    elif isinstance(cause, TimeoutError):
        code = "Timeout"
        kind = cause.type.name.lower() if cause.type is not None else "step"
        generic = f"no answer within the {kind} timeout"
    elif isinstance(cause, CancelledError | asyncio.CancelledError):
        code, generic = "Cancelled", "cancelled"
    else:
        code, generic = type(cause).__name__, "unexpected failure"
    return SafeError(code, (messages or {}).get(code, generic))


def is_permanent(err: FailureError) -> bool:
    """True for a failure that retrying cannot fix."""
    if isinstance(err, ActivityError | ChildWorkflowError):
        if err.retry_state == RetryState.NON_RETRYABLE_FAILURE:
            return True
        cause = err.cause
        return isinstance(cause, ApplicationError) and cause.non_retryable
    return isinstance(err, ApplicationError) and err.non_retryable


def application_error(err: ActivityError) -> ApplicationError | None:
    cause = err.cause
    return cause if isinstance(cause, ApplicationError) else None


def attempt_from(error: ApplicationError | None) -> int | None:
    """The attempt a service reported in a business failure's details, if it did."""
    if error is None or not error.details:
        return None
    details = error.details[0]
    return details.get("attempt") if isinstance(details, dict) else None
