"""Database errors name the statement, never the bound values (an order's card or address).

`hide_parameters` covers what SQLAlchemy renders. PostgreSQL's own message can still quote
a value (a unique violation's DETAIL line), so what the services show users is a stable
code and a safe message, never the raw text; that raw text stays in encrypted history.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from common.db import make_engine

SECRET = "tok_secret_4242 at Hidden Lane 7"


def test_a_refused_insert_does_not_echo_its_parameters(
    database_url: Callable[[str], str],
) -> None:
    engine = make_engine(database_url("disclosure"))
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE cards (token VARCHAR(64) UNIQUE)"))
            connection.execute(text("INSERT INTO cards VALUES (:token)"), {"token": SECRET})
        with pytest.raises(IntegrityError) as refused, engine.begin() as connection:
            connection.execute(text("INSERT INTO cards VALUES (:token)"), {"token": SECRET})
    finally:
        engine.dispose()
    message = str(refused.value)
    driver_text, _, rendered = message.partition("[SQL:")
    assert "INSERT INTO cards" in rendered  # it still says what failed
    assert "parameters hidden" in rendered and SECRET not in rendered
    if engine.dialect.name == "sqlite":
        assert SECRET not in driver_text  # SQLite's own message quotes no value
