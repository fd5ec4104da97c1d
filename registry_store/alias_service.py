"""AliasService: set, delete and resolve aliases."""

from __future__ import annotations

from registry_store.audit import Actor
from registry_store.context import ServiceBase
from registry_store.entities import ModelVersion
from registry_store.errors import (
    AliasNotFoundError,
    InvalidParameterError,
)
from registry_store.model_access import EDIT, READ, require_model_permission, version_model
from registry_store.tables import RegisteredModelAliasRow
from registry_store.users import require_role
from registry_store.validation import (
    parse_version,
    validate_alias,
    validate_model_name,
)
from registry_store.views import named_version, versions_views

__all__ = ["AliasService"]


class AliasService(ServiceBase):
    """Set, delete and resolve aliases."""

    def set_alias(self, actor: Actor, *, name: object, alias: object, version: object) -> None:
        """Point ``alias`` at a version (protected aliases need admin: break-glass)."""
        require_role(actor, "engineer", "set aliases")
        alias_name = validate_alias(alias)
        number = parse_version(version)
        break_glass = self._check_protected_alias(actor, alias_name)
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=EDIT, lock=True)
            target = self._version(session, model, number)
            assert model.id is not None and target.id is not None
            old = session.get(RegisteredModelAliasRow, (model.id, alias_name))
            before = self._version_number(session, old.version_id) if old else None
            session.merge(RegisteredModelAliasRow(model_id=model.id, alias=alias_name, version_id=target.id))
            self._audit(
                session,
                actor,
                "set_alias",
                model.name,
                number,
                before={"alias": alias_name, "version": before},
                after={"alias": alias_name, "version": number, "break_glass": break_glass},
            )
            self._publish(session, "model_version_alias.created", model.name,
                          {"name": model.name, "alias": alias_name, "version": str(number)})
            if break_glass:
                self._publish(session, "break_glass.used", model.name, {"name": model.name, "version": str(number),
                                                                        "action": "set_alias", "alias": alias_name,
                                                                        "actor": actor.name})

    def delete_alias(self, actor: Actor, *, name: object, alias: object) -> None:
        """Remove an alias (missing is a no-op, as in MLflow)."""
        require_role(actor, "engineer", "delete aliases")
        if not isinstance(alias, str) or not alias:
            raise InvalidParameterError("Missing value for required parameter 'alias'.")
        break_glass = self._check_protected_alias(actor, alias)
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=EDIT, lock=True)
            old = session.get(RegisteredModelAliasRow, (model.id, alias))
            if old is None:
                return
            number = self._version_number(session, old.version_id)
            session.delete(old)
            self._audit(
                session,
                actor,
                "delete_alias",
                model.name,
                number,
                before={"alias": alias, "version": number},
                after={"break_glass": break_glass},
            )
            self._publish(session, "model_version_alias.deleted", model.name, {"name": model.name, "alias": alias})
            if break_glass:
                self._publish(session, "break_glass.used", model.name, {"name": model.name, "action": "delete_alias",
                                                                        "alias": alias, "actor": actor.name})

    def get_version_by_alias(self, actor: Actor, *, name: object, alias: object) -> ModelVersion:
        """The version an alias names; ``latest`` names the highest live version."""
        require_role(actor, "viewer", "read the registry")
        if not isinstance(alias, str) or not alias:
            raise InvalidParameterError("Missing value for required parameter 'alias'.")
        model_name = validate_model_name(name)
        with self._db.read() as session:
            row = named_version(session, model_name, alias=None if alias.lower() == "latest" else alias)
            if row is None:
                # a missing model is reported as such
                self._model_record(session.connection(), model_name, actor=actor, need=READ)
                raise AliasNotFoundError(alias)
            require_model_permission(session.connection(), actor, version_model(row), READ)
            return versions_views(session, [(row, row.model_name)], with_aliases=True)[0]
