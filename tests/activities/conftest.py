"""Each service's activities over its own fresh SQLite file, called directly (no worker)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from activities import inventory, payments, shipping
from common.db import SessionFactory
from tests.activities.helpers import database


@pytest.fixture
def inventory_db(sqlite_url: Callable[[str], str]) -> Iterator[SessionFactory]:
    with database(sqlite_url("inventory"), inventory.TABLES) as open_session:
        inventory.seed_catalogue(open_session)
        yield open_session


@pytest.fixture
def payments_db(sqlite_url: Callable[[str], str]) -> Iterator[SessionFactory]:
    with database(sqlite_url("payments"), payments.TABLES) as open_session:
        yield open_session


@pytest.fixture
def shipping_db(sqlite_url: Callable[[str], str]) -> Iterator[SessionFactory]:
    with database(sqlite_url("shipping"), shipping.TABLES) as open_session:
        yield open_session
