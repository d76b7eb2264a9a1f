"""Principals in process: API keys through the real CLI, JWTs against a JWKS served on
loopback, rate limits, the chaos switch and keyed idempotency. No Temporal needed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from api.main import create_app
from api.sagas import order_id_for
from common.settings import Settings
from tests.support.auth import bearer, issue_key
from tests.support.codec import TEST_CODEC_ENV
from tests.support.stack import REPO_ROOT

ISSUER = "https://idp.example.test/"
AUDIENCE = "sagaworks-api"


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        codec_keys=TEST_CODEC_ENV["SAGAWORKS_CODEC_KEYS"],
        codec_active_key_id=TEST_CODEC_ENV["SAGAWORKS_CODEC_ACTIVE_KEY_ID"],
        **overrides,
    )


async def _client(settings: Settings) -> httpx.AsyncClient:
    # No lifespan: the routes used here answer before they would need Temporal.
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


# --- API keys through the real CLI ---------------------------------------------------------------


def _keys(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.keys", *args],
        cwd=REPO_ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO_ROOT),
            "SAGAWORKS_DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_the_key_alone_and_stores_only_its_hash(tmp_path: Path) -> None:
    made = _keys(tmp_path, "create", "--role", "customer", "--customer-id", "c-1")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == f"{key}\n" and key.startswith("sw_")
    operator = _keys(tmp_path, "create", "--role", "operator", "--name", "alice")
    assert operator.returncode == 0
    listed = _keys(tmp_path, "list")
    assert "c-1" in listed.stdout and "alice" in listed.stdout
    secret = key.split("_", 2)[2]
    assert secret not in listed.stdout
    assert secret.encode() not in (tmp_path / "gateway.db").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--role", "customer"], "--customer-id"),
        (["create", "--role", "operator", "--customer-id", "c-1"], "only for --role customer"),
        (["create", "--role", "admin"], "invalid choice"),
        (["create", "--role", "customer", "--customer-id", "a b"], "letters"),
        (["revoke", "0000000000000000"], "no key"),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = _keys(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


async def test_a_key_of_another_gateway_database_is_unknown(tmp_path: Path) -> None:
    token = issue_key({"SAGAWORKS_DATA_DIR": str(tmp_path / "other")}, "operator")
    async with await _client(_settings(tmp_path)) as http:
        assert (await http.get("/openapi.json", headers=bearer(token))).status_code == 401
        mine = issue_key({"SAGAWORKS_DATA_DIR": str(tmp_path)}, "operator")
        assert (await http.get("/openapi.json", headers=bearer(mine))).status_code == 200


# --- JWTs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url(signing_key: rsa.RSAPrivateKey) -> Iterator[str]:
    public = json.loads(RSAAlgorithm.to_jwk(signing_key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]})

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def jwt_http(tmp_path: Path, jwks_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(tmp_path, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_jwks_url=jwks_url)
    async with await _client(settings) as http:
        yield http


def _token(key: Any, algorithm: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "iat": now, "exp": now + 300}
    return jwt.encode({**body, **claims}, key, algorithm=algorithm, headers={"kid": "k1"})


async def test_valid_jwts_map_claims_to_role_and_customer(
    jwt_http: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    customer = _token(signing_key, role="customer", customer_id="c-42")
    operator = _token(signing_key, role="operator", sub="ops-jane")
    assert (await jwt_http.get("/openapi.json", headers=bearer(customer))).status_code == 200
    assert (await jwt_http.get("/coordination", headers=bearer(customer))).status_code == 403
    assert (await jwt_http.get("/openapi.json", headers=bearer(operator))).status_code == 200


def _unsigned(**claims: Any) -> str:
    return jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 300, **claims},
        None,  # type: ignore[arg-type]
        algorithm="none",
    )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda k: _token(k, role="operator", exp=int(time.time()) - 600), id="expired"
        ),
        pytest.param(lambda k: _token(k, role="operator", aud="someone-else"), id="audience"),
        pytest.param(lambda k: _token(k, role="operator", iss="https://evil/"), id="issuer"),
        pytest.param(
            lambda k: _token(
                rsa.generate_private_key(public_exponent=65537, key_size=2048), role="operator"
            ),
            id="bad-signature",
        ),
        pytest.param(lambda k: _unsigned(role="operator"), id="alg-none"),
        pytest.param(lambda k: _token(k, role="admin"), id="unknown-role"),
        pytest.param(lambda k: _token(k, role="customer"), id="customer-without-id"),
    ],
)
async def test_invalid_jwts_get_401(
    jwt_http: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey, make: Any
) -> None:
    response = await jwt_http.get("/openapi.json", headers=bearer(make(signing_key)))
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"


# --- limits, chaos, idempotency ----------------------------------------------------------------


async def test_rate_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    async with await _client(_settings(tmp_path, rate_limit="3/minute")) as http:
        alice = bearer(issue_key({"SAGAWORKS_DATA_DIR": str(tmp_path)}, "operator", name="a"))
        bob = bearer(issue_key({"SAGAWORKS_DATA_DIR": str(tmp_path)}, "operator", name="b"))
        answers = [(await http.get("/openapi.json", headers=alice)).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = await http.get("/openapi.json", headers=alice)
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "rate limit" in limited.json()["detail"]
        # Per principal: another one still gets through.
        assert (await http.get("/openapi.json", headers=bob)).status_code == 200


async def test_chaos_routes_do_not_exist_unless_enabled(tmp_path: Path) -> None:
    operator = bearer(issue_key({"SAGAWORKS_DATA_DIR": str(tmp_path)}, "operator"))
    async with await _client(_settings(tmp_path)) as http:
        put = await http.put("/admin/faults/inventory", json={"error_ratio": 1}, headers=operator)
        assert put.status_code == 404
        spec = (await http.get("/openapi.json", headers=operator)).json()
        assert not any(path.startswith("/admin") for path in spec["paths"])


def test_order_ids_are_keyed_and_scoped() -> None:
    secret, other_secret = b"s" * 32, b"t" * 32
    same = order_id_for(secret, "customer:c-1", "key-1")
    assert same == order_id_for(secret, "customer:c-1", "key-1")
    assert same != order_id_for(secret, "customer:c-2", "key-1")
    assert same != order_id_for(other_secret, "customer:c-1", "key-1")
    assert order_id_for(secret, "customer:c-1", None) != order_id_for(secret, "customer:c-1", None)


async def test_docs_send_a_browser_without_a_session_to_the_login_page(tmp_path: Path) -> None:
    operator = bearer(issue_key({"SAGAWORKS_DATA_DIR": str(tmp_path)}, "operator"))
    async with await _client(_settings(tmp_path)) as http:
        anonymous = await http.get("/docs")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/login?next=/docs"
        assert (await http.get("/docs", headers=operator)).status_code == 200
        assert (await http.get("/openapi.json")).status_code == 401
        bad = await http.get("/docs", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
