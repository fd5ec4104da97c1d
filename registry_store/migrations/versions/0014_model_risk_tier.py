"""model risk tiers, and what a promotion's snapshot recorded about its tier and the run's author

``registered_models.risk_tier`` (null: untiered) selects the policy's ``[tiers.<name>]`` overlay.
A promotion records the tier its policy snapshot used and the author of the candidate's training
run, whom separation of duties keeps from signing it off. Existing rows: untiered, no author known.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registered_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("risk_tier", sa.String(length=64), nullable=True))
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("risk_tier", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("run_author", sa.String(length=256), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_column("run_author")
        batch_op.drop_column("risk_tier")
    with op.batch_alter_table("registered_models", schema=None) as batch_op:
        batch_op.drop_column("risk_tier")
