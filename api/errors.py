"""Every failure leaves the API as JSON `{"detail": str}`: never a hang, never a traceback."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from api.schemas import ErrorBody, ValidationErrorBody

log = logging.getLogger("sagaworks.api")

RETRY_AFTER_S = 2
DEFAULT_MAX_ERRORS = 20

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
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthenticated(ApiError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ApiError):
    status_code = 403


class RateLimited(ApiError):
    status_code = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


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
    """Load shedding: come back after `retry_after` seconds.

    ARCHITECTURE.md, Coordination State Layer (reflexes).
    """

    status_code = 503

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def _json_error(
    status_code: int,
    detail: str,
    retry_after: int = RETRY_AFTER_S,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    answer_headers = dict(headers or {})
    if status_code == 503:
        answer_headers["Retry-After"] = str(retry_after)
    return JSONResponse({"detail": detail}, status_code=status_code, headers=answer_headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    retry_after = getattr(exc, "retry_after", RETRY_AFTER_S)
    return _json_error(exc.status_code, exc.detail, retry_after, exc.headers)


async def _rpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if means_unavailable(exc):
        return _json_error(503, "Temporal is unavailable; try again shortly")
    log.error("Temporal call failed on %s %s: %s", request.method, request.url.path, exc)
    return _json_error(500, "internal error")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Bounded: a body with ten thousand wrong fields must not get a megabyte back.
    limit = _max_errors(request)
    found = exc.errors()
    errors = [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in e["loc"]],
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in found[:limit]
    ]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    if len(found) > limit:
        detail += f"; and {len(found) - limit} more"
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _max_errors(request: Request) -> int:
    settings = getattr(request.app.state, "settings", None)
    return settings.max_validation_errors if settings is not None else DEFAULT_MAX_ERRORS


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (unknown path, wrong method, unreadable body), as JSON."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode (not UTF-8, a broken form): bad
        # input like any other, so the documented 422.
        errors = [{"loc": ["body"], "msg": str(exc.detail), "type": "body_unreadable"}]
        return JSONResponse({"detail": f"body: {exc.detail}", "errors": errors}, status_code=422)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route that matched the path only; a path
        # served by several routes (GET and POST /orders) allows all of theirs.
        headers["Allow"] = ", ".join(_allowed_methods(request, headers.get("Allow", "")))
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=headers)


HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _allowed_methods(request: Request, first_route_allows: str) -> list[str]:
    """Every method the OpenAPI document lists for this path, and the first route's."""
    methods = {m.strip() for m in first_route_allows.split(",") if m.strip()}
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    for template, operations in paths.items():
        if _path_pattern(template).fullmatch(request.scope["path"]):
            methods |= {m.upper() for m in operations if m in HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return sorted(methods)


@functools.lru_cache(maxsize=256)
def _path_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}/]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback itself after this handler answers; the client gets none.
    return _json_error(500, "internal error")


def _document_errors_as_json(app: FastAPI) -> None:
    """Errors are JSON on every route, HTML pages and event streams included.

    FastAPI documents a route's error models under the route's own media type (an SSE
    route's 403 as text/event-stream); this moves them to application/json, where they are.
    """
    generate = app.openapi
    error_refs = {f"#/components/schemas/{m.__name__}" for m in (ErrorBody, ValidationErrorBody)}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for operations in generate().get("paths", {}).values():
                for operation in operations.values():
                    for code, answer in operation.get("responses", {}).items():
                        content = answer.get("content", {})
                        if code[:1] in "45" and "application/json" not in content:
                            for media_type in list(content):
                                if content[media_type].get("schema", {}).get("$ref") in error_refs:
                                    content["application/json"] = content.pop(media_type)
        assert app.openapi_schema is not None  # generate() keeps what it made
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    _document_errors_as_json(app)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RPCError, _rpc_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


AUTH_ANSWERS = {
    401: "missing, malformed, unknown or revoked bearer token (WWW-Authenticate: Bearer)",
    429: "rate limited: too many requests from this principal; see Retry-After",
}
OPERATOR_ANSWERS = {**AUTH_ANSWERS, 403: "operators only"}
BODY_ANSWERS = {413: "request body larger than the gateway accepts (64 KiB by default)"}


def error_responses(
    descriptions: dict[int, str],
    *,
    validates: bool = True,
    auth: dict[int, str] | None = AUTH_ANSWERS,
    body: bool = False,
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for a route's error answers; 500 always, 422 where input is checked.

    Listing 422 here also replaces FastAPI's default schema with the one this API returns.
    `auth` lists what the gateway's principal check answers (None for open routes).
    """
    defaults = {422: "invalid request"} if validates else {}
    extra = {**(auth or {}), **(BODY_ANSWERS if body else {})}
    out: dict[int | str, dict[str, Any]] = {}
    answers = {**defaults, **extra, **descriptions, 500: "unexpected error"}
    for code, description in sorted(answers.items()):
        entry: dict[str, Any] = {
            "model": ValidationErrorBody if code == 422 else ErrorBody,
            "description": description,
        }
        if code in (429, 503):
            entry["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
            }
        if code == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
            }
        out[code] = entry
    return out
