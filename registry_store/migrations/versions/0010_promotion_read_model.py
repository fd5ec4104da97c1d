"""promotions keep the snapshot's sign-off rule and the status history: reads and decisions need no workflow query

Rows recorded before keep ``sign_off`` "null" (their mirrored approver columns still decide) and
an empty history (the audit log holds it).

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-06 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sign_off", sa.Text(), nullable=False, server_default="null"))
        batch_op.add_column(sa.Column("history", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_column("history")
        batch_op.drop_column("sign_off")
