"""Database plumbing: one engine per service database, SQLite or PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

SessionFactory = Callable[[], Session]


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Activities run in a thread pool, so the connection crosses threads; the busy timeout
    # makes concurrent writers queue instead of failing with "database is locked".
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Take pysqlite's implicit transactions away so that _begin_immediate below decides.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # Every transaction takes the write lock up front. A deferred transaction that reads
    # and then writes fails at once with SQLITE_BUSY when another writer got in between;
    # an immediate one waits for the busy timeout instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_tables(engine: Engine, tables: list[Any]) -> None:
    """Create only this service's tables: services never share a schema."""
    SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in tables])


def session_factory(engine: Engine) -> SessionFactory:
    def open_session() -> Session:
        return Session(engine, expire_on_commit=False)

    return open_session
