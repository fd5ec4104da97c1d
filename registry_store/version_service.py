"""VersionService: read, describe, delete, list, search and tag model versions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select

from registry_store import search
from registry_store.audit import Actor
from registry_store.context import MAX_MODEL_RESULTS, MAX_VERSION_RESULTS, ServiceBase
from registry_store.entities import ModelVersion, Page
from registry_store.errors import NotFoundError
from registry_store.model_access import EDIT, MANAGE, READ, require_model_permission, version_model, visible_models
from registry_store.promotion_binding import check_governance_tag, refuse_if_promoting
from registry_store.stages import PRODUCTION, canonical_stage
from registry_store.tables import ModelVersionRow, ModelVersionTagRow
from registry_store.users import require_role
from registry_store.validation import parse_version, validate_description, validate_model_name, validate_tag
from registry_store.views import NAMED_VERSIONS, latest_per_stage, named_version, versions_views

__all__ = ["VersionService"]


class VersionService(ServiceBase):
    """Read, describe, delete, list, search and tag versions (registering is RegistrationService's)."""

    def get_model_version(self, actor: Actor, *, name: object, version: object) -> ModelVersion:
        """One version with its tags and aliases."""
        require_role(actor, "viewer", "read the registry")
        number = parse_version(version)
        model_name = validate_model_name(name)
        with self._db.read() as session:
            row = named_version(session, model_name, number=number)
            if row is None:
                # missing: the model or the version
                model = self._model_record(session.connection(), model_name, actor=actor, need=READ)
                raise NotFoundError(f"Model Version (name={model.name}, version={number}) not found")
            require_model_permission(session.connection(), actor, version_model(row), READ)
            return versions_views(session, [(row, row.model_name)], with_aliases=True)[0]

    def update_model_version(self, actor: Actor, *, name: object, version: object, description: object) -> ModelVersion:
        """Replace a version's description."""
        require_role(actor, "engineer", "edit model versions")
        number = parse_version(version)
        text = validate_description(description)
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=EDIT, lock=True)
            row = self._version(session, model, number)
            before = row.description
            row.description, row.last_updated_timestamp = text, self._clock()
            session.add(row)
            self._audit(
                session,
                actor,
                "update_model_version",
                model.name,
                number,
                before={"description": before},
                after={"description": text},
            )
            return versions_views(session, [(row, model.name)], with_aliases=True)[0]

    def delete_model_version(self, actor: Actor, *, name: object, version: object) -> None:
        """Delete a version, its aliases and its artifact; its number is never reused."""
        require_role(actor, "engineer", "delete model versions")
        number = parse_version(version)
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=MANAGE, lock=True)
            row = self._version(session, model, number)
            refuse_if_promoting(session, model.name, "delete", number)
            if row.current_stage == PRODUCTION:
                require_role(actor, "admin", "delete the Production version directly (break-glass)")
            protected = self._check_protected_removal(session, actor, model, row.id)
            location = row.storage_location
            model.last_updated_timestamp = self._clock()
            session.add(model)
            self._audit(
                session,
                actor,
                "delete_model_version",
                model.name,
                number,
                before={"stage": row.current_stage, "digest": row.digest, "protected_aliases": protected},
                after={"break_glass": bool(protected) or row.current_stage == PRODUCTION},
            )
            session.delete(row)
        self._delete_artifacts([location])

    def get_latest_versions(
        self, actor: Actor, *, name: object, stages: Sequence[object] | None = None
    ) -> list[ModelVersion]:
        """The highest version per stage (all four stages when none are given)."""
        require_role(actor, "viewer", "read the registry")
        wanted = [canonical_stage(s) for s in stages] if stages else None
        with self._db.read() as session:
            model = self._model_record(session.connection(), name, actor=actor, need=READ)
            rows = latest_per_stage(session, model.id, *([wanted] if wanted else []))
            return versions_views(session, [(r, model.name) for r in rows], with_aliases=True)

    def search_model_versions(
        self,
        actor: Actor,
        *,
        filter_string: str | None = None,
        max_results: object = 10_000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """Search versions with MLflow's filter grammar."""
        require_role(actor, "viewer", "read the registry")
        limit = search.validate_max_results(max_results, limit=MAX_VERSION_RESULTS)
        spec = search.model_version_search(filter_string, list(order_by or []))
        offset = search.decode_page_token(page_token)
        with self._db.read() as session:
            query = (NAMED_VERSIONS.where(visible_models(actor), *spec.conditions).order_by(*spec.order)
                     .offset(offset).limit(limit + 1))
            rows = session.connection().execute(query).all()
            items = versions_views(session, [(r, r.model_name) for r in rows[:limit]], with_aliases=False)
        return Page(items=items, next_page_token=search.next_page_token(len(rows), offset=offset, limit=limit))

    def list_model_versions(
        self, actor: Actor, *, name: object, max_results: object = 1000, page_token: str | None = None
    ) -> Page[ModelVersion]:
        """The versions of one model, newest first, with tags and aliases."""
        require_role(actor, "viewer", "read the registry")
        limit = search.validate_max_results(max_results, limit=MAX_MODEL_RESULTS)
        offset = search.decode_page_token(page_token)
        with self._db.read() as session:
            model = self._model(session, name, actor=actor, need=READ)
            rows = session.exec(
                select(ModelVersionRow)
                .where(col(ModelVersionRow.model_id) == model.id)
                .order_by(col(ModelVersionRow.version).desc())
                .offset(offset)
                .limit(limit + 1)
            ).all()
            items = versions_views(session, [(r, model.name) for r in rows[:limit]], with_aliases=True)
        return Page(items=items, next_page_token=search.next_page_token(len(rows), offset=offset, limit=limit))

    def get_download_uri(self, actor: Actor, *, name: object, version: object) -> str:
        """Where a loader fetches the version's artifact: the registry's own copy, served (and verified) by Calabi.

        ``mlflow-artifacts:/`` resolves against the loader's tracking URI, so the tracking URI and the
        token are all a loader needs.
        """
        mv = self.get_model_version(actor, name=name, version=version)
        return f"mlflow-artifacts:/calabi-registry/{mv.artifact_id}" if mv.artifact_id else mv.storage_location

    def set_model_version_tag(self, actor: Actor, *, name: object, version: object, key: object, value: object) -> None:
        """Set (or overwrite) a tag on a version."""
        require_role(actor, "engineer", "tag model versions")
        number = parse_version(version)
        tag_key, tag_value = validate_tag(key, value)
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=EDIT, lock=True)
            row = self._version(session, model, number)
            assert row.id is not None
            break_glass = check_governance_tag(session, actor, row.id, tag_key)
            old = session.get(ModelVersionTagRow, (row.id, tag_key))
            before = old.value if old else None
            session.merge(ModelVersionTagRow(version_id=row.id, key=tag_key, value=tag_value))
            self._audit(
                session,
                actor,
                "set_model_version_tag",
                model.name,
                number,
                before={tag_key: before},
                after={tag_key: tag_value, **({"break_glass": True} if break_glass else {})},
            )
            self._publish(session, "model_version_tag.set", model.name,
                          {"name": model.name, "version": str(number), "key": tag_key, "value": tag_value})
            if break_glass:
                self._publish(session, "break_glass.used", model.name, {"name": model.name, "version": str(number),
                                                                        "action": "set_model_version_tag",
                                                                        "key": tag_key, "actor": actor.name})

    def delete_model_version_tag(self, actor: Actor, *, name: object, version: object, key: object) -> None:
        """Delete a tag from a version (missing is a no-op)."""
        require_role(actor, "engineer", "tag model versions")
        number = parse_version(version)
        tag_key = validate_tag(key, "")[0]
        with self._db.write() as session:
            model = self._model(session, name, actor=actor, need=EDIT, lock=True)
            row = self._version(session, model, number)
            assert row.id is not None
            break_glass = check_governance_tag(session, actor, row.id, tag_key)
            old = session.get(ModelVersionTagRow, (row.id, tag_key))
            if old is None:
                return
            session.delete(old)
            self._audit(session, actor, "delete_model_version_tag", model.name, number, before={tag_key: old.value},
                        after={"break_glass": True} if break_glass else None)
            self._publish(session, "model_version_tag.deleted", model.name,
                          {"name": model.name, "version": str(number), "key": tag_key})
            if break_glass:
                self._publish(session, "break_glass.used", model.name, {"name": model.name, "version": str(number),
                                                                        "action": "delete_model_version_tag",
                                                                        "key": tag_key, "actor": actor.name})
