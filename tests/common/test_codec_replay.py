"""The replay guard with encryption: encrypted histories need the codec, old plain ones don't.

`tests/workflows/test_replay.py` replays every recorded history through the tests' codec
(tests/support/codec.py). Here: a history recorded with the codec on is ciphertext, replays
through that codec and not without it; a history recorded before encryption replays through
the codec because plain payloads pass through it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

from tests.support.codec import TEST_DATA_CONVERTER
from tests.support.temporal import time_skipping_env
from tests.workflows.helpers import build_services, order_input, running_worker, start_order
from workflows.coordinator import CoordinatorWorkflow
from workflows.order import OrderWorkflow

HISTORIES = Path(__file__).parents[1] / "histories"
CARD = "tok_replay_secret"
# Read at collection: the tests themselves do no blocking file I/O.
BEFORE_ENCRYPTION = (HISTORIES / "before_patches" / "order_happy_path.json").read_text()


async def replay_failure(history: WorkflowHistory, converter: DataConverter) -> str | None:
    replayer = Replayer(workflows=[OrderWorkflow, CoordinatorWorkflow], data_converter=converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return None if result.replay_failure is None else str(result.replay_failure)


async def test_an_encrypted_history_replays_only_through_the_codec(
    sqlite_url: Callable[[str], str],
) -> None:
    services = build_services(sqlite_url)
    try:
        async with time_skipping_env() as env:
            queue = f"replay-{uuid.uuid4()}"
            async with running_worker(env.client, queue, services.activities()):
                order = order_input(queue, card=CARD)
                handle = await start_order(env.client, order, queue)
                await asyncio.wait_for(handle.result(), 60)
                history = await handle.fetch_history()
    finally:
        for engine in services.engines:
            engine.dispose()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert CARD.encode() not in raw and order.shipping_address.line1.encode() not in raw
    assert b"binary/encrypted" in raw
    assert await replay_failure(history, TEST_DATA_CONVERTER) is None
    assert "Unknown payload encoding binary/encrypted" in str(
        await replay_failure(history, DataConverter.default)
    )


async def test_a_history_recorded_before_encryption_replays_through_the_codec() -> None:
    history = WorkflowHistory.from_json("order_happy_path", BEFORE_ENCRYPTION)
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert b"binary/encrypted" not in raw and b"tok_visa" in raw  # plain, as recorded
    assert await replay_failure(history, TEST_DATA_CONVERTER) is None
