"""Each database's migration history, on SQLite and PostgreSQL.

Whatever a database starts from (nothing; the schema the last release's `create_all` made,
with rows in it; the first revision, with rows in it), upgrading it ends at the head with
exactly the schema the models describe: Alembic's `compare_metadata` finds no difference.
Several processes starting at once on an empty database all succeed, one migrating.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from common import migrate
from common.db import make_engine
from migrations.support import target_metadata
from tests.support.stack import REPO_ROOT

HERE = Path(__file__).resolve().parent
PREVIOUS_RELEASE = HERE / "previous_release"
RACERS = 4


def schema_differences(engine: Engine, database: str) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, target_metadata(database)))


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return migrate.current_revision(connection)


def sample_row(table: sa.Table, n: int) -> dict[str, Any]:
    """A row any version of the table accepts: every column set, within its bounds."""
    row: dict[str, Any] = {}
    for column in table.columns:
        kind = column.type
        if isinstance(kind, sa.types.TypeDecorator):  # SQLModel's AutoString, UTCDateTime
            kind = kind.impl_instance
        if isinstance(kind, sa.String):
            row[column.name] = f"{table.name}-{column.name}-{n}"[-(kind.length or 40) :]
        elif isinstance(kind, sa.Boolean):
            row[column.name] = bool(n % 2)
        elif isinstance(kind, sa.Integer):
            row[column.name] = n
        elif isinstance(kind, sa.Float):
            row[column.name] = n / 4
        elif isinstance(kind, sa.DateTime):
            row[column.name] = datetime(2026, 11, 23, 12, n, tzinfo=UTC)
        else:
            raise AssertionError(f"no sample for {table.name}.{column.name} ({kind!r})")
    return row


def insert_rows(engine: Engine, count: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Rows in every table the database holds now, shaped as it is now (not as the models)."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    rows = {}
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            if table.name != "alembic_version":
                rows[table.name] = [sample_row(table, n) for n in range(count)]
                connection.execute(table.insert(), rows[table.name])
    return rows


def assert_rows_kept(engine: Engine, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Every row inserted before the upgrade is still there, in the columns it was given."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.connect() as connection:
        for name, inserted in rows.items():
            table = metadata.tables[name]
            columns = [table.c[column] for column in inserted[0]]
            found = [dict(r._mapping) for r in connection.execute(sa.select(*columns))]
            key = next(iter(table.primary_key.columns)).name
            want = sorted(map(_comparable, inserted), key=lambda r: r[key])
            assert sorted(map(_comparable, found), key=lambda r: r[key]) == want, name


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    # SQLite hands datetimes back without their zone; they were written in UTC.
    return {
        k: v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
        for k, v in row.items()
    }


def previous_release_schema(engine: Engine, database: str) -> None:
    """Build what the last release's `create_all` made (recorded in previous_release/)."""
    dialect = engine.dialect.name
    script = (PREVIOUS_RELEASE / f"{database}.{dialect}.sql").read_text()
    body = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    with engine.begin() as connection:
        for statement in body.split(";"):
            if statement.strip():
                connection.exec_driver_sql(statement)


@pytest.fixture
def engine_for(database_url: Callable[[str], str]) -> Iterator[Callable[[str], Engine]]:
    engines: list[Engine] = []

    def make(database: str) -> Engine:
        engines.append(make_engine(database_url(database)))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize("database", migrate.DATABASES)
def test_upgrading_an_empty_database_gives_the_models_schema(
    engine_for: Callable[[str], Engine], database: str
) -> None:
    engine = engine_for(database)
    assert schema_differences(engine, database), "an empty database differs from the models"

    migrate.upgrade(database, engine)

    assert revision_of(engine) == migrate.head_revision(database)
    assert schema_differences(engine, database) == []


@pytest.mark.parametrize("database", migrate.DATABASES)
def test_upgrading_the_previous_release_schema_keeps_its_rows_and_gives_the_models_schema(
    engine_for: Callable[[str], Engine], database: str
) -> None:
    engine = engine_for(database)
    previous_release_schema(engine, database)
    rows = insert_rows(engine)
    assert revision_of(engine) is None  # no version table: made before migrations

    migrate.upgrade(database, engine)

    assert revision_of(engine) == migrate.head_revision(database)
    assert schema_differences(engine, database) == []
    assert_rows_kept(engine, rows)


@pytest.mark.parametrize("database", migrate.DATABASES)
def test_upgrading_from_the_first_revision_with_rows_gives_the_models_schema(
    engine_for: Callable[[str], Engine], database: str
) -> None:
    engine = engine_for(database)
    first = f"{database}_0001"
    migrate.upgrade(database, engine, first)
    assert revision_of(engine) == first
    rows = insert_rows(engine)

    migrate.upgrade(database, engine)
    migrate.upgrade(database, engine)  # a second start finds nothing to do

    assert revision_of(engine) == migrate.head_revision(database)
    assert schema_differences(engine, database) == []
    assert_rows_kept(engine, rows)


def test_a_database_of_another_service_is_refused(engine_for: Callable[[str], Engine]) -> None:
    engine = engine_for("payments")
    migrate.upgrade("payments", engine)
    with pytest.raises(Exception, match=r"payments_\d{4}"):
        migrate.upgrade("inventory", engine)


def test_processes_starting_at_once_all_succeed_and_one_migrates(
    engine_for: Callable[[str], Engine], tmp_path: Path
) -> None:
    # One database stands for all: every one migrates through the same locked upgrade.
    database = "inventory"
    engine = engine_for(database)
    url = engine.url.render_as_string(hide_password=False)
    go = tmp_path / "go"
    racers = []
    for n in range(RACERS):
        ready = tmp_path / f"ready-{n}"
        command = [
            sys.executable,
            "-m",
            "tests.migrations.race",
            database,
            url,
            str(ready),
            str(go),
        ]
        racers.append((ready, subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE)))
    try:
        deadline = time.monotonic() + 60
        while not all(ready.exists() for ready, _ in racers):
            assert all(p.poll() is None for _, p in racers), "a racer died before the start"
            assert time.monotonic() < deadline, "racers not ready within 60 s"
            time.sleep(0.01)
        go.touch()
        outputs = [process.communicate(timeout=120)[1] for _, process in racers]
    finally:
        for _, process in racers:
            if process.poll() is None:
                process.kill()
                process.wait()

    codes = [process.returncode for _, process in racers]
    assert codes == [0] * RACERS, b"\n".join(outputs).decode(errors="replace")
    with engine.connect() as connection:
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert versions == [(migrate.head_revision(database),)]
    assert schema_differences(engine, database) == []


def test_nothing_outside_the_tests_creates_tables_itself() -> None:
    """Schemas come from migrations only: no `create_all` on a service or gateway database."""
    offenders = []
    for folder in ("activities", "api", "bench", "common", "observability", "workers", "workflows"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if path == REPO_ROOT / "common" / "db.py":
                continue  # where the tests' own `create_tables` helper lives
            text = path.read_text()
            if "create_all(" in text or "create_tables(" in text:
                offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == []
