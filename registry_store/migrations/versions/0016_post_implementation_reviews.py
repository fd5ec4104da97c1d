"""post-implementation reviews: opened by an admin's break-glass move into Production

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "post_implementation_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("admin", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.BigInteger(), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("reminder_every_s", sa.Integer(), nullable=False),
        sa.Column("reviewer_role", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("escalated_at", sa.BigInteger(), nullable=True),
        sa.Column("completed_by", sa.String(length=256), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_post_implementation_reviews_model_name", "post_implementation_reviews", ["model_name"])
    op.create_index("ix_post_implementation_reviews_status", "post_implementation_reviews", ["status", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_post_implementation_reviews_status", table_name="post_implementation_reviews")
    op.drop_index("ix_post_implementation_reviews_model_name", table_name="post_implementation_reviews")
    op.drop_table("post_implementation_reviews")
