"""Which databases a test stack runs on: SQLite files in its data dir, or PostgreSQL.

`make up` keeps each service's database (and the gateway's) in a SQLite file; a URL per
database moves it to PostgreSQL. The end-to-end and fault tests and the soak run on both.
"""

from __future__ import annotations

from common import migrate
from tooling.postgres import PostgresCluster

BACKENDS = ("sqlite", "postgresql")
# Every database a stack's processes open: each business service's and the gateway's.
DATABASES = migrate.DATABASES


def database_env(backend: str, cluster: PostgresCluster | None = None) -> dict[str, str]:
    """The stack's environment for `backend`: nothing for SQLite, a fresh database per URL."""
    if backend == "sqlite":
        return {}
    assert backend == "postgresql" and cluster is not None, backend
    return {
        f"SAGAWORKS_{database.upper()}_DATABASE_URL": cluster.new_database(database)
        for database in DATABASES
    }
