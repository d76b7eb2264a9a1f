"""The coordination and chaos-drill endpoints' contract: shapes, operator actions, 422s."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api_client import Api, poll

SERVICES = {"inventory", "payments", "shipping", "notifications"}


async def test_state_lists_every_service_with_its_circuit(api: Api) -> None:
    response = await poll(lambda: api.http.get("/coordination"), lambda r: r.status_code == 200)
    state = response.json()
    assert state["schema_version"] == 1
    assert set(state["services"]) == SERVICES
    for service in state["services"].values():
        assert service["circuit"]["state"] in {"closed", "open", "half_open"}
    assert {"in_flight", "compensating", "by_status", "by_step"} <= set(state["sagas"])
    # What load shedding counts, and the caps it sheds at (the API's settings).
    assert {"active_by_type", "parked_by_type"} <= set(state["sagas"])
    assert state["sagas"]["active_caps"] == {"OrderWorkflow": 2_000, "ReturnWorkflow": 500}
    assert state["intake"]["paused"] is False


async def test_operator_trips_and_resets_a_circuit(api: Api) -> None:
    tripped = await api.http.post(
        "/coordination/operate",
        json={"action": "trip", "service": "shipping", "reason": "by the API test"},
    )
    assert tripped.status_code == 200, tripped.text
    circuit = tripped.json()["services"]["shipping"]["circuit"]
    assert (circuit["state"], circuit["manual"], circuit["reason"]) == (
        "open",
        True,
        "tripped by the API test",
    )
    reset = await api.http.post(
        "/coordination/operate", json={"action": "reset", "service": "shipping"}
    )
    assert reset.status_code == 200
    assert reset.json()["services"]["shipping"]["circuit"]["state"] == "closed"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"action": "explode"}, "action"),
        # The schema itself says which actions name a service (api/schemas.py OperateIn).
        ({"action": "trip"}, "body.trip.service: Field required"),
        ({"action": "trip", "service": "billing"}, "body.trip.service: Input should be"),
        ({"action": "pause_intake", "service": "payments"}, "body.pause_intake.service"),
        ({"action": "reset", "service": "payments", "force": True}, "force"),
        ({}, "action"),
    ],
)
async def test_bad_operator_actions_are_422(api: Api, body: dict[str, Any], detail: str) -> None:
    response = await api.http.post("/coordination/operate", json=body)
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    ("service", "body", "detail"),
    [
        ("billing", {"error_ratio": 0.5}, "service"),
        ("payments", {"error_ratio": 1.5}, "error_ratio"),
        ("payments", {"error_ratio": -0.1}, "error_ratio"),
        ("payments", {"error_ratio": 0.5, "latency_ms": -1}, "latency_ms"),
        ("payments", {"error_ratio": 0.5, "latency_ms": "5"}, "latency_ms"),
        ("payments", {"error_ratio": 0.5, "latency_ms": 600_000}, "latency_ms"),
        ("payments", {"latency_ms": 5}, "error_ratio"),
        ("payments", {"error_ratio": 0.5, "extra": 1}, "extra"),
        ("payments", {"error_ratio": 0.5, "activity": "Void Payment!"}, "activity"),
        ("payments", {"error_ratio": 0.5, "non_retryable": "yes"}, "non_retryable"),
    ],
)
async def test_bad_fault_settings_are_422(
    api: Api, service: str, body: dict[str, Any], detail: str
) -> None:
    response = await api.http.put(f"/admin/faults/{service}", json=body)
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]


async def test_clearing_an_unknown_service_is_422(api: Api) -> None:
    response = await api.http.delete("/admin/faults/billing")
    assert response.status_code == 422
    assert "service" in response.json()["detail"]
