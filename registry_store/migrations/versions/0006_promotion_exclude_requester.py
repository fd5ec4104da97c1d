"""promotions record whether their sign-off rule excludes the requester

The read model mirrors the snapshot's whole sign-off rule (role, count and now
``exclude_requester``), so "awaiting my sign-off" applies the same decision rule as the
service and the workflow. Existing rows keep the default policy's ``true``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("exclude_requester", sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_column("exclude_requester")
