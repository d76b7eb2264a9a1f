"""Each service's activities over a fresh database (SQLite and PostgreSQL), called directly."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from activities import inventory, payments, shipping
from common.db import SessionFactory
from tests.activities.helpers import database


@pytest.fixture
def inventory_db(database_url: Callable[[str], str]) -> Iterator[SessionFactory]:
    with database(database_url("inventory"), inventory.TABLES) as open_session:
        inventory.seed_catalogue(open_session)
        yield open_session


@pytest.fixture
def payments_db(database_url: Callable[[str], str]) -> Iterator[SessionFactory]:
    with database(database_url("payments"), payments.TABLES) as open_session:
        yield open_session


@pytest.fixture
def shipping_db(database_url: Callable[[str], str]) -> Iterator[SessionFactory]:
    with database(database_url("shipping"), shipping.TABLES) as open_session:
        yield open_session
