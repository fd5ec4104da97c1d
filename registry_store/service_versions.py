"""Model-version operations of RegistryService."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from sqlmodel import col, select

from registry_store import search
from registry_store.artifacts import SourceFacts
from registry_store.audit import Actor
from registry_store.entities import ModelVersion, Page
from registry_store.errors import (
    InvalidParameterError,
)
from registry_store.registration import stage_artifact
from registry_store.service_base import MAX_MODEL_RESULTS, MAX_VERSION_RESULTS, ServiceBase
from registry_store.stages import PRODUCTION, STAGING, canonical_stage, is_break_glass
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
from registry_store.views import latest_per_stage, versions_views

__all__ = ["VersionOperations"]


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
    ) -> ModelVersion:
        """Copy the source artifact into the registry, then number and record the version.

        ``run_id`` and ``model_id`` default to what a tracking source says about itself; a
        ``run_id`` that contradicts it is refused.
        """
        require_role(actor, "engineer", "register model versions")
        model_name = validate_model_name(name)
        src = validate_source(source)
        run = validate_run_id(run_id)
        logged_model = validate_run_id(model_id, "model_id")
        text = validate_description(description)
        link = run_link if isinstance(run_link, str) else ""
        valid_tags = dict(validate_tag(k, v) for k, v in tags)
        with self._db.read() as session:
            self._model(session, model_name)  # fail fast before copying anything
        staged = stage_artifact(self._fetcher, self._artifacts, model_name=model_name, source=src, progress=progress)
        try:
            run, logged_model = _reconcile_ids(src, run, logged_model, staged.facts)
            with self._db.write() as session:
                model = self._model(session, model_name, lock=True)
                assert model.id is not None
                now = self._clock()
                row = ModelVersionRow(
                    model_id=model.id,
                    version=model.next_version,
                    source=src,
                    run_id=run,
                    run_link=link,
                    model_id_ref=logged_model,
                    description=text,
                    storage_location=staged.storage_location,
                    artifact_id=staged.artifact_id,
                    digest=staged.digest,
                    file_digests=json.dumps(staged.file_digests, sort_keys=True),
                    signature=staged.signature,
                    evidence=json.dumps(staged.evidence, sort_keys=True),
                    user_id=actor.name,
                    creation_timestamp=now,
                    last_updated_timestamp=now,
                )
                model.next_version += 1
                model.last_updated_timestamp = now
                session.add(model)
                session.add(row)
                session.flush()
                assert row.id is not None
                for key, value in valid_tags.items():
                    session.add(ModelVersionTagRow(version_id=row.id, key=key, value=value))
                self._audit(
                    session,
                    actor,
                    "create_model_version",
                    model.name,
                    row.version,
                    after={
                        "source": src,
                        "run_id": run,
                        "model_id": logged_model,
                        "digest": staged.digest,
                        "storage_location": staged.storage_location,
                        "tags": valid_tags,
                    },
                )
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
                .where(*spec.conditions)
                .order_by(*spec.order)
                .offset(offset)
                .limit(limit + 1)
            ).all()
            items = versions_views(session, [(r, n) for r, n in rows[:limit]], with_aliases=False)
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
