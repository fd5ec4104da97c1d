"""Who may do what to one model: READ, EDIT or MANAGE, from roles, the owning group and grants.

``effective_permission`` is the rule (pure); the rest reads what it needs and applies it:
``require_model_permission`` on one model (someone without READ is told the model does not
exist), ``visible_models`` as a SQL condition so searches filter in the database.

The rule: admins MANAGE every model, members of the owning group MANAGE it, grants to the user
or any of their groups give what they name. An unrestricted model also gives the global roles'
defaults (viewer and approver READ, engineer EDIT, and MANAGE while no group owns the model), so
an organisation that never uses groups or grants keeps the roles' behaviour exactly. A
restricted model counts only admins, the owning group and grants.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, exists, false, not_, or_, select, true
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from registry_store.audit import Actor
from registry_store.errors import NotFoundError, PermissionDeniedError
from registry_store.tables import GroupRow, ModelGrantRow, RegisteredModelRow, UserRow

__all__ = [
    "EDIT",
    "MANAGE",
    "PERMISSIONS",
    "READ",
    "Grant",
    "ModelAccess",
    "ModelFacts",
    "allows",
    "effective_permission",
    "model_not_found",
    "primary_group_of",
    "require_model_permission",
    "visible_model_name",
    "version_model",
    "visible_models",
]

READ, EDIT, MANAGE = "READ", "EDIT", "MANAGE"
PERMISSIONS = (READ, EDIT, MANAGE)
_RANK = {READ: 1, EDIT: 2, MANAGE: 3}


@dataclass(frozen=True)
class Grant:
    """A permission on one model for a user or a group, by name."""

    principal_kind: str  # "user" | "group"
    principal: str
    permission: str


@dataclass(frozen=True)
class ModelAccess:
    """What decides access to one model."""

    owner_group: str | None
    restricted: bool
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True)
class ModelFacts:
    """The columns of a model row that access depends on."""

    id: int
    name: str
    restricted: bool
    owner_group_id: int | None


def version_model(row: Any) -> ModelFacts:
    """The model facts of a row of ``views.NAMED_VERSIONS`` (version columns plus ``model_*`` columns)."""
    return ModelFacts(id=row.model_id, name=row.model_name, restricted=bool(row.model_restricted),
                      owner_group_id=row.model_owner_group_id)


def allows(held: str | None, need: str) -> bool:
    """Whether ``held`` (None: nothing) includes ``need`` (MANAGE ⊃ EDIT ⊃ READ)."""
    return held is not None and _RANK[held] >= _RANK[need]


def _strongest(permissions: Iterable[str | None]) -> str | None:
    return max((p for p in permissions if p is not None), key=_RANK.__getitem__, default=None)


def role_default(actor: Actor, *, owned: bool) -> str | None:
    """What the global roles give on an unrestricted model (``owned``: some group owns it)."""
    if "admin" in actor.roles:
        return MANAGE
    if "engineer" in actor.roles:
        return EDIT if owned else MANAGE
    return READ if actor.roles & {"viewer", "approver"} else None


def effective_permission(actor: Actor, access: ModelAccess) -> str | None:
    """The strongest permission ``actor`` holds on the model, None when they may not even see it."""
    if "admin" in actor.roles or (access.owner_group is not None and access.owner_group in actor.groups):
        return MANAGE
    granted = (
        g.permission for g in access.grants
        if (g.principal_kind == "user" and g.principal == actor.name)
        or (g.principal_kind == "group" and g.principal in actor.groups)
    )
    default = None if access.restricted else role_default(actor, owned=access.owner_group is not None)
    return _strongest([default, *granted])


def model_not_found(name: str) -> NotFoundError:
    """MLflow's error for a registered model that does not exist (also what a model one may not see answers)."""
    return NotFoundError(f"Registered Model with name={name} not found")


_OWNER_NAME = select(col(GroupRow.name)).where(col(GroupRow.id) == bindparam("group_id"))
_GRANTS = (
    select(col(ModelGrantRow.principal_kind), col(UserRow.name), col(GroupRow.name), col(ModelGrantRow.permission))
    .outerjoin(UserRow, and_(col(ModelGrantRow.principal_kind) == "user",
                             col(UserRow.id) == col(ModelGrantRow.principal_id)))
    .outerjoin(GroupRow, and_(col(ModelGrantRow.principal_kind) == "group",
                              col(GroupRow.id) == col(ModelGrantRow.principal_id)))
    .where(col(ModelGrantRow.model_id) == bindparam("model_id"))
)


def load_access(connection: Connection, *, model_id: int, owner_group_id: int | None, restricted: bool) -> ModelAccess:
    """The owning group's name and the grants of one model."""
    owner = None if owner_group_id is None else connection.execute(_OWNER_NAME, {"group_id": owner_group_id}).scalar()
    grants = tuple(
        Grant(kind, user if kind == "user" else group, permission)
        for kind, user, group, permission in connection.execute(_GRANTS, {"model_id": model_id})
        if (user if kind == "user" else group) is not None
    )
    return ModelAccess(owner_group=owner, restricted=bool(restricted), grants=grants)


def require_model_permission(connection: Connection, actor: Actor, model: Any, need: str) -> None:
    """Raise unless ``actor`` holds ``need`` on ``model`` (a row with ``id``, ``name``, ``restricted`` and
    ``owner_group_id``): not found without READ, ``PermissionDeniedError`` with READ but less than ``need``.

    Reads nothing when the roles decide (admins; an unrestricted model whose role default suffices).
    """
    name = model.name
    if "admin" in actor.roles:
        return
    if not model.restricted and allows(role_default(actor, owned=model.owner_group_id is not None), need):
        return
    access = load_access(connection, model_id=model.id, owner_group_id=model.owner_group_id,
                         restricted=model.restricted)
    held = effective_permission(actor, access)
    if held is None:
        raise model_not_found(name)
    if not allows(held, need):
        raise PermissionDeniedError(
            f"User '{actor.name}' may not do this on model '{name}': it needs {need} on the model "
            f"(has {held}). Ask the model's owners or an admin for a grant."
        )


def primary_group_of(session: Session, actor: Actor) -> GroupRow | None:
    """The primary group of the user ``actor`` names (None: none, or not a user)."""
    return session.exec(
        orm_select(GroupRow).join(UserRow, col(UserRow.primary_group_id) == col(GroupRow.id))
        .where(col(UserRow.name) == actor.name)
    ).first()


def _actor_group_ids(actor: Actor) -> Any:
    return select(col(GroupRow.id)).where(col(GroupRow.name).in_(sorted(actor.groups)))


def visible_models(actor: Actor) -> ColumnElement[bool]:
    """A condition on ``registered_models`` rows: the models ``actor`` may see (READ or more)."""
    if "admin" in actor.roles:
        return true()
    groups = _actor_group_ids(actor) if actor.groups else None
    user_id = select(col(UserRow.id)).where(col(UserRow.name) == actor.name).scalar_subquery()
    principal = and_(col(ModelGrantRow.principal_kind) == "user", col(ModelGrantRow.principal_id) == user_id)
    if groups is not None:
        principal = or_(principal, and_(col(ModelGrantRow.principal_kind) == "group",
                                        col(ModelGrantRow.principal_id).in_(groups)))
    granted = exists(select(col(ModelGrantRow.model_id)).where(
        col(ModelGrantRow.model_id) == col(RegisteredModelRow.id), principal))
    owned = col(RegisteredModelRow.owner_group_id).in_(groups) if groups is not None else false()
    return or_(not_(col(RegisteredModelRow.restricted)), owned, granted)


def visible_model_name(actor: Actor, model_name: Any) -> ColumnElement[bool]:
    """A condition on a column holding model names (promotions, audit events): not the name of a model
    ``actor`` may not see. Names of deleted models stay visible, as they were."""
    if "admin" in actor.roles:
        return true()
    return col(model_name).not_in(select(col(RegisteredModelRow.name)).where(not_(visible_models(actor))))
