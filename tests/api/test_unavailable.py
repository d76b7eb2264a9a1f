"""No order worker: the API answers 503 fast instead of hanging, and recovers with the worker."""

from __future__ import annotations

import time

from tests.api.conftest import API_TIMEOUT_S
from tests.support.api_client import Api, order_body, poll


async def test_running_order_is_503_without_a_worker_and_200_after(api: Api) -> None:
    waiting = await api.place(order_body(sku="SKU-3", quantity=1))
    await api.wait_for(waiting, "AWAITING_APPROVAL")
    completed = await api.place(order_body())
    await api.wait_for(completed, "COMPLETED")

    api.stack.stop("orders")
    try:
        started = time.monotonic()
        response = await api.http.get(f"/orders/{waiting}")
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert elapsed < API_TIMEOUT_S + 2
        assert response.headers["Retry-After"].isdigit()
        assert isinstance(response.json()["detail"], str)

        # A finished saga's status comes from its history: no worker needed.
        finished = await api.http.get(f"/orders/{completed}")
        assert finished.status_code == 200, finished.text
        assert finished.json()["status"] == "COMPLETED"
    finally:
        api.stack.start("orders")

    # 503 until the restarted worker polls again, then the live status once more.
    back = await poll(
        lambda: api.http.get(f"/orders/{waiting}"),
        lambda r: r.status_code != 503,
    )
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "AWAITING_APPROVAL"
    rejected = await api.http.post(f"/orders/{waiting}/reject")
    assert rejected.status_code == 200, rejected.text
    await api.wait_for(waiting, "COMPENSATED")
