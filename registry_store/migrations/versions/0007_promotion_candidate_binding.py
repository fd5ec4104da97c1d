"""promotions record the candidate's identity and the evidence its checks ran on

``candidate_id`` (the version row) and ``candidate_digest`` pin the exact candidate: a
model deleted and recreated under the same name has other rows. ``evidence_hash`` and
``evidence`` (per-part hashes and the tag keys the policy reads) are what the sign-offs
bind to; apply recomputes them in its transaction. Existing rows get their candidate's
current row and digest.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("candidate_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("candidate_digest", sa.String(80), server_default="", nullable=False))
        batch_op.add_column(sa.Column("evidence_hash", sa.String(64), server_default="", nullable=False))
        batch_op.add_column(sa.Column("evidence", sa.Text(), server_default="{}", nullable=False))
    candidate = (
        "FROM model_versions v JOIN registered_models m ON m.id = v.model_id "
        "WHERE m.name = promotions.model_name AND v.version = promotions.version"
    )
    op.execute(
        f"UPDATE promotions SET candidate_id = (SELECT v.id {candidate}), "
        f"candidate_digest = COALESCE((SELECT v.digest {candidate}), '')"
    )


def downgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        for column in ("evidence", "evidence_hash", "candidate_digest", "candidate_id"):
            batch_op.drop_column(column)
