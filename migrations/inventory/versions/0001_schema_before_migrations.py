"""The inventory schema of the last release before migrations (8857ef3).

Revision ID: inventory_0001
Revises:
Create Date: 2026-11-23

It equals what that release's `create_all` made, so a database it made is adopted as it
is: each table is created only when absent (such a database has no version table yet).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.support import existing_tables

revision: str = "inventory_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

TABLES = ["inventory_product", "inventory_reservation", "idempotency_record", "injected_fault"]


def upgrade() -> None:
    existing = existing_tables()
    if "inventory_product" not in existing:
        op.create_table(
            "inventory_product",
            sa.Column("sku", sa.String(length=64), nullable=False),
            sa.Column("name", sa.String(), nullable=False),
            sa.Column("price_cents", sa.Integer(), nullable=False),
            sa.Column("stock", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("sku"),
        )
    if "inventory_reservation" not in existing:
        op.create_table(
            "inventory_reservation",
            sa.Column("id", sa.String(), nullable=False),
            sa.Column("reservation_key", sa.String(length=300), nullable=False),
            sa.Column("order_id", sa.String(length=200), nullable=False),
            sa.Column("lines_json", sa.String(), nullable=False),
            sa.Column("total_cents", sa.Integer(), nullable=False),
            sa.Column("status", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("reservation_key"),
        )
        op.create_index("ix_inventory_reservation_order_id", "inventory_reservation", ["order_id"])
    if "idempotency_record" not in existing:
        op.create_table(
            "idempotency_record",
            sa.Column("key", sa.String(length=300), nullable=False),
            sa.Column("operation", sa.String(length=64), nullable=False),
            sa.Column("result_json", sa.String(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("key"),
        )
    if "injected_fault" not in existing:
        op.create_table(
            "injected_fault",
            sa.Column("service", sa.String(length=64), nullable=False),
            sa.Column("error_ratio", sa.Float(), nullable=False),
            sa.Column("latency_ms", sa.Integer(), nullable=False),
            sa.Column("activity", sa.String(length=64), nullable=True),
            sa.Column("non_retryable", sa.Boolean(), nullable=False),
            sa.Column("injected_errors", sa.Integer(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("service"),
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
