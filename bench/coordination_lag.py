"""Coordination lag: how long after a saga ends the coordinator's `state` reflects it.

The coordinator stamps every saga it learns has ended with two server-side workflow times
(`TerminalRecord`): `finished_at`, when the saga reached its terminal status, and
`observed_at`, when the report carrying that news was applied. Their difference is the lag,
and needs no clock but the server's. The bench only has to read the records before they
leave the 200-entry `recent_terminals` ring, which polling the `state` query every 2 s
does with a wide margin at bench rates (~20 orders/s fill the ring in ~10 s). Not faster:
each poll is a query the orders process answers and the server relays, CPU charged to
the coordinated orders (bench/run.py), so the probe should cost them as little as it can.

The bench's own view (when its client saw each order end, when a poll first showed it) is
kept too, to cross-check the server's figures: the dev server runs on this host, so both
sides read the same wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client

from workflows.coordination_models import TerminalRecord
from workflows.coordinator import CoordinatorWorkflow

POLL_INTERVAL_S = 2.0
QUERY_TIMEOUT = timedelta(seconds=5)
# Clock-reading granularity and the gap between a query's answer and our reading the clock:
# orderings violated by less than this are not evidence of anything.
ORDER_TOLERANCE = timedelta(milliseconds=50)


@dataclass
class OrderTrace:
    """One measured order as the bench saw it (host wall clock) and as the coordinator did."""

    placed_at: datetime
    # When `result()` returned to the bench: the client-side moment it saw the order end.
    terminal_seen_at: datetime | None = None
    # The first record of it the coordinator showed, and when that poll answered.
    record: TerminalRecord | None = None
    first_polled_at: datetime | None = None


@dataclass
class LagSamples:
    """Everything the probe collected, in seconds; report.py turns it into figures."""

    placed: int
    lags_s: list[float]  # observed_at - finished_at, one per order with a record
    missing: int  # measured orders the coordinator never showed as ended
    polls: int
    query_errors: dict[str, int]
    # Polls whose ring no longer held anything the previous poll saw: records may have
    # turned over unseen in between, so a missing sample may be the bench's doing.
    ring_gaps: int
    # Cross-check against the bench's own clock, for orders seen by both sides:
    client_end_s: list[float]  # terminal_seen_at - finished_at: the client learning of the end
    poll_view_s: list[float]  # first_polled_at - finished_at: an upper bound on each lag
    poll_slack_s: list[float]  # first_polled_at - observed_at: what polling adds on top
    order_violations: int  # server times out of order with the bench's (clock disagreement)


@dataclass
class LagProbe:
    """Polls one coordinator's `state` and pairs its terminal records with measured orders.

    It is also the `OrderWatcher` the measured coordinated orders report to (bench/load.py),
    so only orders this bench placed in measured rounds count, never the warm-up's.
    """

    client: Client
    coordinator_id: str
    interval_s: float = POLL_INTERVAL_S
    traces: dict[str, OrderTrace] = field(default_factory=dict)
    polls: int = 0
    query_errors: Counter[str] = field(default_factory=Counter)
    ring_gaps: int = 0
    _newest_seen: datetime | None = None
    # Set while every order placed so far has its record; `settle` waits on it.
    _all_recorded: asyncio.Event = field(default_factory=asyncio.Event)

    # --- the OrderWatcher side -----------------------------------------------------------

    def placed(self, order_id: str) -> None:
        self.traces[order_id] = OrderTrace(placed_at=_now())
        self._all_recorded.clear()

    def finished(self, order_id: str) -> None:
        trace = self.traces.get(order_id)
        if trace is not None:
            trace.terminal_seen_at = _now()

    # --- polling -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def polling(self) -> AsyncIterator[LagProbe]:
        """Poll in the background for the duration of the block; always stop on exit."""
        task = asyncio.create_task(self._poll_forever())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def settle(self, timeout_s: float) -> None:
        """Keep polling until every measured order has a record, or `timeout_s` passes.

        The last orders of a round end just before it does; their reports follow up to a
        report interval (plus delivery) later.
        """
        if not self._unrecorded():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._all_recorded.wait()

    async def _poll_forever(self) -> None:
        handle = self.client.get_workflow_handle_for(CoordinatorWorkflow.run, self.coordinator_id)
        while True:
            started = time.monotonic()
            try:
                state = await handle.query(CoordinatorWorkflow.state, rpc_timeout=QUERY_TIMEOUT)
            except Exception as err:  # counted; a slow or missing coordinator must not stop us
                self.query_errors[type(err).__name__] += 1
            else:
                self._absorb(state.recent_terminals, _now())
            self.polls += 1
            # A fixed cadence, not a fixed pause: a slow query should not thin the polls out.
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _absorb(self, records: list[TerminalRecord], polled_at: datetime) -> None:
        self._check_overlap(records)
        for record in records:
            trace = self.traces.get(record.order_id)
            # The first record wins: a report re-sent after a failed send repeats the news.
            if trace is not None and trace.record is None:
                trace.record, trace.first_polled_at = record, polled_at
        if not self._unrecorded():
            self._all_recorded.set()

    def _check_overlap(self, records: list[TerminalRecord]) -> None:
        """Count a gap when even the oldest record is newer than the last poll's newest."""
        if not records:
            return
        # The ring is in the order reports were applied, so observed_at never decreases.
        if self._newest_seen is not None and records[0].observed_at > self._newest_seen:
            self.ring_gaps += 1
        self._newest_seen = records[-1].observed_at

    def _unrecorded(self) -> bool:
        return any(t.record is None for t in self.traces.values())

    # --- results -------------------------------------------------------------------------

    def samples(self) -> LagSamples:
        recorded = [t for t in self.traces.values() if t.record is not None]
        both = [t for t in recorded if t.terminal_seen_at is not None]
        return LagSamples(
            placed=len(self.traces),
            lags_s=[_lag_s(t) for t in recorded],
            missing=len(self.traces) - len(recorded),
            polls=self.polls,
            query_errors=dict(self.query_errors),
            ring_gaps=self.ring_gaps,
            client_end_s=[_since_finished(t, t.terminal_seen_at) for t in both],
            poll_view_s=[_since_finished(t, t.first_polled_at) for t in recorded],
            poll_slack_s=[_poll_slack_s(t) for t in recorded],
            order_violations=sum(_out_of_order(t) for t in both),
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _lag_s(trace: OrderTrace) -> float:
    assert trace.record is not None
    return (trace.record.observed_at - trace.record.finished_at).total_seconds()


def _since_finished(trace: OrderTrace, moment: datetime | None) -> float:
    assert trace.record is not None and moment is not None
    return (moment - trace.record.finished_at).total_seconds()


def _poll_slack_s(trace: OrderTrace) -> float:
    assert trace.record is not None and trace.first_polled_at is not None
    return (trace.first_polled_at - trace.record.observed_at).total_seconds()


def _out_of_order(trace: OrderTrace) -> bool:
    """Did the server claim an event after the bench had already seen its consequence?

    The saga must have ended before the client saw it end, and the coordinator must have
    applied the report before a poll showed it.
    """
    record, seen, polled = trace.record, trace.terminal_seen_at, trace.first_polled_at
    assert record is not None and seen is not None and polled is not None
    return (
        record.finished_at > seen + ORDER_TOLERANCE or record.observed_at > polled + ORDER_TOLERANCE
    )
