"""Database plumbing: one engine per service database, SQLite or PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlmodel import Session, SQLModel, create_engine

SessionFactory = Callable[[], Session]


def make_engine(url: str) -> Engine:
    # hide_parameters: a database error's text (logged, and carried in a step's failure)
    # names the statement but never the bound values, an order's card token or address.
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Activities run in a thread pool, so the connection crosses threads; the busy timeout
    # makes concurrent writers queue instead of failing with "database is locked".
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
    )
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
    """Create only this service's tables, for tests' throwaway databases.

    Real databases get their schema from their migrations (common/migrate.py).
    """
    SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in tables])


def session_factory(engine: Engine) -> SessionFactory:
    def open_session() -> Session:
        return Session(engine, expire_on_commit=False)

    return open_session


# --- error classification: which database errors no retry can fix (poison pills) -----------

# The key a concurrent attempt already took: a retry finds its row and returns its result.
_UNIQUE_SQLSTATE = "23505"
_SQLITE_UNIQUE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})


def is_poison(err: BaseException) -> bool:
    """True when the database refused a value itself, so the same input can never succeed.

    A value out of range or of the wrong kind (`DataError`: an integer above 64 bits, a NUL
    character on PostgreSQL), a constraint other than uniqueness (`IntegrityError`: NOT
    NULL, CHECK, foreign key), or a value the driver cannot even bind (SQLite raises a bare
    `OverflowError`). A unique violation is not one: it means a concurrent attempt with the
    same key got there first, and a retry returns its result. Connection and lock errors
    are not either: they are what retries are for.
    """
    if isinstance(err, DataError):
        return True
    if isinstance(err, IntegrityError):
        return not _is_unique_violation(err)
    if isinstance(err, StatementError) and not isinstance(err, DBAPIError):
        # SQLAlchemy wraps a value the driver refused to bind in a bare StatementError.
        return isinstance(err.orig, OverflowError | ValueError | TypeError)
    return isinstance(err, OverflowError)


def _is_unique_violation(err: IntegrityError) -> bool:
    orig = err.orig
    if getattr(orig, "sqlstate", None) == _UNIQUE_SQLSTATE:  # psycopg 3
        return True
    if getattr(orig, "pgcode", None) == _UNIQUE_SQLSTATE:  # psycopg 2
        return True
    if getattr(orig, "sqlite_errorname", None) in _SQLITE_UNIQUE:
        return True
    return "UNIQUE constraint failed" in str(orig)  # sqlite3 without error names
