"""artifact ids and per-file digests: serve registry copies through the tracking gateway

``artifact_id`` names a version's copy in the ``mlflow-artifacts`` namespace Calabi serves
(the last path segment of ``storage_location``); ``file_digests`` is the JSON manifest of
per-file sha256 digests checked on every download (empty for versions registered before).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("artifact_id", sa.String(length=64), server_default="", nullable=False))
        batch_op.add_column(sa.Column("file_digests", sa.Text(), server_default="", nullable=False))
    versions = sa.table(
        "model_versions",
        sa.column("id", sa.Integer()),
        sa.column("storage_location", sa.Text()),
        sa.column("artifact_id", sa.String()),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(versions.c.id, versions.c.storage_location)).all()
    for row_id, location in rows:
        artifact_id = location.rstrip("/").rsplit("/", 1)[-1]
        connection.execute(versions.update().where(versions.c.id == row_id).values(artifact_id=artifact_id))
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.create_index("ix_model_versions_artifact_id", ["artifact_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_model_versions_artifact_id")
        batch_op.drop_column("file_digests")
        batch_op.drop_column("artifact_id")
