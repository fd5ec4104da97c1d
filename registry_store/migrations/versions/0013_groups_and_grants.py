"""groups, model ownership, per-model grants and restricted models

``groups`` and ``group_members`` hold teams; a user may have a primary group (the owner of the
models they create), a model an owning group and a ``restricted`` flag; ``model_grants`` gives a
user or a group READ, EDIT or MANAGE on one model. Existing models have no owner, no grants and
stay unrestricted, so the global roles keep deciding exactly as before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "user_id"),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])
    op.create_table(
        "model_grants",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("principal_kind", sa.String(length=8), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("permission", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["registered_models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model_id", "principal_kind", "principal_id"),
    )
    op.create_index("ix_model_grants_principal", "model_grants", ["principal_kind", "principal_id"])
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("primary_group_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_users_primary_group_id", "groups", ["primary_group_id"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("registered_models") as batch_op:
        batch_op.add_column(sa.Column("owner_group_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("restricted", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_foreign_key(
            "fk_registered_models_owner_group_id", "groups", ["owner_group_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_index("ix_registered_models_owner_group_id", ["owner_group_id"])


def downgrade() -> None:
    with op.batch_alter_table("registered_models") as batch_op:
        batch_op.drop_index("ix_registered_models_owner_group_id")
        batch_op.drop_constraint("fk_registered_models_owner_group_id", type_="foreignkey")
        batch_op.drop_column("restricted")
        batch_op.drop_column("owner_group_id")
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_constraint("fk_users_primary_group_id", type_="foreignkey")
        batch_op.drop_column("primary_group_id")
    op.drop_index("ix_model_grants_principal", table_name="model_grants")
    op.drop_table("model_grants")
    op.drop_index("ix_group_members_user_id", table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("groups")
