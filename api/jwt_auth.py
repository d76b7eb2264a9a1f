"""Bearer JWTs from an existing identity provider, verified with PyJWT against its JWKS.

Only the algorithms named in settings are accepted (never `none`, never a symmetric one
that a public key could be passed off as), and `exp`, `iss` and `aud` are required.
"""

from __future__ import annotations

import json
from typing import Any

import jwt

from api.principals import Principal, Role
from common.settings import Settings

REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


class JwtVerifier:
    def __init__(self, settings: Settings) -> None:
        if not (settings.jwt_issuer and settings.jwt_audience):
            raise ValueError("a JWT issuer needs both SAGAWORKS_JWT_ISSUER and _AUDIENCE")
        if not (settings.jwt_jwks_url or settings.jwt_jwks_file):
            raise ValueError("a JWT issuer needs SAGAWORKS_JWT_JWKS_URL or _JWKS_FILE")
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._algorithms = [a for a in settings.jwt_algorithms if a.lower() != "none"]
        self._role_claim = settings.jwt_role_claim
        self._customer_claim = settings.jwt_customer_claim
        self._leeway = settings.jwt_leeway_s
        # PyJWKClient caches the key set and refetches it when a token names an unknown kid.
        self._client = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        self._file_keys: jwt.PyJWKSet | None = None
        if settings.jwt_jwks_file is not None:
            self._file_keys = jwt.PyJWKSet.from_json(settings.jwt_jwks_file.read_text())

    def verify(self, token: str) -> Principal | None:
        """The principal a valid token stands for; None for anything invalid."""
        try:
            key = self._signing_key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except (jwt.PyJWTError, json.JSONDecodeError, KeyError, ValueError):
            return None
        return self._principal(claims)

    def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._file_keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        keys = [k for k in self._file_keys.keys if kid is None or k.key_id == kid]
        if not keys:
            raise jwt.InvalidKeyError(f"no key {kid!r} in the JWKS file")
        return keys[0].key

    def _principal(self, claims: dict[str, Any]) -> Principal | None:
        role_value = claims.get(self._role_claim)
        if role_value not in {r.value for r in Role}:
            return None
        role = Role(role_value)
        subject = str(claims["sub"])[:64]
        customer = claims.get(self._customer_claim)
        if role == Role.CUSTOMER:
            if not isinstance(customer, str) or not customer:
                return None
            return Principal(role, customer, customer, f"jwt:{self._issuer}")
        return Principal(role, None, subject, f"jwt:{self._issuer}")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2
