"""Approval holds: the ledger that caps what one customer holds for approval at once.

Revision ID: payments_0003
Revises: payments_0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "payments_0003"
down_revision: str | None = "payments_0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "payments_approval_hold",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("hold_key", sa.String(length=300), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("authorization_key", sa.String(length=300), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hold_key"),
    )
    op.create_index(
        "ix_payments_approval_hold_customer_id", "payments_approval_hold", ["customer_id"]
    )
    # One row per customer, locked while a hold is checked and recorded.
    op.create_table(
        "payments_customer_hold",
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
    )


def downgrade() -> None:
    op.drop_table("payments_customer_hold")
    op.drop_index("ix_payments_approval_hold_customer_id", table_name="payments_approval_hold")
    op.drop_table("payments_approval_hold")
