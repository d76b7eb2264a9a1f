"""Moved to tooling/databases.py (shared with the soak); a shim for old imports."""

from __future__ import annotations

from tooling.databases import BACKENDS, DATABASES, database_env

__all__ = ["BACKENDS", "DATABASES", "database_env"]
