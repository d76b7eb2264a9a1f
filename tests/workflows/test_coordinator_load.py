"""The coordinator's book, unit by unit: what counts as load, which workers it remembers,
and which dead letters it keeps.

- Parked sagas (held for approval, waiting for a parcel, FAILED awaiting an operator) are
  counted apart from the sagas actively running steps, per saga type; `is_parked` is the
  one definition, and its strings are the sagas' own constants.
- A worker process silent for `forget_worker_s` leaves the list, except the freshest of
  its role (its report age is what pages someone when the role is down).
- A saga FAILED with a dead letter that Temporal no longer runs (terminated, deleted)
  loses its dead letters at the next reconciliation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows import returns
from workflows.coordination_book import Book
from workflows.coordination_models import (
    AWAITING_OPERATOR,
    PARKED,
    CoordinatorConfig,
    ReconcileResult,
    SagaSnapshot,
    StuckCompensation,
    WorkerReport,
    is_parked,
)
from workflows.models import OrderState
from workflows.registry import SAGA_TYPE_NAMES
from workflows.return_models import ReturnState
from workflows.saga import CompensationStatus

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
CONFIG = CoordinatorConfig(services=["payments"], saga_types=list(SAGA_TYPE_NAMES))
ORDER, RETURN = "OrderWorkflow", "ReturnWorkflow"


def snap(
    saga_id: str,
    saga_type: str,
    status: str,
    step: str | None,
    *,
    terminal: bool = False,
    at: datetime = NOW,
    stuck: list[StuckCompensation] | None = None,
) -> SagaSnapshot:
    return SagaSnapshot(
        saga_id, status, step, at, terminal=terminal, stuck=stuck or [], saga_type=saga_type
    )


def failed_for_good(saga_id: str, compensation: str) -> StuckCompensation:
    return StuckCompensation(saga_id, compensation, CompensationStatus.FAILED, 3, 30, "boom")


def test_parked_is_defined_with_the_sagas_own_names() -> None:
    assert set(PARKED) <= set(SAGA_TYPE_NAMES)
    assert PARKED[ORDER].statuses == {OrderState.AWAITING_APPROVAL.value}
    assert PARKED[RETURN].steps == {returns.AWAIT_PARCEL}
    assert AWAITING_OPERATOR == OrderState.FAILED.value == ReturnState.FAILED.value


def test_parked_sagas_are_counted_apart_from_active_ones_per_type() -> None:
    book = Book()
    sagas = [
        # Thousands of returns waiting days for their parcel, and held orders.
        *(
            snap(f"return-p{i}", RETURN, ReturnState.AWAITING_PARCEL, returns.AWAIT_PARCEL)
            for i in range(3_000)
        ),
        *(
            snap(f"order-h{i}", ORDER, OrderState.AWAITING_APPROVAL, "await_approval")
            for i in range(500)
        ),
        # Running steps: a checkout authorizing, one rolling back, a return being labelled
        # (AWAITING_PARCEL already, but not yet at the parcel), one rolling back.
        snap("order-a", ORDER, OrderState.PENDING, "authorize_payment"),
        snap("order-c", ORDER, OrderState.COMPENSATING, "compensating"),
        snap("return-l", RETURN, ReturnState.AWAITING_PARCEL, "issue_return_label"),
        snap("return-c", RETURN, ReturnState.AWAITING_PARCEL, "compensating"),
        # FAILED for good, open for an operator: ended, and parked.
        snap(
            "order-f",
            ORDER,
            OrderState.FAILED,
            "capture_payment",
            terminal=True,
            stuck=[failed_for_good("order-f", "capture_payment")],
        ),
        # FAILED without a dead letter (refused and closed): ended, not waiting.
        snap("return-x", RETURN, ReturnState.FAILED, None, terminal=True),
    ]
    book.apply_report(WorkerReport("orders 1@h", sagas=sagas), NOW, CONFIG)

    counts = book.view(NOW, CONFIG, 0).sagas
    assert counts.active_by_type == {ORDER: 2, RETURN: 2}
    assert counts.parked_by_type == {ORDER: 501, RETURN: 3_000}
    assert counts.in_flight == 3_504  # every open saga that has not ended, as before
    assert counts.by_type == {ORDER: 502, RETURN: 3_002}

    # The parcel arrives: refunding runs steps again; the operator retries the failed one.
    later = NOW + timedelta(seconds=1)
    book.apply_report(
        WorkerReport(
            "orders 1@h",
            sagas=[
                snap("return-p0", RETURN, ReturnState.REFUNDING, "restock_items", at=later),
                snap("order-f", ORDER, OrderState.PENDING, "capture_payment", at=later),
            ],
        ),
        later,
        CONFIG,
    )
    counts = book.view(later, CONFIG, 0).sagas
    assert counts.active_by_type == {ORDER: 3, RETURN: 3}
    assert counts.parked_by_type == {ORDER: 500, RETURN: 2_999}


def test_is_parked_for_unknown_types_only_by_failure() -> None:
    assert is_parked("SomeNewSaga", "FAILED", None)
    assert not is_parked("SomeNewSaga", "AWAITING_APPROVAL", "await_parcel")


def test_silent_worker_processes_are_forgotten_but_one_per_role_stays() -> None:
    config = CoordinatorConfig(services=["payments"], forget_worker_s=600)
    book = Book()
    for minute, worker in enumerate(["payments 1@a", "payments 2@a", "orders 3@a"]):
        book.apply_report(WorkerReport(worker), NOW + timedelta(minutes=minute), config)
    # An hour on, only payments 4 reports: the other payments processes are gone for good,
    # while orders, silent too, keeps its freshest process (its age shows the role down).
    later = NOW + timedelta(hours=1)
    book.apply_report(WorkerReport("payments 4@b"), later, config)
    assert set(book.workers) == {"payments 4@b", "orders 3@a"}
    assert {w.worker for w in book.view(later, config, 0).workers} == set(book.workers)


def test_a_thousand_restarts_leave_a_bounded_list() -> None:
    config = CoordinatorConfig(services=["payments"], forget_worker_s=600)
    book = Book()
    for i in range(1_000):  # a process restarted every minute for 16 hours
        book.apply_report(WorkerReport(f"payments {i}@a"), NOW + timedelta(minutes=i), config)
    assert len(book.workers) <= 11


def test_dead_letters_of_a_saga_temporal_no_longer_runs_are_dropped() -> None:
    book = Book()
    waiting = [
        snap(
            saga_id,
            saga_type,
            "FAILED",
            None,
            terminal=True,
            stuck=[failed_for_good(saga_id, "release_stock")],
        )
        for saga_id, saga_type in (("order-t", ORDER), ("return-w", RETURN))
    ]
    book.apply_report(WorkerReport("orders 1@h", sagas=waiting), NOW, CONFIG)
    assert book.waiting_candidates() == ["order-t", "return-w"]
    assert book.view(NOW, CONFIG, 0).sagas.parked_by_type == {ORDER: 1, RETURN: 1}

    # An operator terminated order-t in the Web UI: it will never report again.
    later = NOW + timedelta(minutes=1)
    result = ReconcileResult(running={ORDER: 0, RETURN: 1}, gone=["order-t"])
    book.apply_reconciliation([], result, later, later, CONFIG)

    state = book.view(later, CONFIG, 0)
    assert [d.order_id for d in state.dead_letters] == ["return-w"]
    assert state.sagas.parked_by_type == {RETURN: 1}
    assert book.waiting_candidates() == ["return-w"]


def test_a_book_from_before_waiting_existed_still_names_its_dead_letters() -> None:
    # Carried across continue-as-new from the previous code: dead letters, no `waiting`.
    book = Book()
    book.dead_letters["order-o:void_payment"] = failed_for_good("order-o", "void_payment")
    assert book.waiting_candidates() == ["order-o"]
    book.apply_reconciliation([], ReconcileResult(running={}, gone=["order-o"]), NOW, NOW, CONFIG)
    assert book.dead_letters == {}
