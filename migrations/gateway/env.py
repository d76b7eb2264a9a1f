"""Alembic's entry point for the gateway database (migrations/support.py does the work)."""

from migrations.support import run_migrations

run_migrations("gateway")
