"""What every database's `env.py` runs: its own tables as the target, under the lock.

Each database has its own history in `migrations/<database>/` (README, "Migrations").
Workers and the API apply it at start through `common.migrate.upgrade`, which hands the
locked connection in; the `alembic` command line (`alembic -c migrations/alembic.ini -n
inventory ...`) gets here without one and opens its own, from settings, under the same lock.
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from common.db import make_engine
from common.migrate import locked
from common.settings import get_settings


def database_tables(database: str) -> list[sa.Table]:
    """The tables the code of `database`'s owner expects, as its models define them now."""
    if database == "gateway":
        from api.keystore import TABLES as gateway_tables

        models = list(gateway_tables)
    else:
        from activities.faults import InjectedFault

        module = importlib.import_module(f"activities.{database}")
        models = [*module.TABLES, InjectedFault]
    return [model.__table__ for model in models]  # type: ignore[attr-defined]


def target_metadata(database: str) -> MetaData:
    """Only this database's tables: SQLModel's shared metadata holds every service's."""
    metadata = MetaData(naming_convention=SQLModel.metadata.naming_convention)
    for table in database_tables(database):
        table.to_metadata(metadata)
    return metadata


def existing_tables() -> set[str]:
    """Tables already present, for a first revision that adopts a pre-migration database."""
    if context.is_offline_mode():
        return set()  # `--sql` prints the DDL for an empty database
    return set(sa.inspect(op.get_bind()).get_table_names())


def run_migrations(database: str) -> None:
    config = context.config
    metadata = target_metadata(database)
    if context.is_offline_mode():  # `alembic upgrade --sql`: print the DDL, touch nothing
        url = config.get_main_option("sqlalchemy.url") or get_settings().database_url(database)
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _run(connection, metadata)
        return
    url = config.get_main_option("sqlalchemy.url") or get_settings().database_url(database)
    engine = make_engine(url)
    try:
        with locked(engine, database) as own:
            _run(own, metadata)
    finally:
        engine.dispose()


def _run(connection: Connection, metadata: MetaData) -> None:
    # The caller's transaction holds the lock; Alembic runs inside it and commits with it,
    # so a second process finds either nothing done or everything done, never half.
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite alters a table by copying it; batch mode does that for later revisions.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
