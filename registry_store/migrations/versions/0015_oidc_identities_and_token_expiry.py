"""OpenID Connect identities on users; personal access tokens get a name, an expiry, revocation and last use;
web sessions name their user (an OpenID Connect sign-in opens one without a token)

Existing tokens keep no expiry (NULL: never) and keep working. Existing sessions get the user of their token.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 22:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("oidc_issuer", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("oidc_subject", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint("uq_users_oidc_identity", ["oidc_issuer", "oidc_subject"])
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
    op.execute("UPDATE web_sessions SET user_id = (SELECT tokens.user_id FROM tokens "
               "WHERE tokens.id = web_sessions.token_id)")
    op.execute("DELETE FROM web_sessions WHERE user_id IS NULL")
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("token_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key("fk_web_sessions_user_id_users", "users", ["user_id"], ["id"],
                                    ondelete="CASCADE")
        batch_op.create_index(batch_op.f("ix_web_sessions_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    op.execute("DELETE FROM web_sessions WHERE token_id IS NULL")
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_sessions_user_id"))
        batch_op.drop_constraint("fk_web_sessions_user_id_users", type_="foreignkey")
        batch_op.alter_column("token_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("user_id")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("name")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_oidc_identity", type_="unique")
        batch_op.drop_column("oidc_subject")
        batch_op.drop_column("oidc_issuer")
