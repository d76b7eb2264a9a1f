"""The custom search attributes the sagas keep current, for visibility queries.

Temporal indexes them in plain text (README, "What stays in plain text"), so only IDs and
outcomes go here, never an address, an item or an amount. Every one must be registered on
the server: `temporal-dev/start.sh` for `make up`, `tooling/temporal.py` for the tests'
servers (a test checks that both list exactly `ALL`).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
FAILURE_REASON = SearchAttributeKey.for_keyword("FailureReason")
# Returns: their own status, and the order they return (GET /returns?order_id=...).
RETURN_STATUS = SearchAttributeKey.for_keyword("ReturnStatus")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")

ALL: tuple[SearchAttributeKey[str], ...] = (
    ORDER_STATUS,
    CUSTOMER_ID,
    FAILURE_REASON,
    RETURN_STATUS,
    ORDER_ID,
)
