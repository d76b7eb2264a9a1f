"""Who may call: the gateway's principal check, as FastAPI dependencies.

Every route but the probes and the login page declares `PrincipalDep` or `OperatorDep`.
A request proves who it is with `Authorization: Bearer <token>` (an API key issued by
`python -m api.keys`, or a JWT from the configured issuer), or, in a browser, with the
operator's session cookie. A state change made with the cookie must also carry the
session's CSRF token or a JSON body: both force a CORS preflight, which the gateway does
not grant to other sites.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import Forbidden, Unauthenticated
from api.jwt_auth import JwtVerifier, looks_like_jwt
from api.keystore import KeyStore
from api.principals import Principal, Role
from api.ratelimit import RateLimiter
from common.settings import Settings

SESSION_COOKIE = "sagaworks_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]{1,4096}$")

# For the OpenAPI document (and Swagger UI's Authorize button); the check itself is below.
bearer_scheme = HTTPBearer(auto_error=False, description="an API key or a JWT")
session_scheme = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="the operator's browser session"
)


class Gatekeeper:
    """One per API process: the key store, the JWT verifier, the rate limiter."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeyStore(settings.database_url("gateway"))
        self.jwt = JwtVerifier(settings) if settings.jwt_issuer else None
        self.limiter = RateLimiter(settings)

    def from_bearer(self, header: str) -> Principal:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not TOKEN_CHARS.match(token):
            raise Unauthenticated("the Authorization header must read 'Bearer <token>'")
        principal = self.keys.authenticate(token)
        if principal is None and self.jwt is not None and looks_like_jwt(token):
            principal = self.jwt.verify(token)
        if principal is None:
            raise Unauthenticated("unknown, revoked or expired token")
        return principal

    def from_session(self, request: Request, cookie: str) -> Principal:
        found = self.keys.session_principal(cookie)
        if found is None:
            raise Unauthenticated("the browser session is unknown or expired; log in again")
        principal, csrf = found
        if request.method not in SAFE_METHODS and not _csrf_safe(request, csrf):
            raise Forbidden(f"a change made with a browser session needs the {CSRF_HEADER} header")
        return principal


def _csrf_safe(request: Request, csrf: str) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is not None:
        return hmac.compare_digest(sent.encode(), csrf.encode())
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json"


def get_gatekeeper(request: Request) -> Gatekeeper:
    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    return gatekeeper


# A plain `def`: FastAPI runs it in its thread pool, so the key lookup (a database read)
# never blocks the event loop, even on PostgreSQL.
def authenticate(
    request: Request,
    gatekeeper: Annotated[Gatekeeper, Depends(get_gatekeeper)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    _session: Annotated[str | None, Depends(session_scheme)],
) -> Principal:
    header = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    if header:
        principal = gatekeeper.from_bearer(header)
    elif cookie:
        principal = gatekeeper.from_session(request, cookie)
    else:
        raise Unauthenticated("this route needs 'Authorization: Bearer <token>'")
    gatekeeper.limiter.check(principal)
    request.state.principal = principal
    return principal


def require_operator(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if principal.role != Role.OPERATOR:
        raise Forbidden("this route is for operators")
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
OperatorDep = Annotated[Principal, Depends(require_operator)]
GatekeeperDep = Annotated[Gatekeeper, Depends(get_gatekeeper)]


def browser_principal(
    request: Request,
    gatekeeper: Annotated[Gatekeeper, Depends(get_gatekeeper)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    session: Annotated[str | None, Depends(session_scheme)],
) -> Principal | None:
    """For pages: the principal, or None for a browser with no live session (so: log in)."""
    try:
        return authenticate(request, gatekeeper, bearer, session)
    except Unauthenticated:
        if request.headers.get("authorization"):
            raise  # an API client with a bad token: the usual 401, not an HTML redirect
        return None


BrowserPrincipalDep = Annotated[Principal | None, Depends(browser_principal)]
