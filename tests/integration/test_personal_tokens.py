"""Personal access tokens (name, expiry, revocation, last use) and people signing in through OpenID Connect
(keyed by issuer and subject, roles and groups from the provider, audited), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_store.errors import InvalidParameterError, NotFoundError, PermissionDeniedError, UnauthenticatedError
from registry_store.external_identities import ExternalIdentityService
from registry_store.personal_tokens import DAY_MS, LAST_USED_EVERY_MS
from registry_store.server_key import KEY_FILE, ServerKey
from registry_store.sessions import WebSessionStore
from registry_store.users import UserService
from tests.integration.helpers import DATABASES, Clock, Registry, build_registry, database_url

ISSUER = "https://login.example.test"


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def test_a_personal_token_expires_is_revoked_and_records_its_last_use_hourly(reg: Registry, tmp_path: Path) -> None:
    clock = Clock()
    users = UserService(reg.services.db, clock=clock, key=ServerKey(tmp_path / "data" / KEY_FILE))
    _user, legacy = users.create_user(reg.admin, name="dana", roles=["engineer"])  # no expiry, like old tokens
    dana = users.authenticate(legacy)
    token, secret = users.tokens.create_token(dana, name="laptop", expires_in_days=2)
    assert token.expires_at == clock.now + 2 * DAY_MS and token.name == "laptop" and token.last_used_at is None
    assert users.authenticate(secret).name == "dana"
    used = clock.now
    clock.now += LAST_USED_EVERY_MS - 1
    users.authenticate(secret)
    assert [t.last_used_at for t in users.tokens.list_tokens(dana) if t.id == token.id] == [used]  # not rewritten
    clock.now += 1
    users.authenticate(secret)
    assert [t.last_used_at for t in users.tokens.list_tokens(dana) if t.id == token.id] == [clock.now]

    clock.now = token.expires_at or 0
    with pytest.raises(UnauthenticatedError, match="expired"):
        users.authenticate(secret)
    assert users.authenticate(legacy).name == "dana"  # a token without expiry keeps working

    other, other_secret = users.tokens.create_token(dana, name="ci")
    store = WebSessionStore(reg.services.db, clock=clock, ttl_ms=DAY_MS * 365 * 2)
    session_id, opened = store.create(*users.identify(other_secret))
    assert opened.expires_at == other.expires_at  # a session never outlives its token
    with pytest.raises(NotFoundError):  # another user's token is not theirs to revoke
        users.tokens.revoke_token(reg.viewer, other.id)
    revoked = users.tokens.revoke_token(dana, other.id)
    assert revoked.revoked_at == clock.now and users.tokens.revoke_token(dana, other.id) == revoked
    with pytest.raises(UnauthenticatedError, match="revoked"):
        users.authenticate(other_secret)
    assert store.resolve(session_id) is None
    with pytest.raises(UnauthenticatedError):
        store.create(dana, other.id)
    listed = users.tokens.list_tokens(dana)
    assert [t.name for t in listed] == ["ci", "laptop", "(unnamed)"]
    assert reg.rows("SELECT action FROM audit_events WHERE action IN ('create_token', 'revoke_token') "
                    "ORDER BY seq") == [("create_token",), ("create_token",), ("revoke_token",)]
    assert [t.name for t in users.tokens.list_tokens(reg.viewer)] == ["(unnamed)"]  # only their own
    for name, days in [("", 90), ("x" * 129, 90), ("bad\nname", 90), ("ok", 0), ("ok", 366), ("ok", "90"),
                       ("ok", True)]:
        with pytest.raises(InvalidParameterError):  # a name, and an expiry of at most a year
            users.tokens.create_token(dana, name=name, expires_in_days=days)


def test_a_provider_user_is_keyed_by_issuer_and_subject_with_roles_and_groups_from_the_provider(
    reg: Registry,
) -> None:
    identities: ExternalIdentityService = reg.services.identities
    reg.services.groups.create_group(reg.admin, name="data-science")
    mapped = ("churn-leads", "ml-eng")
    actor, user_id = identities.sign_in(issuer=ISSUER, subject="u-1", name="admin", roles=("approver",),
                                        groups=("churn-leads", "data-science", "unknown-idp-group"),
                                        mapped_groups=mapped)
    assert actor.name == "admin-2" and actor.roles == {"viewer", "approver"}  # never the local admin
    assert actor.groups == {"churn-leads", "data-science"}
    assert reg.services.users.list_users(reg.admin)[0].name == "admin"
    assert reg.rows("SELECT name, roles FROM users WHERE id = :i", i=user_id) == [("admin-2", "approver")]
    assert reg.scalar("SELECT count(*) FROM groups WHERE name = 'unknown-idp-group'") == 0
    assert reg.scalar("SELECT groups.name FROM groups JOIN users ON users.primary_group_id = groups.id "
                      "WHERE users.id = :i", i=user_id) == "churn-leads"

    again, same_id = identities.sign_in(issuer=ISSUER, subject="u-1", name="renamed", roles=("engineer",),
                                        groups=("ml-eng",), mapped_groups=mapped)
    assert (again.name, same_id) == ("admin-2", user_id) and again.roles == {"viewer", "engineer"}
    assert again.groups == {"ml-eng"}
    changes = reg.rows("SELECT action, before, after FROM audit_events WHERE subject = 'user:admin-2' ORDER BY seq")
    assert [c[0] for c in changes] == ["create_user", "sync_groups", "set_primary_group", "set_roles",
                                       "sync_groups", "set_primary_group"]
    other, other_id = identities.sign_in(issuer="https://other.example.test", subject="u-1", name="admin",
                                         roles=("viewer",))
    assert other_id != user_id and other.name == "admin-3" and other.groups == frozenset()

    events = reg.audit_count()
    with pytest.raises(PermissionDeniedError, match="none of the groups"):
        identities.sign_in(issuer=ISSUER, subject="u-1", name="admin", roles=(), groups=("nobody",))
    assert reg.audit_count() == events
    assert reg.rows("SELECT roles FROM users WHERE id = :i", i=user_id) == [("engineer",)]
    with pytest.raises(InvalidParameterError):
        identities.sign_in(issuer=ISSUER, subject="", name="x", roles=("viewer",))

    store = WebSessionStore(reg.services.db, clock=Clock())
    session_id, _ = store.create_for_user(again, user_id)
    resolved = store.resolve(session_id)
    assert resolved is not None and resolved.actor.name == "admin-2" and resolved.actor.groups == {"ml-eng"}
