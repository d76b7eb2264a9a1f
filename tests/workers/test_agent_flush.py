"""The agent's flush: a report the server refused is kept and goes with the next one."""

from __future__ import annotations

from typing import Any, cast

from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from common.settings import Settings
from workers.agent import CoordinationAgent
from workers.reporting import ReportBuffer
from workflows.coordination_models import WorkerReport


class RefusingOnce:
    """A client whose first signal-with-start is refused, as a busy server may."""

    def __init__(self) -> None:
        self.delivered: list[WorkerReport] = []
        self.refused = 0

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        if not self.refused:
            self.refused += 1
            raise WorkflowAlreadyStartedError("coordinator", "CoordinatorWorkflow")
        [report] = kwargs["start_signal_args"]
        self.delivered.append(report)


def _calls(report: WorkerReport) -> int:
    return sum(sample.calls for sample in report.services)


async def test_a_refused_report_is_kept_and_sent_with_the_next() -> None:
    client = RefusingOnce()
    buffer = ReportBuffer("payments 1@host")
    agent = CoordinationAgent(cast(Client, client), Settings(), buffer)
    for _ in range(3):
        buffer.call_started("payments")
        buffer.call_finished("payments", latency_ms=5, error=None)
    assert await agent.flush() is False  # refused: nothing delivered
    buffer.call_started("payments")
    buffer.call_finished("payments", latency_ms=5, error=None)
    assert await agent.flush() is True
    [report] = client.delivered
    assert _calls(report) == 4  # the refused three and the one after, in one report
    assert await agent.flush() is False  # nothing left to send
    assert await agent.flush(announce=True) is True
    assert _calls(client.delivered[-1]) == 0
