"""run_once: an effect applied at most once per key, enforced by the database."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlmodel import Field, Session, SQLModel, col, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.idempotency import IdempotencyRecord, current_attempt, run_once
from common.db import SessionFactory, is_poison, make_engine
from tests.activities.helpers import database


@dataclasses.dataclass(frozen=True)
class Note:
    text: str
    count: int


@pytest.fixture
def db(sqlite_url: Callable[[str], str]) -> Iterator[SessionFactory]:
    with database(sqlite_url("idempotency"), [IdempotencyRecord]) as open_session:
        yield open_session


def records(open_session: SessionFactory) -> list[IdempotencyRecord]:
    with open_session() as session:
        return list(session.exec(select(IdempotencyRecord)).all())


def test_effect_runs_once_and_repeats_return_the_first_result(db: SessionFactory) -> None:
    calls: list[int] = []

    def effect(_: Session) -> Note:
        calls.append(1)
        return Note("first", len(calls))

    first = run_once(db, "k1", "note", Note, effect)
    again = run_once(db, "k1", "note", Note, effect)

    assert first == again == Note("first", 1)
    assert len(calls) == 1
    [record] = records(db)
    assert (record.key, record.operation) == ("k1", "note")


def test_a_raising_effect_stores_nothing(db: SessionFactory) -> None:
    def failing(session: Session) -> Note:
        session.add(IdempotencyRecord(key="side-effect", operation="x", result_json="{}"))
        raise ApplicationError("business failure", non_retryable=True)

    with pytest.raises(ApplicationError):
        run_once(db, "k1", "note", Note, failing)

    assert records(db) == []  # neither the key nor the effect's own writes
    assert run_once(db, "k1", "note", Note, lambda _: Note("retried", 2)) == Note("retried", 2)


def test_a_key_reused_for_another_operation_is_refused(db: SessionFactory) -> None:
    run_once(db, "k1", "note", Note, lambda _: Note("first", 1))

    with pytest.raises(ApplicationError) as raised:
        run_once(db, "k1", "other", Note, lambda _: Note("second", 2))

    assert (raised.value.type, raised.value.non_retryable) == ("IdempotencyKeyReused", True)


def test_results_must_be_dataclasses(db: SessionFactory) -> None:
    with pytest.raises(TypeError):
        run_once(db, "k1", "note", dict, lambda _: {"not": "a dataclass"})

    assert records(db) == []


def test_losing_a_race_on_the_key_returns_the_winners_result(
    sqlite_url: Callable[[str], str], db: SessionFactory
) -> None:
    winner = run_once(db, "k1", "note", Note, lambda _: Note("winner", 1))
    engine = make_engine(sqlite_url("idempotency"))

    class RacingSession(Session):
        """Misses the winner's row once, as a read before a concurrent commit would."""

        missed = False

        def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
            if entity is IdempotencyRecord and not RacingSession.missed:
                RacingSession.missed = True
                return None
            return super().get(entity, ident, **kwargs)

    def racing_session() -> Session:
        return RacingSession(engine, expire_on_commit=False)

    try:
        loser = run_once(racing_session, "k1", "note", Note, lambda _: Note("loser", 2))
    finally:
        engine.dispose()

    assert RacingSession.missed
    assert loser == winner
    assert len(records(db)) == 1


def test_current_attempt_comes_from_the_activity_context() -> None:
    assert current_attempt() == 1  # outside an activity
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=5)
    assert env.run(current_attempt) == 5


# --- poison pills: values the database refuses fail for good -------------------------------


class Row(SQLModel, table=True):
    """A table with a NOT NULL column, to make the database refuse a value."""

    __tablename__ = "test_poison_row"

    id: str = Field(primary_key=True, max_length=20)
    label: str = Field(max_length=20)


@pytest.fixture
def rows_db(database_url: Callable[[str], str]) -> Iterator[SessionFactory]:
    with database(database_url("poison"), [IdempotencyRecord, Row]) as open_session:
        yield open_session


def insert(row_id: str, label: Any) -> Callable[[Session], Note]:
    def effect(session: Session) -> Note:
        session.add(Row(id=row_id, label=label))
        session.flush()  # the database judges the value here, inside run_once
        return Note(row_id, 1)

    return effect


def test_a_value_the_database_refuses_fails_for_good_as_invalid_input(
    rows_db: SessionFactory,
) -> None:
    with pytest.raises(ApplicationError) as raised:
        run_once(rows_db, "k1", "note", Note, insert("r1", None))  # NOT NULL refuses it

    error = raised.value
    assert (error.type, error.non_retryable) == ("InvalidInput", True)
    # The database's own text (which can quote the value) is not the message: the driver's
    # error class is (IntegrityError on SQLite, NotNullViolation on PostgreSQL).
    assert str(error).startswith("InvalidInput: note: the database refused a value (")
    assert "test_poison_row" not in str(error) and "label" not in str(error)
    assert records(rows_db) == []


def test_a_unique_violation_stays_retryable(rows_db: SessionFactory) -> None:
    # Another key already made this row: a concurrent writer, which a retry sorts out.
    run_once(rows_db, "k1", "note", Note, insert("r1", "first"))
    with pytest.raises(IntegrityError) as raised:
        run_once(rows_db, "k2", "note", Note, insert("r1", "second"))

    assert not is_poison(raised.value)
    assert [r.key for r in records(rows_db)] == ["k1"]


# What each backend refuses to even compare: SQLite cannot bind an integer above 64 bits
# (a bare OverflowError from the driver), PostgreSQL refuses a NUL character in text.
REFUSED = {"sqlite": (OverflowError, 2**63), "postgresql": (DataError, "x\x00")}


def test_database_errors_are_classified_poison_or_transient(
    rows_db: SessionFactory, request: pytest.FixtureRequest
) -> None:
    with rows_db() as session, pytest.raises(IntegrityError) as not_null:
        session.add(Row(id="r1", label=None))  # type: ignore[arg-type]
        session.flush()
    assert is_poison(not_null.value)
    error_type, value = REFUSED[request.node.callspec.params["database_url"]]
    with rows_db() as session, pytest.raises(error_type) as refused:
        session.execute(select(Row).where(col(Row.label) == value))
    assert is_poison(refused.value)
    assert not is_poison(OperationalError("SELECT 1", {}, Exception("database is locked")))
    assert not is_poison(RuntimeError("anything else"))
