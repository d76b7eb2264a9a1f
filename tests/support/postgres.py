"""Moved to tooling/postgres.py (shared with the soak); this shim keeps old imports working."""

from __future__ import annotations

from tooling.postgres import USER, PostgresCluster, postgres_cluster

__all__ = ["USER", "PostgresCluster", "postgres_cluster"]
