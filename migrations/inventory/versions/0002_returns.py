"""Returns: the claim ledger of returns (what each return takes back of an order).

Revision ID: inventory_0002
Revises: inventory_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "inventory_0002"
down_revision: str | None = "inventory_0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "inventory_return_claim",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("claim_key", sa.String(length=300), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("return_id", sa.String(length=200), nullable=False),
        sa.Column("lines_json", sa.String(), nullable=False),
        sa.Column("refund_cents", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("claim_key"),
    )
    op.create_index("ix_inventory_return_claim_order_id", "inventory_return_claim", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_inventory_return_claim_order_id", table_name="inventory_return_claim")
    op.drop_table("inventory_return_claim")
