"""Alembic's entry point for the inventory database (migrations/support.py does the work)."""

from migrations.support import run_migrations

run_migrations("inventory")
