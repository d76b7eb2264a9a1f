"""run_once: an effect applied at most once per key, enforced by the database."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.idempotency import IdempotencyRecord, current_attempt, run_once
from common.db import SessionFactory, make_engine
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
