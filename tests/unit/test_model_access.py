"""The per-model permission rule: roles as defaults, the owning group, grants, restricted models."""

from __future__ import annotations

import pytest

from registry_store.audit import Actor
from registry_store.model_access import EDIT, MANAGE, READ, Grant, ModelAccess, allows, effective_permission
from registry_store.users import expand_roles


def actor(*roles: str, groups: tuple[str, ...] = (), name: str = "ana") -> Actor:
    return Actor(name=name, roles=expand_roles(roles), groups=frozenset(groups))


OWNED = ModelAccess(owner_group="churn", restricted=False)
UNOWNED = ModelAccess(owner_group=None, restricted=False)
RESTRICTED = ModelAccess(owner_group="churn", restricted=True)


@pytest.mark.parametrize(("who", "access", "expected"), [
    # an org that never uses groups or grants: exactly the roles' behaviour
    (actor("viewer"), UNOWNED, READ),
    (actor("approver"), UNOWNED, READ),
    (actor("engineer"), UNOWNED, MANAGE),
    (actor("admin"), UNOWNED, MANAGE),
    # a model a team owns: its members manage it, other engineers edit, readers read
    (actor("engineer"), OWNED, EDIT),
    (actor("viewer", groups=("churn",)), OWNED, MANAGE),
    (actor("approver"), OWNED, READ),
    # restricted: the roles give nothing, only admins, the owners and grants count
    (actor("engineer"), RESTRICTED, None),
    (actor("approver"), RESTRICTED, None),
    (actor("engineer", groups=("fraud",)), RESTRICTED, None),
    (actor("engineer", groups=("churn",)), RESTRICTED, MANAGE),
    (actor("admin"), RESTRICTED, MANAGE),
], ids=lambda v: v if isinstance(v, str) or v is None else "")
def test_roles_owners_and_restriction(who: Actor, access: ModelAccess, expected: str | None) -> None:
    assert effective_permission(who, access) == expected


def test_grants_to_the_user_or_any_of_their_groups_count_and_the_strongest_wins() -> None:
    grants = (Grant("group", "fraud", READ), Grant("user", "ana", EDIT), Grant("user", "bob", MANAGE),
              Grant("group", "risk", MANAGE))
    restricted = ModelAccess(owner_group="churn", restricted=True, grants=grants)
    assert effective_permission(actor("viewer", groups=("fraud",), name="cy"), restricted) == READ
    assert effective_permission(actor("viewer", groups=("fraud",)), restricted) == EDIT
    assert effective_permission(actor("approver", groups=("fraud", "risk"), name="cy"), restricted) == MANAGE
    assert effective_permission(actor("engineer", name="dee"), restricted) is None  # bob's grant is not dee's
    # a grant adds to the role default on an unrestricted model, never takes away
    unrestricted = ModelAccess(owner_group="churn", restricted=False, grants=(Grant("user", "ana", READ),))
    assert effective_permission(actor("engineer"), unrestricted) == EDIT


def test_manage_includes_edit_includes_read() -> None:
    assert allows(MANAGE, READ) and allows(MANAGE, EDIT) and allows(EDIT, READ)
    assert not allows(READ, EDIT) and not allows(EDIT, MANAGE) and not allows(None, READ)
