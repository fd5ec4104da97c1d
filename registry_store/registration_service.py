"""RegistrationService: copy a source into the registry's store, then number and record the version."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import bindparam, insert, update
from sqlmodel import col

from policies.evidence import GOVERNANCE_TAGS
from registry_store.artifacts import SourceFacts
from registry_store.audit import Actor
from registry_store.context import RegistryContext, ServiceBase, model_not_found
from registry_store.entities import ModelVersion
from registry_store.errors import (
    AlreadyExistsError,
    InvalidParameterError,
    NotFoundError,
    RegistryError,
    UnavailableError,
)
from registry_store.model_access import EDIT, require_model_permission
from registry_store.model_service import ModelService
from registry_store.registration import UploadedTree, stage_artifact
from registry_store.stages import NONE
from registry_store.tables import ModelVersionRow, ModelVersionTagRow, RegisteredModelRow
from registry_store.users import require_role
from registry_store.validation import (
    validate_description,
    validate_model_name,
    validate_run_id,
    validate_source,
    validate_tag,
)
from registry_store.views import new_version_view

__all__ = ["RegistrationService"]

# Registration's statements, built once (building a statement costs more than SQLite takes to run it).
_NEXT_NUMBER = (
    update(RegisteredModelRow)
    .where(col(RegisteredModelRow.name) == bindparam("model_name"))
    .values(next_version=col(RegisteredModelRow.next_version) + 1, last_updated_timestamp=bindparam("now"))
    .returning(col(RegisteredModelRow.id), col(RegisteredModelRow.next_version), col(RegisteredModelRow.name),
               col(RegisteredModelRow.restricted), col(RegisteredModelRow.owner_group_id))
)
"""Locks the model row (a row lock on PostgreSQL; the write transaction holds SQLite's write lock) and
takes the next version number in one statement: the number is the returned counter minus one."""
_INSERT_VERSION = insert(ModelVersionRow).returning(col(ModelVersionRow.id))
_INSERT_VERSION_TAG = insert(ModelVersionTagRow)


class RegistrationService(ServiceBase):
    """Register versions (``create_model_version``) and, MLflow's ``register_model``, model and version at once."""

    def __init__(self, context: RegistryContext, models: ModelService) -> None:
        super().__init__(context)
        self._models = models

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
        if GOVERNANCE_TAGS & valid_tags.keys():
            require_role(actor, "admin", "register a version with governance tags (the promotion engine writes them)")
        with self._db.read_connection() as connection:  # fail fast before copying anything
            self._model_record(connection, model_name, actor=actor, need=EDIT)
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
                require_model_permission(connection, actor, found, EDIT)  # again, under the row lock
                if self._artifacts.swept_away(staged.storage_location):  # see registry_store/orphan_sweep.py
                    raise UnavailableError("the registry's copy of the source was removed before the version was "
                                           "recorded (this registration was taken for an abandoned one); try again")
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
                self._publish(connection, "model_version.created", model_name,
                              {"name": model_name, "version": str(values["version"]), "source": src, "run_id": run,
                               "tags": valid_tags, "description": text})
                return new_version_view(model_name, values, valid_tags)
        except BaseException:
            self._delete_artifacts([staged.storage_location])
            raise


    def register_version(
        self, actor: Actor, *, name: object, source: object, run_id: object = None, description: object = None
    ) -> tuple[ModelVersion, bool]:
        """Create the model when the name is new (as ``mlflow.register_model`` does), then the version.

        Returns the version and whether the model was created; a failed first registration removes
        the empty model again.
        """
        created = False
        try:
            self._models.get_registered_model(actor, name)
        except NotFoundError:
            try:
                self._models.create_registered_model(actor, name=name)
                created = True
            except AlreadyExistsError:  # registered by someone else meanwhile: append to it
                pass
        try:
            version = self.create_model_version(actor, name=name, source=source, run_id=run_id, description=description)
        except RegistryError:
            if created:
                self._models.delete_registered_model(actor, name)
            raise
        return version, created


def _reconcile_ids(source: str, run_id: str, model_id: str, facts: SourceFacts) -> tuple[str, str]:
    """The version's run and logged-model ids: the caller's, filled in from the source's facts."""
    for what, given, found in (("run_id", run_id, facts.run_id), ("model_id", model_id, facts.model_id)):
        if given and found and given != found:
            raise InvalidParameterError(
                f"{what} '{given}' does not match source '{source}', which belongs to {what} '{found}'."
            )
    return run_id or facts.run_id, model_id or facts.model_id
