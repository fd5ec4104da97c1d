"""Migration 0007 binds the promotions already recorded to their candidate's row and digest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config

from registry_store.db import upgrade_database
from registry_store.schema_revision import MIGRATIONS


def test_0007_backfills_the_candidate_of_existing_promotions(tmp_path: Path) -> None:
    path = tmp_path / "calabi.db"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    command.upgrade(config, "0006")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO registered_models (id, name, creation_timestamp, last_updated_timestamp) "
                   "VALUES (7, 'churn', 0, 0)")
        db.execute("INSERT INTO model_versions (id, model_id, version, current_stage, source, storage_location, "
                   "digest, status, creation_timestamp, last_updated_timestamp) "
                   "VALUES (42, 7, 2, 'Staging', 's', 'l', 'sha256:abc', 'READY', 0, 0)")
        for pid, version in (("p-live", 2), ("p-gone", 9)):
            db.execute("INSERT INTO promotions (id, workflow_id, model_name, version, target_stage, kind, requester, "
                       "justification, status, live, checklist, approvals, required_approvals, approver_role, "
                       "reminders_sent, message, policy_hash, creation_timestamp, last_updated_timestamp) "
                       "VALUES (?, ?, 'churn', ?, 'Production', 'promotion', 'carol', 'j', 'awaiting_sign_off', "
                       "0, 'null', '[]', 1, 'approver', 0, '', '', 0, 0)", (pid, pid, version))

    upgrade_database(f"sqlite:///{path}")

    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, candidate_id, candidate_digest, evidence_hash, evidence FROM promotions "
                          "ORDER BY id").fetchall()
    assert rows == [("p-gone", None, "", "", "{}"), ("p-live", 42, "sha256:abc", "", "{}")]
