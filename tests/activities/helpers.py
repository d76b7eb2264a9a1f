"""Service databases for activity tests: real SQLite files, only the service's own tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from common.db import SessionFactory, create_tables, make_engine, session_factory


@contextmanager
def database(url: str, tables: Sequence[Any]) -> Iterator[SessionFactory]:
    engine = make_engine(url)
    create_tables(engine, list(tables))
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()
