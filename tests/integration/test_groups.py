"""Groups and grants at the service level (SQLite, PostgreSQL): members, primary groups, the groups an actor
carries, ownership of new models, and promotions of a restricted model hidden from approvers without READ."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_store.audit import Actor
from registry_store.errors import (
    AlreadyExistsError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
    RegistryError,
)
from registry_store.sessions import WebSessionStore
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url


@pytest.fixture(params=DATABASES)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    registry = build_registry(tmp_path, database_url(request, tmp_path))
    yield registry
    registry.services.close()


def _promotions_of_a_restricted_model_need_read(reg: Registry, owner: Actor) -> None:
    """An approver without READ finds no promotion of a restricted model, cannot sign it off, sees no audit."""
    svc = reg.svc
    svc.registration.create_model_version(owner, name="team-model", source=str(reg.artifact()))
    opened = svc.promotions.open_promotion(owner, model="team-model", version=1, target_stage="Staging",
                                           justification="ready")
    svc.grants.set_restricted(owner, name="team-model", restricted=True)
    approver = reg.approver
    assert [p.id for p in svc.promotions.list_promotions(approver).items] == []
    for attempt in (lambda: svc.promotions.get_promotion(approver, opened.id),
                    lambda: svc.promotions.authorize_decision(approver, opened.id, "sign_off")):
        with pytest.raises(NotFoundError, match=f"Promotion {opened.id} not found"):
            attempt()
    assert svc.audit.list_audit_events(approver, model_name="team-model") == []
    svc.grants.set_grant(owner, name="team-model", principal_kind="user", principal=approver.name, permission="READ")
    assert [p.id for p in svc.promotions.list_promotions(approver).items] == [opened.id]
    with pytest.raises(RegistryError) as refused:  # now refused for what the promotion is, not hidden
        svc.promotions.authorize_decision(approver, opened.id, "sign_off")
    assert not isinstance(refused.value, NotFoundError)
    svc.grants.revoke_grant(owner, name="team-model", principal_kind="user", principal=approver.name)


def test_groups_reach_the_actor_own_new_models_and_take_their_grants_with_them(reg: Registry) -> None:
    groups, users = reg.services.groups, reg.services.users
    _user, token = users.create_user(reg.admin, name="ana", roles=["engineer"])
    groups.create_group(reg.admin, name="Churn-Team", description="churn models")
    groups.create_group(reg.admin, name="model-risk")
    with pytest.raises(AlreadyExistsError):  # NFKC and case folding make it the same name
        groups.create_group(reg.admin, name="ＣＨＵＲＮ-team")
    with pytest.raises(InvalidParameterError):
        groups.create_group(reg.admin, name="bad\x1fname")
    with pytest.raises(PermissionDeniedError):
        groups.create_group(reg.engineer, name="mine")
    groups.add_member(reg.admin, group="Churn-Team", user="ana")
    groups.set_primary_group(reg.admin, user="ana", group="model-risk")  # joins it too
    actor, token_id = users.identify(token)
    assert actor.groups == {"Churn-Team", "model-risk"}
    sessions = WebSessionStore(reg.services.db, clock=lambda: 1_800_000_000_000)
    session_id, _ = sessions.create(actor, token_id)
    resolved = sessions.resolve(session_id)
    assert resolved is not None and resolved.actor.groups == {"Churn-Team", "model-risk"}
    assert reg.engineer.groups == frozenset()
    assert {u.name: u.primary_group for u in users.list_users(reg.admin)}["ana"] == "model-risk"
    assert groups.get_group(reg.admin, "Churn-Team").members == ["ana"]

    assert reg.svc.models.create_registered_model(actor, name="team-model").owner_group == "model-risk"
    reg.svc.grants.set_grant(actor, name="team-model", principal_kind="group", principal="Churn-Team",
                             permission="read")
    reg.svc.models.create_registered_model(reg.engineer, name="nobodys")  # no primary group: no owner
    with pytest.raises(InvalidParameterError):  # restricted without owners: lost to all but admins
        reg.svc.grants.set_restricted(reg.engineer, name="nobodys", restricted=True)
    _promotions_of_a_restricted_model_need_read(reg, actor)

    groups.remove_member(reg.admin, group="model-risk", user="ana")  # no longer her primary group either
    assert {u.name: u.primary_group for u in users.list_users(reg.admin)}["ana"] is None
    with pytest.raises(NotFoundError):
        groups.remove_member(reg.admin, group="model-risk", user="ana")
    groups.delete_group(reg.admin, "Churn-Team")
    assert users.authenticate(token).groups == frozenset()
    assert reg.svc.grants.model_permissions(reg.admin, "team-model").grants == []  # its grants went with it
    assert [g.name for g in groups.list_groups(reg.admin)] == ["model-risk"]
    actions = [row[0] for row in reg.rows("SELECT action FROM audit_events ORDER BY seq")]
    assert [a for a in actions if "group" in a] == ["create_group", "create_group", "add_group_member",
                                                    "set_primary_group", "remove_group_member", "delete_group"]
    assert reg.services.registry.audit.verify_audit_chain(reg.admin).ok
