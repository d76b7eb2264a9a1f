"""The operator's browser session: a login page that trades an operator key for a cookie.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends
it) and expires; the session lives in the gateway's database, so logging out, or revoking
the key, ends it at once in every API process.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.auth import SESSION_COOKIE, GatekeeperDep
from api.errors import Unauthenticated, error_responses

router = APIRouter(tags=["session"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")

DEFAULT_NEXT = "/docs"
# These routes answer HTML pages and redirects, but their errors are JSON like everywhere
# else: `response_class=Response` keeps FastAPI from documenting the errors as HTML.
HTML_PAGE = {"content": {"text/html": {"schema": {"type": "string"}}}}


def _safe_next(target: str | None) -> str:
    # Only a path on this site: never an open redirect to somewhere else.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return DEFAULT_NEXT
    return target[:500]


@router.get(
    "/login",
    summary="The operator login page",
    response_class=Response,
    responses={**error_responses({}, auth=None), 200: {"description": "the page", **HTML_PAGE}},
)
def login_page(request: Request, gatekeeper: GatekeeperDep, next: str | None = None) -> Response:
    principal, csrf = None, ""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        found = gatekeeper.keys.session_principal(cookie)
        if found is not None:
            principal, csrf = found
    return templates.TemplateResponse(
        request,
        "login.html",
        {"next": _safe_next(next), "principal": principal, "csrf_token": csrf, "error": None},
    )


@router.post(
    "/login",
    summary="Log in with an operator key; sets the session cookie and redirects",
    status_code=303,
    response_class=Response,
    responses={
        **error_responses({}, auth=None, body=True),
        303: {"description": "logged in; the cookie is set"},
        401: {"description": "not a valid operator key: the page again", **HTML_PAGE},
    },
)
def login(
    request: Request,
    gatekeeper: GatekeeperDep,
    key: Annotated[str, Form(min_length=1, max_length=200)],
    next: Annotated[str, Form(max_length=500)] = DEFAULT_NEXT,
) -> Response:
    settings = gatekeeper.settings
    try:
        principal = gatekeeper.from_bearer(f"Bearer {key.strip()}")
    except Unauthenticated:
        principal = None
    if principal is None or not principal.is_operator or not principal.source.startswith("key:"):
        return templates.TemplateResponse(
            request,
            "login.html",
            {
                "next": _safe_next(next),
                "principal": None,
                "csrf_token": "",
                "error": "That is not a valid operator API key.",
            },
            status_code=401,
        )
    opened = gatekeeper.keys.open_session(principal, timedelta(seconds=settings.session_ttl_s))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        opened.token,
        max_age=settings.session_ttl_s,
        expires=opened.expires_at,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.session_cookie_secure,
    )
    return response


@router.post(
    "/logout",
    summary="End the browser session",
    status_code=303,
    response_class=Response,
    responses={
        303: {"description": "logged out; the cookie is cleared"},
        **error_responses({}, validates=False, auth=None),
    },
)
def logout(request: Request, gatekeeper: GatekeeperDep) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        gatekeeper.keys.close_session(cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get(
    "/session",
    summary="Who the browser session belongs to, and its CSRF token for scripts",
    responses=error_responses({401: "no live browser session"}, validates=False, auth=None),
)
def whoami(request: Request, gatekeeper: GatekeeperDep) -> dict[str, str]:
    cookie = request.cookies.get(SESSION_COOKIE)
    found = gatekeeper.keys.session_principal(cookie) if cookie else None
    if found is None:
        raise Unauthenticated("no live browser session; log in at /login")
    principal, csrf = found
    return {"name": principal.name, "role": principal.role.value, "csrf_token": csrf}
