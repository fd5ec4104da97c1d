"""Web sessions in the database: hashed ids, current roles, expiry, sign-out, revocation (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_store.sessions import WebSessionStore
from tests.integration.helpers import DATABASES, Clock, Registry, build_registry, database_url


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def signed_in(reg: Registry, clock: Clock, *roles: str, name: str = "dana") -> tuple[WebSessionStore, str, str]:
    """A store, a user's token and a session opened with it."""
    _user, token = reg.services.users.create_user(reg.admin, name=name, roles=list(roles))
    store = WebSessionStore(reg.services.db, clock=clock, ttl_ms=60_000)
    session_id, _ = store.create(*reg.services.users.identify(token))
    return store, token, session_id


def test_a_session_resolves_to_the_user_with_a_csrf_token_and_only_its_hash_is_stored(reg: Registry) -> None:
    clock = Clock()
    store, _token, session_id = signed_in(reg, clock, "engineer")
    found = store.resolve(session_id, request_id="req-1")
    assert found is not None
    assert found.actor.name == "dana" and found.actor.roles == frozenset({"viewer", "engineer"})
    assert found.actor.request_id == "req-1"
    assert len(found.csrf_token) >= 40 and found.expires_at == clock.now + 60_000
    assert reg.scalar("SELECT count(*) FROM web_sessions WHERE id_hash = :h",
                      h=hashlib.sha256(session_id.encode()).hexdigest()) == 1
    assert reg.scalar("SELECT count(*) FROM web_sessions WHERE id_hash = :h", h=session_id) == 0
    assert store.resolve(session_id + "x") is None
    assert store.resolve("") is None and store.resolve(None) is None and store.resolve("a" * 5000) is None


def test_roles_are_read_on_every_request(reg: Registry) -> None:
    store, _token, session_id = signed_in(reg, Clock(), "viewer")
    reg.execute("UPDATE users SET roles = 'approver' WHERE name = 'dana'")
    found = store.resolve(session_id)
    assert found is not None and found.actor.roles == frozenset({"viewer", "approver"})


def test_sessions_expire_and_expired_ones_are_purged(reg: Registry) -> None:
    clock = Clock()
    store, token, session_id = signed_in(reg, clock, "viewer")
    clock.now += 59_999
    assert store.resolve(session_id) is not None
    clock.now += 1
    assert store.resolve(session_id) is None
    store.create(*reg.services.users.identify(token))  # a new sign-in clears expired rows
    assert reg.scalar("SELECT count(*) FROM web_sessions") == 1


def test_signing_out_and_revoking_the_token_end_the_session(reg: Registry) -> None:
    clock = Clock()
    store, token, first = signed_in(reg, clock, "engineer")
    second, _ = store.create(*reg.services.users.identify(token))
    store.end(first)
    assert store.resolve(first) is None and store.resolve(second) is not None
    store.end(None)
    store.end("unknown")
    reg.execute("DELETE FROM tokens WHERE id = :i", i=reg.services.users.identify(token)[1])
    assert store.resolve(second) is None
    assert reg.scalar("SELECT count(*) FROM web_sessions") == 0


def test_a_session_needs_a_known_token(reg: Registry) -> None:
    store = WebSessionStore(reg.services.db, clock=Clock())
    with pytest.raises(Exception, match="Invalid or revoked token"):
        store.create(reg.viewer, 10**9)
