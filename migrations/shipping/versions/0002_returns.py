"""Returns: return labels.

Revision ID: shipping_0002
Revises: shipping_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "shipping_0002"
down_revision: str | None = "shipping_0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "shipping_return_label",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("label_key", sa.String(length=300), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("return_id", sa.String(length=200), nullable=False),
        sa.Column("tracking_number", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("label_key"),
    )
    op.create_index("ix_shipping_return_label_order_id", "shipping_return_label", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_shipping_return_label_order_id", table_name="shipping_return_label")
    op.drop_table("shipping_return_label")
