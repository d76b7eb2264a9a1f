"""The OpenAPI document and Swagger UI, for a principal (a bearer key or the session)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import RedirectResponse, Response

from api.auth import BrowserPrincipalDep, PrincipalDep

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request, principal: PrincipalDep) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema


@router.get("/docs")
def docs(principal: BrowserPrincipalDep) -> Response:
    if principal is None:  # a browser without a session: log in first, then come back
        return RedirectResponse("/login?next=/docs", status_code=303)
    return get_swagger_ui_html(openapi_url="/openapi.json", title="sagaworks API")
