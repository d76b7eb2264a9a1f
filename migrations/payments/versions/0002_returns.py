"""Returns: partial refunds, one per return.

Revision ID: payments_0002
Revises: payments_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "payments_0002"
down_revision: str | None = "payments_0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "payments_refund",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("refund_key", sa.String(length=300), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("return_id", sa.String(length=200), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("refund_key"),
    )
    op.create_index("ix_payments_refund_order_id", "payments_refund", ["order_id"])
    op.create_index("ix_payments_refund_payment_id", "payments_refund", ["payment_id"])


def downgrade() -> None:
    op.drop_index("ix_payments_refund_order_id", table_name="payments_refund")
    op.drop_index("ix_payments_refund_payment_id", table_name="payments_refund")
    op.drop_table("payments_refund")
