"""The operator's dashboard: a live page over the coordination state.

ARCHITECTURE.md, Observability.

The page is a Jinja2 template and one plain script (api/static/): no build step, no CDN,
so it works offline. The script reads `/coordination/stream` and calls the operator
routes with the browser session; this module only serves the page and its files.

A browser without a session is sent to the login page instead of getting a JSON 401; a
bearer token that fails, or a customer, gets the usual JSON answer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.auth import BrowserPrincipalDep, OperatorDep
from api.errors import OPERATOR_ANSWERS, ApiError, Forbidden, error_responses
from api.principals import Principal
from common.settings import SERVICES, Settings

router = APIRouter(tags=["dashboard"])

API_DIR = Path(__file__).resolve().parents[1]
templates = Jinja2Templates(directory=API_DIR / "templates")
STATIC_DIR = API_DIR / "static"
STATIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css)$")
MEDIA_TYPES = {"js": "text/javascript", "css": "text/css"}
LOGIN_REDIRECT = "/login?next=/dashboard"

# Scripts and styles from this origin only, and the page's own fetches and stream: an
# injected attribute or inline script in a rendered order ID or error text cannot run.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


class StaticNotFound(ApiError):
    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"no dashboard file {name!r}")


def page_config(settings: Settings, principal: Principal) -> dict[str, Any]:
    """What the script needs to know, rendered into the page as JSON (never as code)."""
    return {
        "operator": principal.name,
        "services": list(SERVICES),
        "temporal_ui_url": settings.temporal_ui_url.rstrip("/"),
        "namespace": settings.temporal_namespace,
        "trace_url_template": settings.trace_url_template,
        "held_poll_s": settings.dashboard_held_poll_s,
        "stats_window_s": settings.stats_window_s,
    }


@router.get(
    "/dashboard",
    summary="The operator's live dashboard (HTML); a browser without a session is sent to /login",
    # Not HTMLResponse: with it FastAPI would document the JSON errors as HTML too.
    response_class=Response,
    responses={
        **error_responses({}, validates=False, auth=OPERATOR_ANSWERS),
        200: {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
        303: {"description": "no browser session: redirected to /login?next=/dashboard"},
    },
)
def dashboard(request: Request, principal: BrowserPrincipalDep) -> Response:
    if principal is None:
        return RedirectResponse(LOGIN_REDIRECT, status_code=303)
    if not principal.is_operator:
        raise Forbidden("the dashboard is for operators")
    settings: Settings = request.app.state.settings
    response = templates.TemplateResponse(
        request,
        "dashboard.html",
        {"config": page_config(settings, principal), "operator": principal.name},
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# Behind the operator check like every other route: the cookie travels with same-origin
# script and style requests, so the page loads them without anything public.
@router.get("/dashboard/static/{name}", include_in_schema=False)
def static_file(name: str, operator: OperatorDep) -> Response:
    path = STATIC_DIR / name
    if not STATIC_NAME.match(name) or not path.is_file():
        raise StaticNotFound(name)
    response = FileResponse(path, media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]])
    # Checked again on every load, so a deploy is never hidden behind a stale copy.
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
