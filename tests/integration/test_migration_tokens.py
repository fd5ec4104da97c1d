"""Migration 0015: existing tokens keep no expiry, existing web sessions get their token's user (and keep working),
and the downgrade drops what only OpenID Connect sign-ins made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config

from registry_store.schema_revision import MIGRATIONS


def test_0015_keeps_tokens_unexpiring_and_gives_sessions_their_user(tmp_path: Path) -> None:
    path = tmp_path / "calabi.db"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    command.upgrade(config, "0013")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO users (id, name, roles, creation_timestamp) VALUES (3, 'dana', 'engineer', 0)")
        db.execute("INSERT INTO tokens (id, user_id, token_hash, salt, creation_timestamp) VALUES (5, 3, 'h', '', 0)")
        db.execute("INSERT INTO web_sessions (id_hash, token_id, user_name, csrf_token, creation_timestamp, "
                   "expires_at) VALUES ('s', 5, 'dana', 'c', 0, 99)")

    command.upgrade(config, "0015")

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name, expires_at, revoked_at, last_used_at FROM tokens").fetchall() == [
            (None, None, None, None)]
        assert db.execute("SELECT id_hash, token_id, user_id FROM web_sessions").fetchall() == [("s", 5, 3)]
        db.execute("INSERT INTO users (id, name, roles, creation_timestamp, oidc_issuer, oidc_subject) "
                   "VALUES (4, 'olivia', 'viewer', 0, 'https://idp', 'sub-1')")
        db.execute("INSERT INTO web_sessions (id_hash, token_id, user_id, user_name, csrf_token, creation_timestamp, "
                   "expires_at) VALUES ('o', NULL, 4, 'olivia', 'c', 0, 99)")
        try:
            db.execute("INSERT INTO users (id, name, roles, creation_timestamp, oidc_issuer, oidc_subject) "
                       "VALUES (6, 'other', 'viewer', 0, 'https://idp', 'sub-1')")
            raise AssertionError("two users with one (issuer, subject)")
        except sqlite3.IntegrityError:
            pass

    command.downgrade(config, "0013")

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT id_hash, token_id FROM web_sessions").fetchall() == [("s", 5)]
