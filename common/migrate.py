"""Schema migrations: each database's Alembic history, applied under a lock.

Every service database and the gateway's has its own history in `migrations/<database>/`.
Workers (and the API for the gateway's) bring their database to the head at start;
`make migrate` (`python -m common.migrate`) does it for all of them ahead of a deploy.

Several processes of one service may start at once, so the whole upgrade runs in one
transaction that first takes a lock: SQLite's write lock (`BEGIN IMMEDIATE`, see
common/db.py), PostgreSQL's `pg_advisory_xact_lock` on a key per database. The first
process migrates; the others wait, then find the head already there and do nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from common.db import make_engine
from common.settings import SERVICES, get_settings

log = logging.getLogger("sagaworks.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
DATABASES = (*SERVICES, "gateway")


def alembic_config(database: str) -> Config:
    if database not in DATABASES:
        raise ValueError(f"no migration history for {database!r}; one of {DATABASES}")
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"), ini_section=database)
    config.set_main_option("script_location", str(MIGRATIONS_DIR / database))
    return config


def head_revision(database: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(database)).get_current_head()
    assert head is not None, f"{database} has no revisions"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def lock_key(database: str) -> int:
    """A stable signed 64-bit advisory-lock key per database."""
    digest = hashlib.sha256(f"sagaworks-migrate:{database}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def locked(engine: Engine, database: str) -> Iterator[Connection]:
    """One transaction that holds the migration lock until it commits."""
    with engine.begin() as connection:  # SQLite: BEGIN IMMEDIATE takes the write lock
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(database)}
            )
        yield connection


def upgrade(database: str, engine: Engine, revision: str = "head") -> None:
    """Bring `database` (on `engine`) to `revision`, waiting for any other process doing so."""
    # Alembic's INFO lines ("Context impl SQLiteImpl", "non-transactional DDL": untrue in
    # the transaction we hand it) would open every worker's log; one line of ours says it.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    config = alembic_config(database)
    if revision == "head":
        with engine.connect() as connection:
            if current_revision(connection) == head_revision(database):
                return  # the common case at start: nothing to do, no lock to queue for
    with locked(engine, database) as connection:
        before = current_revision(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        after = current_revision(connection)
    if after != before:
        log.info("%s database migrated from %s to %s", database, before or "empty", after)


def require_tables(engine: Engine, tables: Sequence[str]) -> None:
    """Fail at start, clearly, when the migrated schema lacks a table the code uses."""
    missing = sorted(set(tables) - set(inspect(engine).get_table_names()))
    if missing:
        raise RuntimeError(
            f"the database lacks table(s) {', '.join(missing)} after migrating: "
            "the code's models need a new revision in migrations/"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m common.migrate", description="Apply each database's migrations."
    )
    parser.add_argument("databases", nargs="*", help=f"default: all of {', '.join(DATABASES)}")
    parser.add_argument("--revision", default="head", help="default: head")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.databases) - set(DATABASES))
    if unknown:
        parser.error(f"unknown database(s) {', '.join(unknown)}; one of {', '.join(DATABASES)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()
    for database in args.databases or DATABASES:
        url = settings.database_url(database)
        engine = make_engine(url)
        try:
            upgrade(database, engine, args.revision)
            with engine.connect() as connection:
                print(f"{database}: {current_revision(connection)} ({engine.url!r})")
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
