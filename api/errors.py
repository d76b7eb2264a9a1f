"""Every failure leaves the API as JSON `{"detail": str}`: never a hang, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import ErrorBody, ValidationErrorBody

log = logging.getLogger("sagaworks.api")

RETRY_AFTER_S = 2

# Codes that mean "Temporal, or the worker behind it, did not answer": try again later.
UNAVAILABLE_CODES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,  # the server's own "Timeout expired" for an unanswered query
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)


def means_unavailable(err: RPCError) -> bool:
    """True when Temporal, or the worker behind a query or update, did not answer."""
    # A query right after a server restart, before the worker polls again, fails with
    # FAILED_PRECONDITION "no poller seen for task queue recently": the worker is away.
    no_poller = err.status == RPCStatusCode.FAILED_PRECONDITION and "no poller" in err.message
    return err.status in UNAVAILABLE_CODES or no_poller


class ApiError(Exception):
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class OrderNotFound(ApiError):
    status_code = 404

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} not found")


class OrderConflict(ApiError):
    status_code = 409


class UnprocessableRequest(ApiError):
    status_code = 422


class TemporalUnavailable(ApiError):
    status_code = 503


class Overloaded(ApiError):
    """Load shedding (DESIGN §3): come back after `retry_after` seconds."""

    status_code = 503

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def _json_error(status_code: int, detail: str, retry_after: int = RETRY_AFTER_S) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if status_code == 503 else None
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _json_error(exc.status_code, exc.detail, getattr(exc, "retry_after", RETRY_AFTER_S))


async def _rpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if means_unavailable(exc):
        return _json_error(503, "Temporal is unavailable; try again shortly")
    log.error("Temporal call failed on %s %s: %s", request.method, request.url.path, exc)
    return _json_error(500, "internal error")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in e["loc"]],
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback itself after this handler answers; the client gets none.
    return _json_error(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RPCError, _rpc_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


def error_responses(
    descriptions: dict[int, str], *, validates: bool = True
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for a route's error answers; 500 always, 422 where input is checked.

    Listing 422 here also replaces FastAPI's default schema with the one this API returns.
    """
    defaults = {422: "invalid request"} if validates else {}
    out: dict[int | str, dict[str, Any]] = {}
    for code, description in {**defaults, **descriptions, 500: "unexpected error"}.items():
        entry: dict[str, Any] = {
            "model": ValidationErrorBody if code == 422 else ErrorBody,
            "description": description,
        }
        if code == 503:
            entry["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
            }
        out[code] = entry
    return out
