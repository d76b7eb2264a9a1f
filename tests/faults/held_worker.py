"""`python -m tests.faults.held_worker <name>`: a real worker that tests can hold mid-step.

It runs `workers.<name>` exactly as `python -m workers.<name>` does, with one activity
interceptor added to every `Worker` the process builds: each activity stops before and
after its real body while the matching hold file exists (`tests/faults/holds.py`). Nothing
in `workers/` or `activities/` knows about it.

A hold never outlasts the attempt's start-to-close timeout (less a margin): past that,
Temporal would start a second attempt beside the held one, which is a different fault
from the one the test set up.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from tests.faults.holds import Holds

MARGIN = timedelta(seconds=1)
DEFAULT_LIMIT = timedelta(seconds=30)
POLL_S = 0.05


class HoldingInterceptor(Interceptor):
    def __init__(self, holds: Holds) -> None:
        self.holds = holds

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Holding(next, self.holds)


class _Holding(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, holds: Holds) -> None:
        super().__init__(next)
        self._holds = holds

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        limit = (
            time.monotonic()
            + ((info.start_to_close_timeout or DEFAULT_LIMIT) - MARGIN).total_seconds()
        )
        await self._hold(info, "before", limit)
        result = await self.next.execute_activity(input)
        await self._hold(info, "after", limit)
        return result

    async def _hold(self, info: activity.Info, phase: str, limit: float) -> None:
        holds, name, workflow_id = self._holds, info.activity_type, info.workflow_id
        if not holds.engaged(name, phase, workflow_id):
            return
        holds.mark_held(workflow_id, name, phase, info.attempt)
        # Polling a file: the switch lives in another process (the test), so no Event.
        while holds.engaged(name, phase, workflow_id) and time.monotonic() < limit:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)


def install(holds: Holds) -> None:
    """Add the holding interceptor to every Worker built from now on, in this process."""
    original = Worker.__init__

    def init(self: Worker, client: Client, **kwargs: Any) -> None:
        kwargs["interceptors"] = [*kwargs.get("interceptors", ()), HoldingInterceptor(holds)]
        original(self, client, **kwargs)

    Worker.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.faults.held_worker <worker name>")
    name = sys.argv[1]
    install(Holds(Path(os.environ["SAGAWORKS_DATA_DIR"])))
    sys.argv = [f"workers.{name}"]
    runpy.run_module(f"workers.{name}", run_name="__main__", alter_sys=True)


def command(name: str) -> list[str]:
    """The command line `Stack.start` needs to run worker `name` held."""
    return [sys.executable, "-m", "tests.faults.held_worker", name]


if __name__ == "__main__":
    main()
