"""Returns: each claim names the reservation it takes back of, not only the order ID.

Revision ID: inventory_0003
Revises: inventory_0002
Create Date: 2026-11-25

An order ID can come back once Temporal's retention has deleted the old order; its
reservation ID never does. Claims made before this revision keep a NULL reservation and
are matched by their order ID (activities/inventory.py, `_other_claims`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "inventory_0003"
down_revision: str | None = "inventory_0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("inventory_return_claim", sa.Column("reservation_id", sa.String(), nullable=True))
    op.create_index(
        "ix_inventory_return_claim_reservation_id", "inventory_return_claim", ["reservation_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_inventory_return_claim_reservation_id", table_name="inventory_return_claim")
    # SQLite drops a column only by rebuilding the table: batch mode does that.
    with op.batch_alter_table("inventory_return_claim") as batch:
        batch.drop_column("reservation_id")
