"""Error answers of the app itself, in process: JSON bodies, no tracebacks, documented."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from temporalio.service import RPCError, RPCStatusCode

from api.main import create_app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app()

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("secret internals")

    @app.get("/rpc/{code}")
    async def rpc(code: int) -> None:
        raise RPCError("server said no", RPCStatusCode(code), b"")

    # No lifespan: these routes never touch Temporal.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http


async def test_unexpected_error_is_json_500_without_traceback(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "secret internals" not in response.text


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (RPCStatusCode.UNAVAILABLE, 503),
        (RPCStatusCode.DEADLINE_EXCEEDED, 503),
        (RPCStatusCode.INTERNAL, 500),
        (RPCStatusCode.PERMISSION_DENIED, 500),
    ],
)
async def test_temporal_errors_map_to_json(
    client: httpx.AsyncClient, code: RPCStatusCode, expected: int
) -> None:
    response = await client.get(f"/rpc/{int(code)}")
    assert response.status_code == expected
    assert isinstance(response.json()["detail"], str)
    assert ("Retry-After" in response.headers) == (expected == 503)


def test_openapi_documents_error_answers() -> None:
    spec = create_app().openapi()
    schema_of = {
        code: answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for code, answer in spec["paths"]["/orders/{order_id}/cancel"]["post"]["responses"].items()
    }
    assert schema_of == {
        "202": "OrderStatusOut",
        "401": "ErrorBody",
        "404": "ErrorBody",
        "409": "ErrorBody",
        "413": "ErrorBody",
        "422": "ValidationErrorBody",
        "429": "ErrorBody",
        "500": "ErrorBody",
        "503": "ErrorBody",
    }
    create = spec["paths"]["/orders"]["post"]["responses"]
    assert "Retry-After" in create["503"]["headers"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
