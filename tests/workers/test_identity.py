"""Workers are shown by role and counter; the report keys (pid@host) stay internal."""

from __future__ import annotations

from datetime import UTC, datetime

from workers.identity import public_state
from workflows.coordination_book import Book
from workflows.coordination_models import CoordinatorConfig, WorkerReport

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def test_workers_are_numbered_per_role_in_order_of_first_report() -> None:
    book = Book()
    config = CoordinatorConfig(services=["payments", "inventory"])
    keys = ("payments 11@host-a", "orders 12@host-a", "payments 13@host-b", "payments 11@host-a")
    for key in keys:
        book.apply_report(WorkerReport(key), NOW, config)
    state = book.view(NOW, config, run=0)
    shown = public_state(state)
    assert [w.worker for w in shown.workers] == ["payments-1", "orders-1", "payments-2"]
    assert [w.reports for w in shown.workers] == [2, 1, 1]
    assert "@" not in repr(shown.workers)
    assert [w.worker for w in state.workers][0] == "payments 11@host-a"  # unchanged
