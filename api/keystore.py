"""The gateway's own database: API keys (only their hashes), browser sessions, a secret.

A key reads `sw_<key id>_<secret>`. The key ID finds the row; the secret, 32 random bytes,
is stored only as its SHA-256 and compared in constant time. A fast hash is enough for a
secret with 256 bits of entropy: there is nothing to guess, only a digest to match.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from api.idempotency import IdempotencyKeyUse
from api.principals import Principal, Role
from common import migrate
from common.db import make_engine

KEY_PREFIX = "sw_"


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    key_id: str = Field(primary_key=True)
    secret_sha256: str
    role: str
    customer_id: str | None = None
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class BrowserSession(SQLModel, table=True):
    __tablename__ = "browser_sessions"

    session_sha256: str = Field(primary_key=True)
    key_id: str = Field(index=True)
    csrf_token: str
    expires_at: datetime


class GatewaySecret(SQLModel, table=True):
    """Secrets the gateway makes for itself once, shared by every API process."""

    __tablename__ = "gateway_secrets"

    name: str = Field(primary_key=True)
    value: str


# The gateway database's tables (migrations/gateway/ holds their history).
TABLES = [ApiKey, BrowserSession, GatewaySecret, IdempotencyKeyUse]


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    token: str


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    role: str
    customer_id: str | None
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class OpenedSession:
    token: str
    csrf_token: str
    expires_at: datetime


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token.removeprefix(KEY_PREFIX).partition("_")
    if not sep or len(key_id) != 16 or not secret or len(secret) > 100:
        return None
    return key_id, secret


class KeyStore:
    def __init__(self, database_url: str) -> None:
        self._engine = make_engine(database_url)
        # Every API process and key command migrates at start; a lock lets one do it.
        migrate.upgrade("gateway", self._engine)

    @property
    def engine(self) -> Engine:
        """The gateway database, migrated: what the Idempotency-Key ledger shares."""
        return self._engine

    def _session(self) -> Session:
        return Session(self._engine, expire_on_commit=False)

    # --- keys ------------------------------------------------------------------------------

    def issue(
        self, role: Role, *, customer_id: str | None = None, name: str | None = None
    ) -> IssuedKey:
        if role == Role.CUSTOMER and not customer_id:
            raise ValueError("a customer key needs a customer ID")
        if role == Role.OPERATOR and customer_id:
            raise ValueError("an operator key is not bound to a customer")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        default_name = customer_id if customer_id else f"operator-{key_id[:6]}"
        row = ApiKey(
            key_id=key_id,
            secret_sha256=_sha256(secret),
            role=role.value,
            customer_id=customer_id,
            name=name or default_name,
            created_at=_now(),
        )
        with self._session() as session:
            session.add(row)
            session.commit()
        return IssuedKey(key_id, f"{KEY_PREFIX}{key_id}_{secret}")

    def list(self) -> list[KeyInfo]:
        with self._session() as session:
            rows = session.exec(select(ApiKey).order_by(ApiKey.created_at)).all()  # type: ignore[arg-type]
        return [
            KeyInfo(
                r.key_id,
                r.role,
                r.customer_id,
                r.name,
                _aware(r.created_at),
                _aware(r.revoked_at) if r.revoked_at else None,
            )
            for r in rows
        ]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key and end its browser sessions; False when there is no such key."""
        with self._session() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                return False
            if row.revoked_at is None:
                row.revoked_at = _now()
                session.add(row)
            for browser in session.exec(
                select(BrowserSession).where(BrowserSession.key_id == key_id)
            ).all():
                session.delete(browser)
            session.commit()
        return True

    def authenticate(self, token: str) -> Principal | None:
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        row = self._active_key(key_id)
        # Compare even when the row is missing, so timing does not tell which IDs exist.
        expected = row.secret_sha256 if row is not None else _sha256("")
        if not hmac.compare_digest(expected, _sha256(secret)) or row is None:
            return None
        return _principal(row, f"key:{row.key_id}")

    def _active_key(self, key_id: str) -> ApiKey | None:
        with self._session() as session:
            row = session.get(ApiKey, key_id)
        return row if row is not None and row.revoked_at is None else None

    # --- browser sessions --------------------------------------------------------------------

    def open_session(self, principal: Principal, ttl: timedelta) -> OpenedSession:
        if not principal.source.startswith("key:"):
            raise ValueError("only an API key can open a browser session")
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        expires = _now() + ttl
        row = BrowserSession(
            session_sha256=_sha256(token),
            key_id=principal.source.removeprefix("key:"),
            csrf_token=csrf,
            expires_at=expires,
        )
        with self._session() as session:
            session.add(row)
            session.commit()
        return OpenedSession(token, csrf, expires)

    def session_principal(self, token: str) -> tuple[Principal, str] | None:
        """(principal, CSRF token) of a live session; None when unknown, expired or revoked."""
        if not token or len(token) > 100:
            return None
        with self._session() as session:
            browser = session.get(BrowserSession, _sha256(token))
        if browser is None or _aware(browser.expires_at) <= _now():
            return None
        row = self._active_key(browser.key_id)
        if row is None:
            return None
        return _principal(row, f"session:{row.key_id}"), browser.csrf_token

    def close_session(self, token: str) -> None:
        with self._session() as session:
            browser = session.get(BrowserSession, _sha256(token))
            if browser is not None:
                session.delete(browser)
                session.commit()

    # --- secrets -----------------------------------------------------------------------------

    def secret(self, name: str) -> bytes:
        """A random secret made once and shared by every API process on this database."""
        with self._session() as session:
            row = session.get(GatewaySecret, name)
            if row is None:
                session.add(GatewaySecret(name=name, value=secrets.token_hex(32)))
                try:
                    session.commit()
                except IntegrityError:  # another process made it first: use theirs
                    session.rollback()
                row = session.get(GatewaySecret, name)
            assert row is not None
        return bytes.fromhex(row.value)


def _principal(row: ApiKey, source: str) -> Principal:
    return Principal(Role(row.role), row.customer_id, row.name, source)
