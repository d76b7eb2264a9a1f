"""An Idempotency-Key outlives Temporal's retention: a repeat never starts a second saga.

Temporal deletes a closed saga's history after the namespace's retention (a day on the dev
server); the gateway's own ledger remembers each key for `SAGAWORKS_IDEMPOTENCY_KEY_TTL_DAYS`.
The tests make Temporal forget a saga as retention would (terminate, then delete) and
repeat the key through the real API with keys issued by the real key store.
"""

from __future__ import annotations

import uuid

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from tests.api.test_returns import completed_order, customer, request_return
from tests.support.api_client import Api, order_body, poll


async def forget(client: Client, workflow_id: str) -> None:
    """Do what retention does to a saga: end it if it still runs, then delete its history."""
    handle = client.get_workflow_handle(workflow_id)
    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        await handle.terminate(reason="test: as if retention had come")
    request = DeleteWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=workflow_id),
    )

    async def deleted() -> bool:
        # Deletion is a server task that a busy server can take a while to reach, so the
        # request is repeated (harmless) until describe no longer finds the saga.
        try:
            await client.workflow_service.delete_workflow_execution(request)
            await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return True
            raise
        return False

    await poll(deleted, bool, within=120, interval=1)


async def assert_unknown_to_temporal(client: Client, workflow_id: str) -> None:
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND, err
        return
    raise AssertionError(f"{workflow_id} was started again: {description.status}")


async def test_a_key_whose_order_temporal_forgot_is_409_and_starts_nothing(api: Api) -> None:
    body = order_body()
    key = {"Idempotency-Key": f"retained-{uuid.uuid4().hex}"}
    order_id = await api.place(body, **key)
    await api.wait_for(order_id, "COMPLETED")
    await forget(api.temporal, order_id)

    again = await api.http.post("/orders", json=body, headers=key)

    assert again.status_code == 409, again.text
    detail = again.json()["detail"]
    assert order_id in detail and "expired from Temporal" in detail, detail
    await assert_unknown_to_temporal(api.temporal, order_id)
    # The key still names that one body: another body with it is refused as before.
    other = await api.http.post("/orders", json={**body, "customer_id": "c-other"}, headers=key)
    assert other.status_code == 422, other.text
    await assert_unknown_to_temporal(api.temporal, order_id)


async def test_a_key_whose_return_temporal_forgot_is_409_and_starts_nothing(api: Api) -> None:
    _, me = customer(api)
    order_id = await completed_order(api, me, quantity=3)
    key = {"Idempotency-Key": f"retained-{uuid.uuid4().hex}"}
    first = await request_return(api, order_id, me, 1, **key)
    assert first.status_code == 202, first.text
    return_id = first.json()["return_id"]
    await forget(api.temporal, return_id)

    again = await request_return(api, order_id, me, 1, **key)

    assert again.status_code == 409, again.text
    detail = again.json()["detail"]
    assert return_id in detail and "expired from Temporal" in detail, detail
    await assert_unknown_to_temporal(api.temporal, return_id)


async def test_a_replay_while_temporal_still_has_the_order_is_answered_as_before(
    api: Api,
) -> None:
    # The ledger must not turn an ordinary replay into a refusal.
    body = order_body()
    key = {"Idempotency-Key": f"retained-{uuid.uuid4().hex}"}
    order_id = await api.place(body, **key)
    again = await api.http.post("/orders", json=body, headers=key)
    assert again.status_code == 202, again.text
    assert again.json()["order_id"] == order_id and again.json()["replayed"] is True
    await api.wait_for(order_id, "COMPLETED")
