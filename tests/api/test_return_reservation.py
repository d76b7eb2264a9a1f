"""A return claims against its order's reservation, not its order ID (on the real stack).

The gateway reads the completed order's reservation from its result and hands it to the
return, whose claim in inventory is then keyed by it: an order ID reused once Temporal's
retention forgot the first order never shares its claims (tests/activities/test_returns.py
shows the ledger's side).
"""

from __future__ import annotations

from sqlmodel import Session, select

from activities.inventory import Reservation, ReturnClaim
from common.db import make_engine
from tests.api.test_returns import completed_order, customer, request_return
from tests.support.api_client import Api
from workflows.models import OrderStatus
from workflows.return_models import ReturnInput


async def test_a_returns_claim_names_the_orders_reservation(api: Api) -> None:
    _, me = customer(api)
    order_id = await completed_order(api, me, quantity=2)

    answer = await request_return(api, order_id, me, 1)

    assert answer.status_code == 202, answer.text
    return_id = answer.json()["return_id"]
    order = await api.temporal.get_workflow_handle(order_id, result_type=OrderStatus).result()
    history = await api.temporal.get_workflow_handle(return_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [input] = await api.temporal.data_converter.decode(started.input.payloads, [ReturnInput])
    engine = make_engine(api.stack.database_url("inventory"))
    try:
        with Session(engine) as session:
            [reservation] = session.exec(
                select(Reservation).where(Reservation.order_id == order_id)
            ).all()
            [claim] = session.exec(
                select(ReturnClaim).where(ReturnClaim.return_id == return_id)
            ).all()
    finally:
        engine.dispose()
    assert order.reservation_id == reservation.id
    # The gateway passed it on (a return without it would claim by order ID).
    assert input.reservation_id == reservation.id
    assert claim.reservation_id == reservation.id
