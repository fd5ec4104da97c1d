"""how a promotion's run author is known: verified by Calabi, claimed by the client, or the registering user

``promotions.run_author_source`` (``policies.run_authorship.AuthorSource``) is recorded with the run's
author at each evidence snapshot. Existing rows: "" (not known).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 22:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_author_source", sa.String(length=16), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_column("run_author_source")
