"""The gateway schema before migrations: as `create_all` made it since d80a704.

Revision ID: gateway_0001
Revises:
Create Date: 2026-12-01

It equals what the gateway's `create_all` made until now, so a database it made is adopted
as it is: each table is created only when absent (such a database has no version table yet).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.support import existing_tables

revision: str = "gateway_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ["api_keys", "browser_sessions", "gateway_secrets"]


def upgrade() -> None:
    existing = existing_tables()
    if "api_keys" not in existing:
        op.create_table(
            "api_keys",
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("secret_sha256", sa.String(), nullable=False),
            sa.Column("role", sa.String(), nullable=False),
            sa.Column("customer_id", sa.String(), nullable=True),
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("key_id"),
        )
    if "browser_sessions" not in existing:
        op.create_table(
            "browser_sessions",
            sa.Column("session_sha256", sa.String(), nullable=False),
            sa.Column("key_id", sa.String(), nullable=False),
            sa.Column("csrf_token", sa.String(), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("session_sha256"),
        )
        op.create_index("ix_browser_sessions_key_id", "browser_sessions", ["key_id"])
    if "gateway_secrets" not in existing:
        op.create_table(
            "gateway_secrets",
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("value", sa.String(), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
