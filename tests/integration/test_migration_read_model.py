"""Migration 0010: promotions recorded before keep working from the read model alone, and it downgrades."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlmodel import Session

from policies.models import SignOffRule
from registry_store.db import upgrade_database
from registry_store.entities import Promotion
from registry_store.promotion_rows import promotion_row, promotion_view, sign_off_rule
from registry_store.schema_revision import MIGRATIONS


def test_0010_rows_recorded_before_are_decided_by_their_mirrored_rule(tmp_path: Path) -> None:
    path, url = tmp_path / "calabi.db", f"sqlite:///{tmp_path / 'calabi.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0008")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO promotions (id, workflow_id, model_name, version, target_stage, kind, requester, "
                   "justification, status, live, checklist, approvals, required_approvals, approver_role, "
                   "exclude_requester, reminders_sent, message, policy_hash, creation_timestamp, "
                   "last_updated_timestamp) VALUES ('p1', 'w', 'churn', 2, 'Production', 'promotion', 'carol', 'j', "
                   "'awaiting_sign_off', 1, 'null', '[]', 2, 'risk', 0, 0, '', '', 0, 0)")

    upgrade_database(url)

    engine = create_engine(url)
    with Session(engine) as session:
        promotion: Promotion = promotion_view(promotion_row(session, "p1"))
    engine.dispose()
    assert (promotion.sign_off, promotion.history) == (None, [])
    assert sign_off_rule(promotion) == SignOffRule(approvers=2, role="risk", exclude_requester=False)
    command.downgrade(config, "0008")
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(promotions)")}
    assert "sign_off" not in columns and "history" not in columns
