"""audit events are append-only: the database refuses UPDATE and DELETE on them

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 02:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_MESSAGE = "audit events are append-only"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION calabi_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_MESSAGE}'; END $$"
        )
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{event.lower()} BEFORE {event} ON audit_events "
                "FOR EACH ROW EXECUTE FUNCTION calabi_audit_append_only()"
            )
        return
    for event in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_events_no_{event.lower()} BEFORE {event} ON audit_events "
            f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
        )


def downgrade() -> None:
    for event in ("update", "delete"):
        op.execute(f"DROP TRIGGER audit_events_no_{event} ON audit_events"
                   if op.get_bind().dialect.name == "postgresql" else f"DROP TRIGGER audit_events_no_{event}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION calabi_audit_append_only()")
