"""Model-version operations of RegistryService."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import bindparam, insert, update
from sqlmodel import col, select

from registry_store import search
from registry_store.artifacts import SourceFacts
from registry_store.audit import Actor
from registry_store.entities import ModelVersion, Page
from registry_store.errors import (
    InvalidParameterError,
    NotFoundError,
)
from registry_store.registration import UploadedTree, stage_artifact
from registry_store.service_base import MAX_MODEL_RESULTS, MAX_VERSION_RESULTS, ServiceBase, model_not_found
from registry_store.stages import NONE, PRODUCTION, STAGING, canonical_stage, is_break_glass
from registry_store.tables import (
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelRow,
)
from registry_store.transition_plans import TRANSITION_TARGETS, TransitionPlan, plan_transition
from registry_store.users import require_role
from registry_store.validation import (
    parse_version,
    validate_description,
    validate_model_name,
    validate_run_id,
    validate_source,
    validate_tag,
)
from registry_store.views import (
    NAMED_VERSIONS,
    latest_per_stage,
    named_version,
    new_version_view,
    versions_views,
)

__all__ = ["VersionOperations"]

# Registration's statements, built once (building a statement costs more than SQLite takes to run it).
_NEXT_NUMBER = (
    update(RegisteredModelRow)
    .where(col(RegisteredModelRow.name) == bindparam("model_name"))
    .values(next_version=col(RegisteredModelRow.next_version) + 1, last_updated_timestamp=bindparam("now"))
    .returning(col(RegisteredModelRow.id), col(RegisteredModelRow.next_version))
)
"""Locks the model row (a row lock on PostgreSQL; the write transaction holds SQLite's write lock) and
takes the next version number in one statement: the number is the returned counter minus one."""
_INSERT_VERSION = insert(ModelVersionRow).returning(col(ModelVersionRow.id))
_INSERT_VERSION_TAG = insert(ModelVersionTagRow)


class VersionOperations(ServiceBase):
    """Register, read, describe, delete, transition, search and tag versions."""

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
        model_id: object = None,
        progress: Callable[[int], None] | None = None,
        upload: Path | None = None,
    ) -> ModelVersion:
        """Copy the source artifact into the registry, then number and record the version.

        ``run_id`` and ``model_id`` default to what a tracking source says about itself; a
        ``run_id`` that contradicts it is refused. ``upload`` is a directory the server itself
        unpacked from a client's upload: it is copied instead, ``source`` only labels it.
        """
        require_role(actor, "engineer", "register model versions")
        model_name = validate_model_name(name)
        src = validate_source(source)
        run = validate_run_id(run_id)
        logged_model = validate_run_id(model_id, "model_id")
        text = validate_description(description)
        link = run_link if isinstance(run_link, str) else ""
        valid_tags = dict(validate_tag(k, v) for k, v in tags)
        with self._db.read_connection() as connection:  # fail fast before copying anything
            self._model_record(connection, model_name)
        fetcher = self._fetcher if upload is None else UploadedTree(upload)
        with fetcher.slot(src):
            staged = stage_artifact(fetcher, self._artifacts, model_name=model_name, source=src, progress=progress)
        try:
            run, logged_model = _reconcile_ids(src, run, logged_model, staged.facts)
            with self._db.write_connection() as connection:
                now = self._clock()
                found = connection.execute(_NEXT_NUMBER, {"model_name": model_name, "now": now}).first()
                if found is None:
                    raise model_not_found(model_name)
                values = {
                    "model_id": found.id,
                    "version": found.next_version - 1,
                    "current_stage": NONE,
                    "description": text,
                    "source": src,
                    "run_id": run,
                    "run_link": link,
                    "model_id_ref": logged_model,
                    "storage_location": staged.storage_location,
                    "artifact_id": staged.artifact_id,
                    "digest": staged.digest,
                    "file_digests": json.dumps(staged.file_digests, sort_keys=True),
                    "signature": staged.signature,
                    "evidence": json.dumps(staged.evidence, sort_keys=True),
                    "status": "READY",
                    "status_message": "",
                    "user_id": actor.name,
                    "creation_timestamp": now,
                    "last_updated_timestamp": now,
                }
                version_id = connection.execute(_INSERT_VERSION, values).scalar_one()
                if valid_tags:
                    connection.execute(
                        _INSERT_VERSION_TAG,
                        [{"version_id": version_id, "key": key, "value": value} for key, value in valid_tags.items()],
                    )
                self._audit(
                    connection,
                    actor,
                    "create_model_version",
                    model_name,
                    values["version"],
                    after={
                        "source": src,
                        "run_id": run,
                        "model_id": logged_model,
                        "digest": staged.digest,
                        "storage_location": staged.storage_location,
                        "tags": valid_tags,
                    },
                )
                return new_version_view(model_name, values, valid_tags)
        except BaseException:
            self._delete_artifacts([staged.storage_location])
            raise

    def get_model_version(self, actor: Actor, *, name: object, version: object) -> ModelVersion:
        """One version with its tags and aliases."""
        require_role(actor, "viewer", "read the registry")
        number = parse_version(version)
        model_name = validate_model_name(name)
        with self._db.read() as session:
            row = named_version(session, model_name, number=number)
            if row is None:
                model = self._model_record(session.connection(), model_name)  # missing: the model or the version
                raise NotFoundError(f"Model Version (name={model.name}, version={number}) not found")
            return versions_views(session, [(row, row.model_name)], with_aliases=True)[0]

    def update_model_version(self, actor: Actor, *, name: object, version: object, description: object) -> ModelVersion:
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
            model = self._model(session, name, lock=True)
            row = self._version(session, model, number)
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
            break_glass = is_break_glass(source_stage, target)
            if break_glass:
                require_role(
                    actor,
                    "admin",
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
            self._audit(
                session,
                actor,
                "transition_stage",
                model.name,
                number,
                before={"stage": source_stage},
                after={"stage": target, "archived": archived, "break_glass": break_glass},
            )
            return versions_views(session, [(row, model.name)], with_aliases=True)[0]

    def plan_transitions(self, actor: Actor, *, name: object, version: object) -> list[TransitionPlan]:
        """What moving a version to each other stage would do (for confirmation dialogs)."""
        require_role(actor, "viewer", "read the registry")
        number = parse_version(version)
        with self._db.read() as session:
            model = self._model(session, name)
            row = self._version(session, model, number)
            stages = dict(session.exec(
                select(ModelVersionRow.version, ModelVersionRow.current_stage)
                .where(col(ModelVersionRow.model_id) == model.id)
            ).all())
        return [plan_transition(number, stages, target) for target in TRANSITION_TARGETS
                if target != row.current_stage]

    def get_latest_versions(
        self, actor: Actor, *, name: object, stages: Sequence[object] | None = None
    ) -> list[ModelVersion]:
        """The highest version per stage (all four stages when none are given)."""
        require_role(actor, "viewer", "read the registry")
        wanted = [canonical_stage(s) for s in stages] if stages else None
        with self._db.read() as session:
            model = self._model_record(session.connection(), name)
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
            query = NAMED_VERSIONS.where(*spec.conditions).order_by(*spec.order).offset(offset).limit(limit + 1)
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
            model = self._model(session, name)
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
            model = self._model(session, name, lock=True)
            row = self._version(session, model, number)
            old = session.get(ModelVersionTagRow, (row.id, tag_key))
            before = old.value if old else None
            assert row.id is not None
            session.merge(ModelVersionTagRow(version_id=row.id, key=tag_key, value=tag_value))
            self._audit(
                session,
                actor,
                "set_model_version_tag",
                model.name,
                number,
                before={tag_key: before},
                after={tag_key: tag_value},
            )

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
            self._audit(session, actor, "delete_model_version_tag", model.name, number, before={tag_key: old.value})


def _reconcile_ids(source: str, run_id: str, model_id: str, facts: SourceFacts) -> tuple[str, str]:
    """The version's run and logged-model ids: the caller's, filled in from the source's facts."""
    for what, given, found in (("run_id", run_id, facts.run_id), ("model_id", model_id, facts.model_id)):
        if given and found and given != found:
            raise InvalidParameterError(
                f"{what} '{given}' does not match source '{source}', which belongs to {what} '{found}'."
            )
    return run_id or facts.run_id, model_id or facts.model_id
