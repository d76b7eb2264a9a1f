"""Every registered saga is first-class in the coordination state: counted by type."""

from __future__ import annotations

from datetime import UTC, datetime

from workflows.coordination_book import Book
from workflows.coordination_models import CoordinatorConfig, SagaSnapshot, WorkerReport
from workflows.registry import SAGA_TYPE_NAMES

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def snapshot(saga_id: str, saga_type: str, status: str, terminal: bool = False) -> SagaSnapshot:
    return SagaSnapshot(saga_id, status, None, NOW, terminal=terminal, saga_type=saga_type)


def test_running_sagas_are_counted_by_type_and_status() -> None:
    assert SAGA_TYPE_NAMES == ["OrderWorkflow", "ReturnWorkflow"]
    book, config = Book(), CoordinatorConfig(services=["payments"])
    report = WorkerReport(
        worker="orders 1@host",
        sagas=[
            snapshot("order-1", "OrderWorkflow", "PENDING"),
            snapshot("order-2", "OrderWorkflow", "COMPLETED", terminal=True),
            snapshot("return-1", "ReturnWorkflow", "AWAITING_PARCEL"),
            snapshot("return-2", "ReturnWorkflow", "REFUNDING"),
        ],
    )
    book.apply_report(report, NOW, config)

    sagas = book.view(NOW, config, run=0).sagas
    assert sagas.in_flight == 3
    assert sagas.by_type == {"OrderWorkflow": 1, "ReturnWorkflow": 2}
    assert sagas.by_status == {"PENDING": 1, "AWAITING_PARCEL": 1, "REFUNDING": 1}
    assert sagas.finished_total == {"COMPLETED": 1}


def test_a_snapshot_from_before_saga_types_counts_as_an_order() -> None:
    book, config = Book(), CoordinatorConfig(services=["payments"])
    old = SagaSnapshot("order-1", "PENDING", None, NOW)
    book.apply_report(WorkerReport(worker="orders 1@host", sagas=[old]), NOW, config)
    assert book.view(NOW, config, run=0).sagas.by_type == {"OrderWorkflow": 1}
