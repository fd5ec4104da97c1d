"""notifications get an event key: one outbox row per notification event, however often its activity is retried

Rows written before this migration have no key (NULL), which the unique index allows any number of.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 19:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_key", sa.String(length=80), nullable=True))
        batch_op.create_index("uq_notifications_event_key", ["event_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("uq_notifications_event_key")
        batch_op.drop_column("event_key")
