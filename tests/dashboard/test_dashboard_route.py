"""GET /dashboard in process: who gets the page, who is sent to log in, who is refused.

The keys and the session are real (the gateway's own key store and login form); no
Temporal is needed, since serving the page never touches it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from common.settings import Settings
from tests.support.auth import bearer, issue_key

BASE_URL = "http://127.0.0.1"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"SAGAWORKS_DATA_DIR": str(tmp_path)}


@pytest.fixture
async def http(env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=Path(env["SAGAWORKS_DATA_DIR"]),
        temporal_ui_url="http://ui.example:8233/",
        temporal_namespace="shop",
    )
    # No lifespan: the page and its files never touch Temporal.
    transport = httpx.ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def log_in(http: httpx.AsyncClient, token: str) -> None:
    answer = await http.post("/login", data={"key": token, "next": "/dashboard"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/dashboard"
    assert "sagaworks_session" in http.cookies


async def test_without_a_session_the_browser_is_sent_to_log_in(http: httpx.AsyncClient) -> None:
    answer = await http.get("/dashboard")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/dashboard"


async def test_an_unknown_session_cookie_is_sent_to_log_in_too(http: httpx.AsyncClient) -> None:
    http.cookies.set("sagaworks_session", "not-a-session")
    answer = await http.get("/dashboard")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/dashboard"


async def test_a_customer_key_gets_403(http: httpx.AsyncClient, env: dict[str, str]) -> None:
    customer = issue_key(env, "customer", customer_id="c-1")
    answer = await http.get("/dashboard", headers=bearer(customer))
    assert answer.status_code == 403
    assert answer.json()["detail"] == "the dashboard is for operators"


async def test_a_bad_bearer_token_gets_json_401_not_a_redirect(http: httpx.AsyncClient) -> None:
    answer = await http.get("/dashboard", headers=bearer("sw_not_a_real_key"))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert isinstance(answer.json()["detail"], str)


async def test_an_operator_session_gets_the_page_with_its_settings(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    await log_in(http, issue_key(env, "operator", name="alice"))
    answer = await http.get("/dashboard")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-store"
    page = answer.text
    found = re.search(r'<script type="application/json" id="config">(.*?)</script>', page, re.S)
    assert found is not None
    config = json.loads(found.group(1))
    assert config["operator"] == "alice"
    assert config["temporal_ui_url"] == "http://ui.example:8233"
    assert config["namespace"] == "shop"
    assert config["services"] == ["inventory", "payments", "shipping", "notifications"]
    for service in config["services"]:
        assert f'data-action="trip" data-service="{service}"' in page
    assert 'action="/logout"' in page
    # Nothing from another origin: the page works offline.
    assert not re.search(r'(src|href)="(https?:)?//', page)


async def test_an_operator_bearer_key_gets_the_page(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    answer = await http.get("/dashboard", headers=bearer(issue_key(env, "operator")))
    assert answer.status_code == 200
    assert "<title>sagaworks · operator dashboard</title>" in answer.text


async def test_the_page_files_need_the_operator_too(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    assert (await http.get("/dashboard/static/dashboard.js")).status_code == 401
    customer = issue_key(env, "customer", customer_id="c-1")
    assert (
        await http.get("/dashboard/static/dashboard.js", headers=bearer(customer))
    ).status_code == 403
    await log_in(http, issue_key(env, "operator", name="alice"))
    script = await http.get("/dashboard/static/dashboard.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in script.text
    style = await http.get("/dashboard/static/dashboard.css")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("name", ["nope.js", "..%2Fmain.py", "dashboard.html", ".hidden.js"])
async def test_only_the_page_files_are_served(
    http: httpx.AsyncClient, env: dict[str, str], name: str
) -> None:
    answer = await http.get(f"/dashboard/static/{name}", headers=bearer(issue_key(env, "operator")))
    assert answer.status_code == 404
    assert "detail" in answer.json()


async def test_logged_out_the_page_sends_the_browser_to_log_in_again(
    http: httpx.AsyncClient, env: dict[str, str]
) -> None:
    await log_in(http, issue_key(env, "operator", name="alice"))
    assert (await http.get("/dashboard")).status_code == 200
    cookie = http.cookies["sagaworks_session"]
    assert (await http.post("/logout")).status_code == 303
    http.cookies.set("sagaworks_session", cookie)  # even if the browser kept the old cookie
    answer = await http.get("/dashboard")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/dashboard"


def test_openapi_documents_the_page_as_html_and_its_errors_as_json(env: dict[str, str]) -> None:
    spec = create_app(Settings(data_dir=Path(env["SAGAWORKS_DATA_DIR"]))).openapi()
    answers = spec["paths"]["/dashboard"]["get"]["responses"]
    assert set(answers) == {"200", "303", "401", "403", "429", "500"}
    assert list(answers["200"]["content"]) == ["text/html"]
    for code in ("401", "403", "429", "500"):
        assert list(answers[code]["content"]) == ["application/json"], code
