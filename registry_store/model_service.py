"""ModelService: registered models (create, read, rename, describe, delete, search, tag)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

import policies
from policies.errors import PolicyError
from policies.loading import declared_tiers
from registry_store import search
from registry_store.audit import Actor
from registry_store.context import MAX_MODEL_RESULTS, ServiceBase
from registry_store.entities import Page, RegisteredModel
from registry_store.errors import (
    AlreadyExistsError,
    InvalidParameterError,
    UnavailableError,
)
from registry_store.model_access import EDIT, MANAGE, READ, primary_group_of, visible_models
from registry_store.promotion_binding import refuse_if_promoting
from registry_store.stages import PRODUCTION
from registry_store.tables import (
    ModelVersionRow,
    RegisteredModelAliasRow,
    RegisteredModelRow,
    RegisteredModelTagRow,
)
from registry_store.users import require_role
from registry_store.validation import (
    validate_description,
    validate_model_name,
    validate_tag,
)
from registry_store.views import model_view, models_views

__all__ = ["ModelService"]


class ModelService(ServiceBase):
    """Create, read, rename, describe, delete, search and tag registered models."""

    def create_registered_model(
        self,
        actor: Actor,
        *,
        name: object,
        description: object = None,
        tags: Sequence[tuple[object, object]] = (),
    ) -> RegisteredModel:
        """Create an empty registered model, owned by the creator's primary group (if they have one)."""
        require_role(actor, "engineer", "create registered models")
        name = validate_model_name(name)
        text = validate_description(description)
        valid_tags = dict(validate_tag(k, v) for k, v in tags)
        now = self._clock()
        try:
            with self._db.write() as session:
                owner = primary_group_of(session, actor)
                row = RegisteredModelRow(
                    name=name, description=text, creation_timestamp=now, last_updated_timestamp=now,
                    owner_group_id=owner.id if owner else None,
                )
                session.add(row)
                session.flush()
                assert row.id is not None
                for key, value in valid_tags.items():
                    session.add(RegisteredModelTagRow(model_id=row.id, key=key, value=value))
                self._audit(
                    session,
                    actor,
                    "create_registered_model",
                    name,
                    None,
                    after={"description": text, "tags": valid_tags, "owner_group": owner.name if owner else None},
                )
                self._publish(session, "registered_model.created", name,
                              {"name": name, "tags": valid_tags, "description": text})
                return model_view(session, row)
        except IntegrityError as exc:
            raise AlreadyExistsError(f"Registered Model (name={name}) already exists.") from exc

    def get_registered_model(self, actor: Actor, name: object) -> RegisteredModel:
        """A registered model with tags, aliases and the latest version per stage."""
        require_role(actor, "viewer", "read the registry")
        with self._db.read() as session:
            return model_view(session, self._model_record(session.connection(), name, actor=actor, need=READ))

    def rename_registered_model(self, actor: Actor, *, name: object, new_name: object) -> RegisteredModel:
        """Rename a model; versions, tags and aliases follow.

        Refused while a live promotion is bound to the model. A model with a Production version or a
        protected alias moves what ``models:/<name>/Production`` (``@alias``) loads: break-glass (admin),
        audited with what those URIs resolve to before and after.
        """
        require_role(actor, "engineer", "rename registered models")
        new = validate_model_name(new_name)
        try:
            with self._db.write() as session:
                row = self._model(session, name, actor=actor, need=MANAGE, lock=True)
                old = row.name
                refuse_if_promoting(session, old, "rename")
                moved = self._governed_uris(session, row)
                if moved:
                    require_role(actor, "admin", "rename a model with a Production version or a protected alias "
                                                 "(break-glass)")
                row.name, row.last_updated_timestamp = new, self._clock()
                session.add(row)
                session.flush()
                self._audit(
                    session, actor, "rename_registered_model", new, None,
                    before={"name": old, "resolves": {**_uris(old, moved), **_uris(new, dict.fromkeys(moved))}},
                    after={"name": new, "break_glass": bool(moved),
                           "resolves": {**_uris(old, dict.fromkeys(moved)), **_uris(new, moved)}},
                )
                return model_view(session, row)
        except IntegrityError as exc:
            raise AlreadyExistsError(f"Registered Model (name={new}) already exists.") from exc

    def update_registered_model(self, actor: Actor, *, name: object, description: object) -> RegisteredModel:
        """Replace a model's description."""
        require_role(actor, "engineer", "edit registered models")
        text = validate_description(description)
        with self._db.write() as session:
            row = self._model(session, name, actor=actor, need=EDIT, lock=True)
            before = row.description
            row.description, row.last_updated_timestamp = text, self._clock()
            session.add(row)
            self._audit(
                session,
                actor,
                "update_registered_model",
                row.name,
                None,
                before={"description": before},
                after={"description": text},
            )
            return model_view(session, row)

    def set_risk_tier(self, actor: Actor, *, name: object, tier: object) -> RegisteredModel:
        """Set a model's risk tier to one the policy declares, or clear it (``tier=None``).

        Needs MANAGE on the model (admins have it everywhere). The tier selects the policy's
        ``[tiers.<tier>]`` overlay for the model's next checks; a live promotion's sign-offs bind to the policy
        hash, so a change voids them at the next verify.
        """
        try:
            declared = declared_tiers(self.context.policy_dir or Path(policies.__file__).parent)
        except PolicyError as exc:
            raise UnavailableError(f"The promotion policy cannot be loaded: {exc}") from exc
        if tier is not None and (not isinstance(tier, str) or tier not in declared):
            names = ", ".join(sorted(declared)) or "none"
            raise InvalidParameterError(f"Unknown risk tier {tier!r}; the policy declares: {names}.")
        with self._db.write() as session:
            row = self._model(session, name, actor=actor, need=MANAGE, lock=True)
            before = row.risk_tier
            if before != tier:
                row.risk_tier, row.last_updated_timestamp = tier, self._clock()
                session.add(row)
                self._audit(session, actor, "set_risk_tier", row.name, None, before={"risk_tier": before},
                            after={"risk_tier": tier})
            return model_view(session, row)

    def delete_registered_model(self, actor: Actor, name: object) -> None:
        """Delete a model, all its versions and their artifacts (Production needs admin)."""
        require_role(actor, "engineer", "delete registered models")
        with self._db.write() as session:
            row = self._model(session, name, actor=actor, need=MANAGE, lock=True)
            refuse_if_promoting(session, row.name, "delete")
            versions = session.exec(select(ModelVersionRow).where(col(ModelVersionRow.model_id) == row.id)).all()
            in_production = any(v.current_stage == PRODUCTION for v in versions)
            if in_production:
                require_role(actor, "admin", "delete a model that has a Production version (break-glass)")
            protected = self._check_protected_removal(session, actor, row)
            locations = [v.storage_location for v in versions]
            self._audit(
                session,
                actor,
                "delete_registered_model",
                row.name,
                None,
                before={"versions": [v.version for v in versions], "protected_aliases": protected},
                after={"break_glass": bool(protected) or in_production},
            )
            session.delete(row)
        self._delete_artifacts(locations)

    def _governed_uris(self, session: Session, model: RegisteredModelRow) -> dict[str, dict[str, object]]:
        """What ``Production`` and each protected alias of ``model`` resolve to (URI suffix → version, digest)."""
        pointers = session.exec(
            select(RegisteredModelAliasRow.alias, ModelVersionRow)
            .join(ModelVersionRow, col(ModelVersionRow.id) == col(RegisteredModelAliasRow.version_id))
            .where(col(RegisteredModelAliasRow.model_id) == model.id)
        ).all()
        resolved = {f"@{alias}": row for alias, row in pointers if alias.lower() in self._protected_aliases}
        production = session.exec(select(ModelVersionRow).where(
            col(ModelVersionRow.model_id) == model.id, col(ModelVersionRow.current_stage) == PRODUCTION)).first()
        if production is not None:
            resolved["/Production"] = production
        return {suffix: {"version": v.version, "digest": v.digest} for suffix, v in sorted(resolved.items())}

    def search_registered_models(
        self,
        actor: Actor,
        *,
        filter_string: str | None = None,
        max_results: object = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        """Search models with MLflow's filter grammar; ``next_page_token`` only if more exist."""
        require_role(actor, "viewer", "read the registry")
        limit = search.validate_max_results(max_results, limit=MAX_MODEL_RESULTS)
        spec = search.registered_model_search(filter_string, list(order_by or []))
        offset = search.decode_page_token(page_token)
        with self._db.read() as session:
            rows = session.exec(
                select(RegisteredModelRow).where(visible_models(actor), *spec.conditions).order_by(*spec.order)
                .offset(offset).limit(limit + 1)
            ).all()
            items = models_views(session, rows[:limit])
        return Page(items=items, next_page_token=search.next_page_token(len(rows), offset=offset, limit=limit))

    def set_registered_model_tag(self, actor: Actor, *, name: object, key: object, value: object) -> None:
        """Set (or overwrite) a tag on a model."""
        require_role(actor, "engineer", "tag registered models")
        tag_key, tag_value = validate_tag(key, value)
        with self._db.write() as session:
            row = self._model(session, name, actor=actor, need=EDIT, lock=True)
            assert row.id is not None
            old = session.get(RegisteredModelTagRow, (row.id, tag_key))
            before = old.value if old else None
            session.merge(RegisteredModelTagRow(model_id=row.id, key=tag_key, value=tag_value))
            self._audit(
                session,
                actor,
                "set_registered_model_tag",
                row.name,
                None,
                before={tag_key: before},
                after={tag_key: tag_value},
            )

    def delete_registered_model_tag(self, actor: Actor, *, name: object, key: object) -> None:
        """Delete a tag from a model (a missing tag is a no-op, as in MLflow)."""
        require_role(actor, "engineer", "tag registered models")
        tag_key = validate_tag(key, "")[0]
        with self._db.write() as session:
            row = self._model(session, name, actor=actor, need=EDIT, lock=True)
            old = session.get(RegisteredModelTagRow, (row.id, tag_key))
            if old is None:
                return
            session.delete(old)
            self._audit(session, actor, "delete_registered_model_tag", row.name, None, before={tag_key: old.value})


def _uris(name: str, resolved: Mapping[str, Mapping[str, object] | None]) -> dict[str, Mapping[str, object] | None]:
    """``models:/<name><suffix>`` → what it loads (None: nothing)."""
    return {f"models:/{name}{suffix}": target for suffix, target in resolved.items()}
