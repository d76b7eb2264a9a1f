"""One soak order through the HTTP API, as a patient client drives it through faults.

A transient answer (503, or no answer at all while Temporal or a worker is away) is retried
with backoff, and a POST is retried with the same Idempotency-Key, so a start whose answer
was lost is answered by the saga it already started. A 500 is retried too, but counted:
the API promises 503 for "try again", so every 500 in the report is a finding.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.soak_plan import PlannedOrder, PlannedReturn
from tooling.invariants import RETURN_TERMINAL, TERMINAL

TRANSIENT = frozenset({500, 502, 503, 504})
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 2.0
POLL_S = 1.0
# A refused return's 409 names it: it exists (FAILED), and the invariants count its rows.
RETURN_ID = re.compile(r"return-[0-9a-f]{32}")


class OrderStuck(Exception):
    """The order did not get where it had to within the soak's per-order deadline."""


@dataclass
class HttpStats:
    answers: Counter[str] = field(default_factory=Counter)  # "<route> <code>" -> count
    retries: int = 0
    replayed_posts: int = 0  # POSTs answered by a saga an earlier attempt had started
    late_decisions: int = 0  # a 409 because an earlier attempt, answered 503, had counted

    def to_json(self) -> dict[str, Any]:
        return {
            "answers": dict(sorted(self.answers.items())),
            "retries": self.retries,
            "replayed_posts": self.replayed_posts,
            "late_decisions": self.late_decisions,
            "server_errors": sum(n for k, n in self.answers.items() if k.endswith(" 500")),
        }


@dataclass
class OrderResult:
    planned: PlannedOrder
    order_id: str | None = None
    status: str | None = None  # the last status seen, terminal unless the order got stuck
    failure_reason: str | None = None
    problem: str | None = None  # what the driver could not do (a decision refused, a timeout)
    return_id: str | None = None
    return_status: str | None = None
    # Returns the claim ledger refused (the over-claim each planned return tries).
    refused_returns: list[str] = field(default_factory=list)


class Driver:
    def __init__(self, http: httpx.AsyncClient, stats: HttpStats, order_timeout_s: float) -> None:
        self._http = http
        self._stats = stats
        self._timeout_s = order_timeout_s

    async def drive(
        self, planned: PlannedOrder, on_placed: Callable[[], None] | None = None
    ) -> OrderResult:
        result = OrderResult(planned)
        deadline = time.monotonic() + self._timeout_s
        try:
            result.order_id = await self._place(planned, deadline)
            if on_placed is not None:
                on_placed()
            if planned.fixture.decision is not None:
                await self._decide(result, planned.fixture.decision, deadline)
            await self._until(result, lambda s: s["status"] in TERMINAL, deadline)
            if planned.ret is not None and result.status == "COMPLETED":
                await self._return(result, planned.ret, deadline)
        except OrderStuck as stuck:
            result.problem = str(stuck)
        return result

    async def _return(self, result: OrderResult, planned: PlannedReturn, deadline: float) -> None:
        """Return some items, try to return more than were bought, then play the fixture."""
        path = f"/orders/{result.order_id}/returns"
        headers = {"Idempotency-Key": planned.idempotency_key}
        answer, _ = await self._answered("POST", path, deadline, json=planned.body, headers=headers)
        if answer.status_code != 202:
            raise OrderStuck(f"POST {path} answered {answer.status_code}: {answer.text}")
        result.return_id = answer.json()["return_id"]
        over, _ = await self._answered(
            "POST",
            path,
            deadline,
            json=planned.over_claim,
            headers={"Idempotency-Key": planned.over_claim_key},
        )
        if over.status_code != 409:
            raise OrderStuck(f"an over-claim answered {over.status_code}: {over.text}")
        result.refused_returns += RETURN_ID.findall(over.json()["detail"])
        action = planned.fixture.action
        if action is not None:
            await self._until_return(
                result, lambda s: s["current_step"] == "await_parcel", deadline
            )
            answer, _ = await self._answered(
                "POST", f"/returns/{result.return_id}/{action}", deadline
            )
            if answer.status_code not in (200, 202):
                raise OrderStuck(f"return {action} answered {answer.status_code}: {answer.text}")
        await self._until_return(result, lambda s: s["status"] in RETURN_TERMINAL, deadline)

    async def _until_return(
        self, result: OrderResult, done: Callable[[dict[str, Any]], bool], deadline: float
    ) -> dict[str, Any]:
        path = f"/returns/{result.return_id}"
        while True:
            answer = await self._call("GET", path)
            if answer is not None:
                if answer.status_code != 200:
                    raise OrderStuck(f"GET {path} answered {answer.status_code}: {answer.text}")
                status: dict[str, Any] = answer.json()
                result.return_status = status["status"]
                if done(status) or status["status"] in RETURN_TERMINAL:
                    return status
            if time.monotonic() > deadline:
                raise OrderStuck(f"return still {result.return_status} after {self._timeout_s:g}s")
            await asyncio.sleep(POLL_S)

    async def _place(self, planned: PlannedOrder, deadline: float) -> str:
        headers = {"Idempotency-Key": planned.idempotency_key}
        answer, retried = await self._answered(
            "POST", "/orders", deadline, json=planned.body, headers=headers
        )
        if answer.status_code != 202:
            raise OrderStuck(f"POST /orders answered {answer.status_code}: {answer.text}")
        body = answer.json()
        if retried and body["replayed"]:
            self._stats.replayed_posts += 1
        order_id: str = body["order_id"]
        return order_id

    async def _decide(self, result: OrderResult, action: str, deadline: float) -> None:
        assert result.order_id is not None
        status = await self._until(
            result,
            lambda s: s["status"] == "AWAITING_APPROVAL" or s["status"] in TERMINAL,
            deadline,
        )
        if status["status"] != "AWAITING_APPROVAL":
            raise OrderStuck(f"never awaited approval; ended {status['status']}")
        answer, retried = await self._answered(
            "POST", f"/orders/{result.order_id}/{action}", deadline
        )
        if answer.status_code in (200, 202):
            return
        if answer.status_code == 409 and retried:
            # The refused repeat may be the echo of an attempt that did count: look.
            status = await self._until(result, lambda s: True, deadline)
            if _decided(status, action):
                self._stats.late_decisions += 1
                return
        raise OrderStuck(f"{action} answered {answer.status_code}: {answer.text}")

    async def _until(
        self, result: OrderResult, done: Callable[[dict[str, Any]], bool], deadline: float
    ) -> dict[str, Any]:
        """Poll GET /orders/{id} until `done(status)`; transient answers just mean not yet."""
        path = f"/orders/{result.order_id}"
        while True:
            answer = await self._call("GET", path)
            if answer is not None:
                if answer.status_code != 200:
                    raise OrderStuck(f"GET answered {answer.status_code}: {answer.text}")
                status: dict[str, Any] = answer.json()
                result.status, result.failure_reason = status["status"], status["failure_reason"]
                if done(status):
                    return status
            if time.monotonic() > deadline:
                raise OrderStuck(f"still {result.status} after {self._timeout_s:g}s")
            await asyncio.sleep(POLL_S)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One request; None when the answer was transient and the call should be repeated."""
        route = _route(method, path)
        try:
            answer = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            self._stats.answers[f"{route} {type(err).__name__}"] += 1
            return None
        self._stats.answers[f"{route} {answer.status_code}"] += 1
        return None if answer.status_code in TRANSIENT else answer

    async def _answered(
        self, method: str, path: str, deadline: float, **kwargs: Any
    ) -> tuple[httpx.Response, bool]:
        """Repeat a call until it gets a real answer; also says whether it had to repeat."""
        attempt = 0
        while (answer := await self._call(method, path, **kwargs)) is None:
            if time.monotonic() > deadline:
                raise OrderStuck(f"{method} {path}: no answer after {self._timeout_s:g}s")
            self._stats.retries += 1
            # Backing off spreads many clients' retries instead of hammering a server
            # that is coming back.
            await asyncio.sleep(min(MAX_DELAY_S, FIRST_DELAY_S * 2**attempt))
            attempt += 1
        return answer, attempt > 0


def _decided(status: dict[str, Any], action: str) -> bool:
    if action == "approve":
        return any(
            s["name"] == "await_approval" and s["status"] == "succeeded" for s in status["steps"]
        )
    reason = {"reject": "REJECTED_BY_OPERATOR", "cancel": "CANCELLED_BY_CUSTOMER"}[action]
    return bool(status["failure_reason"] == reason)


def _route(method: str, path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) >= 2:
        parts[1] = "{id}"
    return f"{method} /{'/'.join(parts)}"
