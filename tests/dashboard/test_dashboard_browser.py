"""The operator's dashboard in a real browser, on the real stack (`make up` style).

Headless Chromium from Debian logs in through the login form with a real operator key,
watches an order complete, approves a held order, trips and resets the payments circuit
from the page (answering its confirmations), and sees the page say "not live" when the
coordinator, and then the API itself, go away. Screenshots go to the test's folder and to
bench/results/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.dashboard.browser import chromium, require_browser
from tests.observability.otlp_receiver import otlp_receiver
from tests.support.api_client import Api, order_body, system_on_dev_server
from tests.support.auth import issue_key
from tests.support.stack import REPO_ROOT, wait_until_ready

pytestmark = pytest.mark.e2e

T = TypeVar("T")
OPERATOR = "dash-operator"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_UI = "http://127.0.0.1:8233"
TRACES = "http://traces.example/trace/{trace_id}"


async def until(
    driver: WebDriver, condition: Callable[[WebDriver], T], what: str, within: float = 60
) -> T:
    """Poll the page (in a thread: selenium blocks) until `condition` is truthy.

    The page re-renders its tables on every update, so an element found in one poll may
    be gone when it is read: that poll is retried, like one that found nothing.
    """

    def wait() -> T:
        waiter: WebDriverWait[WebDriver] = WebDriverWait(
            driver, within, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        )
        return waiter.until(condition, message=f"page never showed: {what}")

    return await asyncio.to_thread(wait)


def text_of(driver: WebDriver, selector: str) -> str:
    """The first match's text; found again if the page re-rendered it while it was read."""
    for _ in range(5):
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        try:
            return found[0].text if found else ""
        except StaleElementReferenceException:
            continue
    return ""


def completed_count(driver: WebDriver) -> int:
    text = text_of(driver, '#finished-total tr[data-key="COMPLETED"] td.n')
    return int(text.replace(",", "")) if text else 0


def connection(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "conn").get_attribute("data-state") or ""


def circuit(driver: WebDriver, service: str) -> str:
    badge = driver.find_element(By.CSS_SELECTOR, f'.service[data-service="{service}"] .circuit')
    return badge.get_attribute("data-state") or ""


async def answer_confirm(driver: WebDriver, accept: bool) -> str:
    alert = await until(driver, expected_conditions.alert_is_present(), "a confirmation", 10)
    assert alert is not False
    question = alert.text
    if accept:
        alert.accept()
    else:
        alert.dismiss()
    return question


def action_results(driver: WebDriver) -> list[str]:
    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#results li")]


async def coordination(api: Api) -> dict[str, Any]:
    answer = await api.http.get("/coordination")
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


def screenshot(driver: WebDriver, folder: Path, name: str) -> Path:
    path = folder / name
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, RESULTS_DIR / name)
    return path


async def test_operator_watches_and_acts_from_the_dashboard(tmp_path: Path) -> None:
    require_browser()  # before the stack starts: a missing browser fails fast and clearly
    with otlp_receiver() as receiver:
        extra_env = {
            "SAGAWORKS_API_TEMPORAL_TIMEOUT_S": "2",
            "SAGAWORKS_DASHBOARD_HELD_POLL_S": "1",
            "SAGAWORKS_APPROVAL_TIMEOUT_S": "900",
            # Traced, so each order has a trace ID for the page to show and link.
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "SAGAWORKS_TRACE_URL_TEMPLATE": TRACES,
        }
        await drive_the_dashboard(tmp_path, extra_env)


async def drive_the_dashboard(tmp_path: Path, extra_env: dict[str, str]) -> None:
    async with system_on_dev_server(tmp_path / "stack", extra_env) as api:
        assert api.stack.api_url is not None
        with chromium(tmp_path / "profile") as driver:
            await log_in(driver, api)
            await watch_an_order_complete(driver, api)
            await approve_a_held_order(driver, api, tmp_path)
            await retry_a_dead_letter(driver, api, tmp_path)
            await trip_and_reset_payments(driver, api)
            await until(driver, lambda d: connection(d) == "live", "live again after the actions")
            shot = screenshot(driver, tmp_path, "dashboard.png")
            assert shot.stat().st_size > 10_000
            await coordinator_outage_is_shown(driver, api, tmp_path)
            await api_outage_is_shown(driver, api)


async def log_in(driver: WebDriver, api: Api) -> None:
    token = issue_key(api.stack.env, "operator", name=OPERATOR)
    driver.get(f"{api.stack.api_url}/dashboard")
    await until(driver, lambda d: "/login?next=/dashboard" in d.current_url, "the login redirect")
    driver.find_element(By.ID, "key").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button[type=submit]").click()
    await until(driver, lambda d: d.current_url.endswith("/dashboard"), "the dashboard URL")
    assert OPERATOR in driver.find_element(By.CSS_SELECTOR, "body > header .who").text
    await until(driver, lambda d: connection(d) == "live", "the live badge")
    assert driver.find_element(By.ID, "banner").get_attribute("hidden") is not None
    await until(
        driver,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, ".service .circuit[data-state=closed]")) == 4
        ),
        "four closed circuits",
    )


async def watch_an_order_complete(driver: WebDriver, api: Api) -> None:
    before = completed_count(driver)
    order_id, *others = [await api.place(order_body()) for _ in range(3)]
    declined = await api.place(order_body(card="tok_decline"))
    for placed in (order_id, *others):
        await api.wait_for(placed, "COMPLETED")
    await api.wait_for(declined, "COMPENSATED")
    await until(driver, lambda d: completed_count(d) == before + 3, "the completed count go up")
    rolled_back = f'#recent tr[data-order="{declined}"][data-status="COMPENSATED"]'
    await until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, rolled_back), "the rollback")
    row = f'#recent tr[data-order="{order_id}"][data-status="COMPLETED"]'
    await until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, row), "the order among recent")
    link = driver.find_element(By.CSS_SELECTOR, f"{row} a.order-link")
    assert link.get_attribute("href") == f"{DEFAULT_UI}/namespaces/default/workflows/{order_id}"
    # The trace cell shows the order's trace ID, as a link into the tracing backend.
    trace_id = (await api.http.get(f"/orders/{order_id}")).json()["trace_id"]
    assert trace_id
    await until(
        driver,
        lambda d: text_of(d, f"{row} td.trace") == trace_id,
        f"the trace cell reading {trace_id}",
    )
    trace_link = driver.find_element(By.CSS_SELECTOR, f"{row} td.trace a")
    assert trace_link.get_attribute("href") == TRACES.format(trace_id=trace_id)
    # Payments served this order: the page's rate for it is above zero.
    calls = '.service[data-service="payments"] [data-metric="calls"]'
    await until(driver, lambda d: text_of(d, calls) not in ("", "–", "0.00"), "payments calls/s")


async def approve_a_held_order(driver: WebDriver, api: Api, folder: Path) -> None:
    # SKU-3 costs more than the approval threshold: the saga waits for an operator.
    order_id = await api.place(order_body(sku="SKU-3", quantity=1))
    await api.wait_for(order_id, "AWAITING_APPROVAL")
    held = f'#held tr[data-order="{order_id}"]'
    await until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, held), "the held order")
    await until(
        driver, lambda d: text_of(d, f"{held} td.trace") not in ("", "…"), "the held trace ID"
    )
    screenshot(driver, folder, "dashboard-held.png")
    driver.find_element(By.CSS_SELECTOR, f"{held} button.approve").click()
    question = await answer_confirm(driver, accept=True)
    assert order_id in question
    await api.wait_for(order_id, "COMPLETED")
    await until(
        driver,
        lambda d: any(f"approve {order_id}: done, order now " in r for r in action_results(d)),
        "the approval's result",
    )
    await until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, held), "the row leave")


async def retry_a_dead_letter(driver: WebDriver, api: Api, folder: Path) -> None:
    # Voiding the payment fails for good, so an undeliverable order's roll-back is stuck.
    fault = {"error_ratio": 1.0, "activity": "void_payment", "non_retryable": True}
    assert (await api.http.put("/admin/faults/payments", json=fault)).status_code == 200
    try:
        order_id = await api.place(order_body(country="XX"))
        await api.wait_for(order_id, "FAILED")
        letter = f'#dead-letters tr[data-order="{order_id}"][data-status="failed"]'
        await until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, letter), "the dead letter")
        screenshot(driver, folder, "dashboard-dead-letter.png")
    finally:
        assert (await api.http.delete("/admin/faults/payments")).status_code == 204
    driver.find_element(By.CSS_SELECTOR, f"{letter} button.retry").click()
    assert order_id in await answer_confirm(driver, accept=True)
    await api.wait_for(order_id, "COMPENSATED")
    await until(
        driver,
        lambda d: any(f"retry {order_id}: done" in r for r in action_results(d)),
        "the retry's result",
    )
    await until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, letter), "the letter go")


async def trip_and_reset_payments(driver: WebDriver, api: Api) -> None:
    card = '.service[data-service="payments"]'
    trip = f'{card} button[data-action="trip"]'
    results_before = len(action_results(driver))
    # Declining the confirmation does nothing at all.
    driver.find_element(By.CSS_SELECTOR, trip).click()
    question = await answer_confirm(driver, accept=False)
    assert "payments" in question
    driver.find_element(By.CSS_SELECTOR, trip).click()
    await answer_confirm(driver, accept=True)
    await until(driver, lambda d: circuit(d, "payments") == "open", "payments open on the page")
    state = await coordination(api)
    payments = state["services"]["payments"]["circuit"]
    assert (payments["state"], payments["manual"]) == ("open", True)
    assert payments["reason"] == f"tripped from the dashboard by {OPERATOR}"
    assert state["services"]["shipping"]["circuit"]["state"] == "closed"
    await until(
        driver,
        lambda d: "trip payments: done, circuit now open" in d.find_element(By.ID, "toast").text,
        "the trip's result",
    )
    # One result line: the declined confirmation sent nothing.
    assert len(action_results(driver)) == results_before + 1

    driver.find_element(By.CSS_SELECTOR, f'{card} button[data-action="reset"]').click()
    await answer_confirm(driver, accept=True)
    await until(driver, lambda d: circuit(d, "payments") == "closed", "payments closed again")
    state = await coordination(api)
    assert state["services"]["payments"]["circuit"]["state"] == "closed"


async def coordinator_outage_is_shown(driver: WebDriver, api: Api, folder: Path) -> None:
    # The coordinator lives in the orders worker: without it, nothing can answer its query.
    api.stack.stop("orders")
    await until(driver, lambda d: connection(d) == "stale", "the stale badge", within=60)
    banner = driver.find_element(By.ID, "banner")
    assert banner.is_displayed()
    assert "Not live: the coordinator or Temporal is unavailable" in banner.text
    assert "stale" in banner.text
    body = driver.find_element(By.TAG_NAME, "body")
    assert body.get_attribute("data-conn") == "stale"
    assert driver.find_element(By.ID, "in-flight").value_of_css_property("opacity") != "1"
    screenshot(driver, folder, "dashboard-stale.png")
    api.stack.start("orders")
    await until(driver, lambda d: connection(d) == "live", "live once the coordinator is back", 90)
    assert not driver.find_element(By.ID, "banner").is_displayed()


async def api_outage_is_shown(driver: WebDriver, api: Api) -> None:
    api.stack.stop("api")
    await until(driver, lambda d: connection(d) == "stale", "stale without the API")
    assert "live stream from the API was lost" in driver.find_element(By.ID, "banner").text
    api.stack.start("api")
    await asyncio.to_thread(wait_until_ready, api.stack)
    # The same session (it lives in the gateway's database) reconnects by itself.
    await until(driver, lambda d: connection(d) == "live", "live once the API is back", 90)
