"""RegistryService: every rule of the registry, each mutation in one audited transaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from registry_store import search
from registry_store.artifacts import ArtifactStore, SourceFetcher
from registry_store.audit import Actor, append_event, event_view, verify_chain
from registry_store.db import Database
from registry_store.entities import AuditEvent, AuditVerification, ModelVersion, Page, RegisteredModel
from registry_store.errors import (
    AliasNotFoundError,
    AlreadyExistsError,
    InvalidParameterError,
    NotFoundError,
)
from registry_store.registration import stage_artifact
from registry_store.stages import ARCHIVED, PRODUCTION, STAGING, canonical_stage
from registry_store.tables import (
    AuditEventRow,
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelAliasRow,
    RegisteredModelRow,
    RegisteredModelTagRow,
)
from registry_store.users import require_role
from registry_store.validation import (
    parse_version,
    validate_alias,
    validate_description,
    validate_model_name,
    validate_run_id,
    validate_source,
    validate_tag,
)
from registry_store.views import latest_per_stage, model_view, models_views, versions_views

__all__ = ["RegistryService"]

log = logging.getLogger(__name__)
MAX_MODEL_RESULTS = 1000
MAX_VERSION_RESULTS = 200_000


class RegistryService:
    """The registry's single service layer, shared by the API, the CLI and the activities."""

    def __init__(
        self,
        db: Database,
        *,
        artifacts: ArtifactStore,
        fetcher: SourceFetcher,
        clock: Callable[[], int],
        protected_aliases: Sequence[str] = ("champion",),
    ) -> None:
        self._db = db
        self._artifacts = artifacts
        self._fetcher = fetcher
        self._clock = clock
        self._protected_aliases = frozenset(protected_aliases)

    # ----------------------------------------------------------------- registered models

    def create_registered_model(
        self,
        actor: Actor,
        *,
        name: object,
        description: object = None,
        tags: Sequence[tuple[object, object]] = (),
    ) -> RegisteredModel:
        """Create an empty registered model."""
        require_role(actor, "engineer", "create registered models")
        name = validate_model_name(name)
        text = validate_description(description)
        valid_tags = dict(validate_tag(k, v) for k, v in tags)
        now = self._clock()
        try:
            with self._db.write() as session:
                row = RegisteredModelRow(
                    name=name, description=text, creation_timestamp=now, last_updated_timestamp=now
                )
                session.add(row)
                session.flush()
                assert row.id is not None
                for key, value in valid_tags.items():
                    session.add(RegisteredModelTagRow(model_id=row.id, key=key, value=value))
                self._audit(session, actor, "create_registered_model", name, None,
                            after={"description": text, "tags": valid_tags})
                return model_view(session, row)
        except IntegrityError as exc:
            raise AlreadyExistsError(f"Registered Model (name={name}) already exists.") from exc

    def get_registered_model(self, actor: Actor, name: object) -> RegisteredModel:
        """A registered model with tags, aliases and the latest version per stage."""
        require_role(actor, "viewer", "read the registry")
        with self._db.read() as session:
            return model_view(session, self._model(session, name))

    def rename_registered_model(self, actor: Actor, *, name: object, new_name: object) -> RegisteredModel:
        """Rename a model; versions, tags and aliases follow."""
        require_role(actor, "engineer", "rename registered models")
        new = validate_model_name(new_name)
        try:
            with self._db.write() as session:
                row = self._model(session, name, lock=True)
                old = row.name
                row.name, row.last_updated_timestamp = new, self._clock()
                session.add(row)
                session.flush()
                self._audit(session, actor, "rename_registered_model", new, None,
                            before={"name": old}, after={"name": new})
                return model_view(session, row)
        except IntegrityError as exc:
            raise AlreadyExistsError(f"Registered Model (name={new}) already exists.") from exc

    def update_registered_model(self, actor: Actor, *, name: object, description: object) -> RegisteredModel:
        """Replace a model's description."""
        require_role(actor, "engineer", "edit registered models")
        text = validate_description(description)
        with self._db.write() as session:
            row = self._model(session, name, lock=True)
            before = row.description
            row.description, row.last_updated_timestamp = text, self._clock()
            session.add(row)
            self._audit(session, actor, "update_registered_model", row.name, None,
                        before={"description": before}, after={"description": text})
            return model_view(session, row)

    def delete_registered_model(self, actor: Actor, name: object) -> None:
        """Delete a model, all its versions and their artifacts (Production needs admin)."""
        require_role(actor, "engineer", "delete registered models")
        with self._db.write() as session:
            row = self._model(session, name, lock=True)
            versions = session.exec(
                select(ModelVersionRow).where(col(ModelVersionRow.model_id) == row.id)
            ).all()
            if any(v.current_stage == PRODUCTION for v in versions):
                require_role(actor, "admin", "delete a model that has a Production version (break-glass)")
            locations = [v.storage_location for v in versions]
            self._audit(session, actor, "delete_registered_model", row.name, None,
                        before={"versions": [v.version for v in versions]})
            session.delete(row)
        self._delete_artifacts(locations)

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
                select(RegisteredModelRow).where(*spec.conditions).order_by(*spec.order)
                .offset(offset).limit(limit + 1)
            ).all()
            items = models_views(session, rows[:limit])
        more = len(rows) > limit
        return Page(items=items, next_page_token=search.encode_page_token(offset + limit) if more else None)

    def set_registered_model_tag(self, actor: Actor, *, name: object, key: object, value: object) -> None:
        """Set (or overwrite) a tag on a model."""
        require_role(actor, "engineer", "tag registered models")
        tag_key, tag_value = validate_tag(key, value)
        with self._db.write() as session:
            row = self._model(session, name, lock=True)
            assert row.id is not None
            old = session.get(RegisteredModelTagRow, (row.id, tag_key))
            before = old.value if old else None
            session.merge(RegisteredModelTagRow(model_id=row.id, key=tag_key, value=tag_value))
            self._audit(session, actor, "set_registered_model_tag", row.name, None,
                        before={tag_key: before}, after={tag_key: tag_value})

    def delete_registered_model_tag(self, actor: Actor, *, name: object, key: object) -> None:
        """Delete a tag from a model (a missing tag is a no-op, as in MLflow)."""
        require_role(actor, "engineer", "tag registered models")
        tag_key = validate_tag(key, "")[0]
        with self._db.write() as session:
            row = self._model(session, name, lock=True)
            old = session.get(RegisteredModelTagRow, (row.id, tag_key))
            if old is None:
                return
            session.delete(old)
            self._audit(session, actor, "delete_registered_model_tag", row.name, None,
                        before={tag_key: old.value})

    # ----------------------------------------------------------------- aliases

    def set_alias(self, actor: Actor, *, name: object, alias: object, version: object) -> None:
        """Point ``alias`` at a version (protected aliases need admin: break-glass)."""
        require_role(actor, "engineer", "set aliases")
        alias_name = validate_alias(alias)
        number = parse_version(version)
        break_glass = self._check_protected_alias(actor, alias_name)
        with self._db.write() as session:
            model = self._model(session, name, lock=True)
            target = self._version(session, model, number)
            assert model.id is not None and target.id is not None
            old = session.get(RegisteredModelAliasRow, (model.id, alias_name))
            before = self._version_number(session, old.version_id) if old else None
            session.merge(RegisteredModelAliasRow(model_id=model.id, alias=alias_name, version_id=target.id))
            self._audit(session, actor, "set_alias", model.name, number,
                        before={"alias": alias_name, "version": before},
                        after={"alias": alias_name, "version": number, "break_glass": break_glass})

    def delete_alias(self, actor: Actor, *, name: object, alias: object) -> None:
        """Remove an alias (missing is a no-op, as in MLflow)."""
        require_role(actor, "engineer", "delete aliases")
        if not isinstance(alias, str) or not alias:
            raise InvalidParameterError("Missing value for required parameter 'alias'.")
        break_glass = self._check_protected_alias(actor, alias)
        with self._db.write() as session:
            model = self._model(session, name, lock=True)
            old = session.get(RegisteredModelAliasRow, (model.id, alias))
            if old is None:
                return
            number = self._version_number(session, old.version_id)
            session.delete(old)
            self._audit(session, actor, "delete_alias", model.name, number,
                        before={"alias": alias, "version": number}, after={"break_glass": break_glass})

    def get_version_by_alias(self, actor: Actor, *, name: object, alias: object) -> ModelVersion:
        """The version an alias names; ``latest`` names the highest live version."""
        require_role(actor, "viewer", "read the registry")
        if not isinstance(alias, str) or not alias:
            raise InvalidParameterError("Missing value for required parameter 'alias'.")
        with self._db.read() as session:
            model = self._model(session, name)
            if alias.lower() == "latest":
                row = session.exec(
                    select(ModelVersionRow).where(col(ModelVersionRow.model_id) == model.id)
                    .order_by(col(ModelVersionRow.version).desc()).limit(1)
                ).first()
            else:
                row = session.exec(
                    select(ModelVersionRow)
                    .join(RegisteredModelAliasRow,
                          col(RegisteredModelAliasRow.version_id) == col(ModelVersionRow.id))
                    .where(col(RegisteredModelAliasRow.model_id) == model.id,
                           col(RegisteredModelAliasRow.alias) == alias)
                ).first()
            if row is None:
                raise AliasNotFoundError(alias)
            return versions_views(session, [(row, model.name)], with_aliases=True)[0]

    # ----------------------------------------------------------------- model versions

    def create_model_version(
        self,
        actor: Actor,
        *,
        name: object,
        source: object,
        run_id: object = None,
        tags: Sequence[tuple[object, object]] = (),
        run_link: object = None,
        description: object = None,
        progress: Callable[[int], None] | None = None,
    ) -> ModelVersion:
        """Copy the source artifact into the registry, then number and record the version."""
        require_role(actor, "engineer", "register model versions")
        model_name = validate_model_name(name)
        src = validate_source(source)
        run = validate_run_id(run_id)
        text = validate_description(description)
        link = run_link if isinstance(run_link, str) else ""
        valid_tags = dict(validate_tag(k, v) for k, v in tags)
        with self._db.read() as session:
            self._model(session, model_name)  # fail fast before copying anything
        staged = stage_artifact(self._fetcher, self._artifacts, model_name=model_name, source=src,
                                progress=progress)
        try:
            with self._db.write() as session:
                model = self._model(session, model_name, lock=True)
                assert model.id is not None
                now = self._clock()
                row = ModelVersionRow(
                    model_id=model.id, version=model.next_version, source=src, run_id=run,
                    run_link=link, description=text, storage_location=staged.storage_location,
                    digest=staged.digest, signature=staged.signature, evidence=_json(staged.evidence),
                    user_id=actor.name, creation_timestamp=now, last_updated_timestamp=now,
                )
                model.next_version += 1
                model.last_updated_timestamp = now
                session.add(model)
                session.add(row)
                session.flush()
                assert row.id is not None
                for key, value in valid_tags.items():
                    session.add(ModelVersionTagRow(version_id=row.id, key=key, value=value))
                self._audit(session, actor, "create_model_version", model.name, row.version,
                            after={"source": src, "run_id": run, "digest": staged.digest,
                                   "storage_location": staged.storage_location, "tags": valid_tags})
                return versions_views(session, [(row, model.name)], with_aliases=True)[0]
        except BaseException:
            self._delete_artifacts([staged.storage_location])
            raise

    def get_model_version(self, actor: Actor, *, name: object, version: object) -> ModelVersion:
        """One version with its tags and aliases."""
        require_role(actor, "viewer", "read the registry")
        number = parse_version(version)
        with self._db.read() as session:
            model = self._model(session, name)
            row = self._version(session, model, number)
            return versions_views(session, [(row, model.name)], with_aliases=True)[0]

    def update_model_version(
        self, actor: Actor, *, name: object, version: object, description: object
    ) -> ModelVersion:
        """Replace a version's description."""
        require_role(actor, "engineer", "edit model versions")
        number = parse_version(version)
        text = validate_description(description)
        with self._db.write() as session:
            model = self._model(session, name, lock=True)
            row = self._version(session, model, number)
            before = row.description
            row.description, row.last_updated_timestamp = text, self._clock()
            session.add(row)
            self._audit(session, actor, "update_model_version", model.name, number,
                        before={"description": before}, after={"description": text})
            return versions_views(session, [(row, model.name)], with_aliases=True)[0]

    def delete_model_version(self, actor: Actor, *, name: object, version: object) -> None:
        """Delete a version, its aliases and its artifact; its number is never reused."""
        require_role(actor, "engineer", "delete model versions")
        number = parse_version(version)
        with self._db.write() as session:
            model = self._model(session, name, lock=True)
            row = self._version(session, model, number)
            if row.current_stage == PRODUCTION:
                require_role(actor, "admin", "delete the Production version (break-glass)")
            location = row.storage_location
            model.last_updated_timestamp = self._clock()
            session.add(model)
            self._audit(session, actor, "delete_model_version", model.name, number,
                        before={"stage": row.current_stage, "digest": row.digest})
            session.delete(row)
        self._delete_artifacts([location])

    def transition_stage(
        self,
        actor: Actor,
        *,
        name: object,
        version: object,
        stage: object,
        archive_existing_versions: bool = False,
    ) -> ModelVersion:
        """Move a version to a stage; entering Production archives the incumbent atomically."""
        require_role(actor, "engineer", "transition model versions")
        number = parse_version(version)
        target = canonical_stage(stage)
        if archive_existing_versions and target not in (STAGING, PRODUCTION):
            raise InvalidParameterError(
                f"Model version transition cannot archive existing model versions because '{target}' "
                "is not an Active stage. Valid stages are Staging and Production."
            )
        with self._db.write() as session:
            model = self._model(session, name, lock=True)
            row = self._version(session, model, number)
            source_stage = row.current_stage
            break_glass = PRODUCTION in (target, source_stage) and target != source_stage
            if break_glass:
                require_role(
                    actor, "admin",
                    f"move a version {'into' if target == PRODUCTION else 'out of'} Production directly "
                    "(request a promotion instead; admins may break glass)",
                )
            now = self._clock()
            archived: list[int] = []
            if target == PRODUCTION or archive_existing_versions:
                archived = self._archive_others(session, model, row, target, now)
            row.current_stage, row.last_updated_timestamp = target, now
            model.last_updated_timestamp = now
            session.add_all([row, model])
            session.flush()
            self._audit(session, actor, "transition_stage", model.name, number,
                        before={"stage": source_stage},
                        after={"stage": target, "archived": archived, "break_glass": break_glass})
            return versions_views(session, [(row, model.name)], with_aliases=True)[0]

    def get_latest_versions(
        self, actor: Actor, *, name: object, stages: Sequence[object] | None = None
    ) -> list[ModelVersion]:
        """The highest version per stage (all four stages when none are given)."""
        require_role(actor, "viewer", "read the registry")
        wanted = [canonical_stage(s) for s in stages] if stages else None
        with self._db.read() as session:
            model = self._model(session, name)
            assert model.id is not None
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
            rows = session.exec(
                select(ModelVersionRow, RegisteredModelRow.name)
                .join(RegisteredModelRow, col(RegisteredModelRow.id) == col(ModelVersionRow.model_id))
                .where(*spec.conditions).order_by(*spec.order).offset(offset).limit(limit + 1)
            ).all()
            items = versions_views(session, [(r, n) for r, n in rows[:limit]], with_aliases=False)
        more = len(rows) > limit
        return Page(items=items, next_page_token=search.encode_page_token(offset + limit) if more else None)

    def list_model_versions(
        self, actor: Actor, *, name: object, max_results: object = 1000, page_token: str | None = None
    ) -> Page[ModelVersion]:
        """The versions of one model, newest first, with tags and aliases."""
        require_role(actor, "viewer", "read the registry")
        limit = search.validate_max_results(max_results, limit=MAX_MODEL_RESULTS)
        offset = search.decode_page_token(page_token)
        with self._db.read() as session:
            model = self._model(session, name)
            rows = session.exec(
                select(ModelVersionRow).where(col(ModelVersionRow.model_id) == model.id)
                .order_by(col(ModelVersionRow.version).desc()).offset(offset).limit(limit + 1)
            ).all()
            items = versions_views(session, [(r, model.name) for r in rows[:limit]], with_aliases=True)
        more = len(rows) > limit
        return Page(items=items, next_page_token=search.encode_page_token(offset + limit) if more else None)

    def get_download_uri(self, actor: Actor, *, name: object, version: object) -> str:
        """Where a loader fetches the version's artifact: the registry's own copy."""
        return self.get_model_version(actor, name=name, version=version).storage_location

    def set_model_version_tag(
        self, actor: Actor, *, name: object, version: object, key: object, value: object
    ) -> None:
        """Set (or overwrite) a tag on a version."""
        require_role(actor, "engineer", "tag model versions")
        number = parse_version(version)
        tag_key, tag_value = validate_tag(key, value)
        with self._db.write() as session:
            model = self._model(session, name, lock=True)
            row = self._version(session, model, number)
            old = session.get(ModelVersionTagRow, (row.id, tag_key))
            before = old.value if old else None
            assert row.id is not None
            session.merge(ModelVersionTagRow(version_id=row.id, key=tag_key, value=tag_value))
            self._audit(session, actor, "set_model_version_tag", model.name, number,
                        before={tag_key: before}, after={tag_key: tag_value})

    def delete_model_version_tag(self, actor: Actor, *, name: object, version: object, key: object) -> None:
        """Delete a tag from a version (missing is a no-op)."""
        require_role(actor, "engineer", "tag model versions")
        number = parse_version(version)
        tag_key = validate_tag(key, "")[0]
        with self._db.write() as session:
            model = self._model(session, name, lock=True)
            row = self._version(session, model, number)
            old = session.get(ModelVersionTagRow, (row.id, tag_key))
            if old is None:
                return
            session.delete(old)
            self._audit(session, actor, "delete_model_version_tag", model.name, number,
                        before={tag_key: old.value})

    # ----------------------------------------------------------------- audit

    def list_audit_events(
        self, actor: Actor, *, model_name: str | None = None, after_seq: int = 0, limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEvent]:
        """Audit events after ``after_seq`` in sequence order (or newest first), optionally for one model."""
        require_role(actor, "viewer", "read the audit log")
        if not 1 <= limit <= 10_000:
            raise InvalidParameterError("Parameter 'limit' must be between 1 and 10000.")
        with self._db.read() as session:
            query = select(AuditEventRow).where(col(AuditEventRow.seq) > after_seq)
            if model_name:
                query = query.where(col(AuditEventRow.model_name) == model_name)
            order = col(AuditEventRow.seq).desc() if newest_first else col(AuditEventRow.seq)
            rows = session.exec(query.order_by(order).limit(limit)).all()
            return [event_view(r) for r in rows]

    def verify_audit_chain(self, actor: Actor) -> AuditVerification:
        """Recompute the audit hash chain; any edited, removed or reordered event is reported."""
        require_role(actor, "viewer", "read the audit log")
        with self._db.read() as session:
            return verify_chain(session)

    # ----------------------------------------------------------------- internals

    def _model(self, session: Session, name: object, *, lock: bool = False) -> RegisteredModelRow:
        model_name = validate_model_name(name)
        query = select(RegisteredModelRow).where(col(RegisteredModelRow.name) == model_name)
        row = session.exec(query.with_for_update() if lock else query).first()
        if row is None:
            raise NotFoundError(f"Registered Model with name={model_name} not found")
        return row

    @staticmethod
    def _version(session: Session, model: RegisteredModelRow, number: int) -> ModelVersionRow:
        row = session.exec(
            select(ModelVersionRow).where(
                col(ModelVersionRow.model_id) == model.id, col(ModelVersionRow.version) == number
            )
        ).first()
        if row is None:
            raise NotFoundError(f"Model Version (name={model.name}, version={number}) not found")
        return row

    @staticmethod
    def _version_number(session: Session, version_id: int) -> int | None:
        return session.exec(
            select(ModelVersionRow.version).where(col(ModelVersionRow.id) == version_id)
        ).first()

    @staticmethod
    def _archive_others(
        session: Session, model: RegisteredModelRow, row: ModelVersionRow, target: str, now: int
    ) -> list[int]:
        others = session.exec(
            select(ModelVersionRow.version).where(
                col(ModelVersionRow.model_id) == model.id,
                col(ModelVersionRow.current_stage) == target,
                col(ModelVersionRow.id) != row.id,
            )
        ).all()
        if others:
            session.execute(
                update(ModelVersionRow)
                .where(col(ModelVersionRow.model_id) == model.id,
                       col(ModelVersionRow.current_stage) == target,
                       col(ModelVersionRow.id) != row.id)
                .values(current_stage=ARCHIVED, last_updated_timestamp=now)
                .execution_options(synchronize_session=False)
            )
        return sorted(others)

    def _check_protected_alias(self, actor: Actor, alias: str) -> bool:
        if alias not in self._protected_aliases:
            return False
        require_role(actor, "admin", f"move the protected alias '{alias}' directly "
                                     "(request a promotion instead; admins may break glass)")
        return True

    def _audit(
        self, session: Session, actor: Actor, action: str, model_name: str, version: int | None,
        *, before: Any = None, after: Any = None,
    ) -> None:
        subject = f"{model_name}/{version}" if version is not None else model_name
        append_event(session, actor=actor, action=action, timestamp=self._clock(), model_name=model_name,
                     version=version, subject=subject, before=before, after=after)

    def _delete_artifacts(self, locations: Sequence[str]) -> None:
        for location in locations:
            try:
                self._artifacts.delete(location)
            except Exception:  # the rows are gone already; a leftover copy is only garbage
                log.exception("could not delete artifact copy at %s", location)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
