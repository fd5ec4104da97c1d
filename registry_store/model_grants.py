"""ModelGrantService: a model's grants, owning group and restricted flag (each change needs MANAGE, audited)."""

from __future__ import annotations

import unicodedata

from sqlmodel import Session, col, select

from registry_store.audit import Actor
from registry_store.context import ServiceBase
from registry_store.entities import ModelGrant, ModelPermissions
from registry_store.errors import InvalidParameterError, NotFoundError
from registry_store.groups import group_name
from registry_store.model_access import MANAGE, PERMISSIONS, READ, load_access
from registry_store.tables import GroupRow, ModelGrantRow, RegisteredModelRow, UserRow
from registry_store.users import require_role

__all__ = ["PRINCIPAL_KINDS", "ModelGrantService"]

PRINCIPAL_KINDS = ("user", "group")


class ModelGrantService(ServiceBase):
    """Read and change who may use a model; readers may look, MANAGE holders (and admins) may change."""

    def model_permissions(self, actor: Actor, name: object) -> ModelPermissions:
        """The model's owning group, restricted flag and grants."""
        require_role(actor, "viewer", "read the registry")
        with self._db.read() as session:
            return self._permissions(session, self._model(session, name, actor=actor, need=READ))

    def set_grant(
        self, actor: Actor, *, name: object, principal_kind: object, principal: object, permission: object
    ) -> ModelPermissions:
        """Give a user or a group READ, EDIT or MANAGE on the model (replacing what it had)."""
        require_role(actor, "viewer", "change model grants")
        kind, level = _kind(principal_kind), _permission(permission)
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=MANAGE, lock=True)
            principal_id, principal_name = _principal(session, kind, principal)
            assert model.id is not None
            old = session.get(ModelGrantRow, (model.id, kind, principal_id))
            before = old.permission if old else None
            session.merge(ModelGrantRow(model_id=model.id, principal_kind=kind, principal_id=principal_id,
                                        permission=level))
            self._audit(session, actor, "set_model_grant", model.name, None,
                        before={"principal_kind": kind, "principal": principal_name, "permission": before},
                        after={"principal_kind": kind, "principal": principal_name, "permission": level})
            return self._permissions(session, model)

    def revoke_grant(
        self, actor: Actor, *, name: object, principal_kind: object, principal: object
    ) -> ModelPermissions:
        """Remove the grant of a user or a group on the model."""
        require_role(actor, "viewer", "change model grants")
        kind = _kind(principal_kind)
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=MANAGE, lock=True)
            principal_id, principal_name = _principal(session, kind, principal)
            old = session.get(ModelGrantRow, (model.id, kind, principal_id))
            if old is None:
                raise NotFoundError(f"Model '{model.name}' has no grant for {kind} '{principal_name}'.")
            session.delete(old)
            self._audit(session, actor, "revoke_model_grant", model.name, None,
                        before={"principal_kind": kind, "principal": principal_name, "permission": old.permission})
            return self._permissions(session, model)

    def set_owner(self, actor: Actor, *, name: object, group: object | None) -> ModelPermissions:
        """Make ``group`` the model's owning group (None: no owner)."""
        require_role(actor, "viewer", "change model ownership")
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=MANAGE, lock=True)
            owner = None if group is None else _principal(session, "group", group)
            before = load_access(session.connection(), model_id=model.id or 0, owner_group_id=model.owner_group_id,
                                 restricted=model.restricted).owner_group
            model.owner_group_id = None if owner is None else owner[0]
            session.add(model)
            self._audit(session, actor, "set_model_owner", model.name, None, before={"owner_group": before},
                        after={"owner_group": None if owner is None else owner[1]})
            return self._permissions(session, model)

    def set_restricted(self, actor: Actor, *, name: object, restricted: object) -> ModelPermissions:
        """Restrict the model to admins, its owning group and its grants, or open it to the roles' defaults again.

        Only an owned model can be restricted: one without owners would be lost to everyone but admins.
        """
        require_role(actor, "viewer", "restrict models")
        if not isinstance(restricted, bool):
            raise InvalidParameterError("Parameter 'restricted' must be true or false.")
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=MANAGE, lock=True)
            if restricted and model.owner_group_id is None:  # else only admins would ever see it again
                raise InvalidParameterError(
                    f"Model '{model.name}' has no owning group; set one first (calabi models set-owner), "
                    "then restrict it."
                )
            before = model.restricted
            model.restricted = restricted
            session.add(model)
            self._audit(session, actor, "set_model_restricted", model.name, None, before={"restricted": before},
                        after={"restricted": restricted})
            return self._permissions(session, model)

    @staticmethod
    def _permissions(session: Session, model: RegisteredModelRow) -> ModelPermissions:
        session.flush()
        access = load_access(session.connection(), model_id=model.id or 0, owner_group_id=model.owner_group_id,
                             restricted=model.restricted)
        grants = sorted(access.grants, key=lambda g: (g.principal_kind, g.principal))
        return ModelPermissions(
            name=model.name, owner_group=access.owner_group, restricted=access.restricted,
            grants=[ModelGrant(principal_kind=g.principal_kind, principal=g.principal, permission=g.permission)
                    for g in grants],
        )


def _kind(value: object) -> str:
    kind = str(value).strip().lower() if isinstance(value, str) else ""
    if kind not in PRINCIPAL_KINDS:
        raise InvalidParameterError(f"Invalid principal kind {value!r}: one of {', '.join(PRINCIPAL_KINDS)}.")
    return kind


def _permission(value: object) -> str:
    level = value.strip().upper() if isinstance(value, str) else ""
    if level not in PERMISSIONS:
        raise InvalidParameterError(f"Invalid permission {value!r}: one of {', '.join(PERMISSIONS)}.")
    return level


def _principal(session: Session, kind: str, name: object) -> tuple[int, str]:
    """The id and stored name of the user or group ``name``."""
    if kind == "group":
        normalised = group_name(name)
        group = session.exec(select(GroupRow).where(col(GroupRow.name) == normalised)).first()
        if group is None or group.id is None:
            raise NotFoundError(f"Group '{normalised}' does not exist.")
        return group.id, group.name
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError("User name must be a non-empty string.")
    normalised = unicodedata.normalize("NFKC", name).strip()
    user = session.exec(select(UserRow).where(col(UserRow.name) == normalised)).first()
    if user is None or user.id is None:
        raise NotFoundError(f"User '{normalised}' does not exist.")
    return user.id, user.name
