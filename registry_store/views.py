"""Read-side helpers: load rows with their tags and aliases and build entity views."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import BindParameter, bindparam
from sqlmodel import Session, col, select

from registry_store.entities import AliasRef, ModelVersion, RegisteredModel
from registry_store.stages import ALL_STAGES
from registry_store.tables import (
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelAliasRow,
    RegisteredModelRow,
    RegisteredModelTagRow,
)

__all__ = ["latest_per_stage", "model_view", "models_views", "new_version_view", "version_view", "versions_views"]

# Statements built once: the read paths run them on every request, and building a SQLAlchemy
# statement costs more than SQLite takes to answer it.
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_VERSION_TAGS = (
    select(ModelVersionTagRow).where(col(ModelVersionTagRow.version_id).in_(_IDS)).order_by(col(ModelVersionTagRow.key))
)
_VERSION_ALIASES = (
    select(RegisteredModelAliasRow)
    .where(col(RegisteredModelAliasRow.version_id).in_(_IDS))
    .order_by(col(RegisteredModelAliasRow.alias))
)
_MODEL_TAGS = (
    select(RegisteredModelTagRow).where(col(RegisteredModelTagRow.model_id).in_(_IDS)).order_by(
        col(RegisteredModelTagRow.key)
    )
)
_MODEL_ALIASES = (
    select(RegisteredModelAliasRow, ModelVersionRow.version)
    .join(ModelVersionRow, col(ModelVersionRow.id) == col(RegisteredModelAliasRow.version_id))
    .where(col(RegisteredModelAliasRow.model_id).in_(_IDS))
    .order_by(col(RegisteredModelAliasRow.alias))
)


def _newest_in(stage: str) -> Any:
    return (
        select(ModelVersionRow.id)
        .where(col(ModelVersionRow.model_id) == bindparam("model_id"), col(ModelVersionRow.current_stage) == stage)
        .order_by(col(ModelVersionRow.version).desc())
        .limit(1)
        .scalar_subquery()
    )


_LATEST_ALL_STAGES = select(ModelVersionRow).where(col(ModelVersionRow.id).in_([_newest_in(s) for s in ALL_STAGES]))


def version_view(
    row: ModelVersionRow, model_name: str, tags: dict[str, str], aliases: list[str]
) -> ModelVersion:
    """Build the view of one version row."""
    return ModelVersion(
        name=model_name,
        version=row.version,
        current_stage=row.current_stage,
        description=row.description,
        source=row.source,
        run_id=row.run_id,
        run_link=row.run_link,
        model_id=row.model_id_ref,
        storage_location=row.storage_location,
        artifact_id=row.artifact_id,
        digest=row.digest,
        signature=row.signature,
        evidence=json.loads(row.evidence),
        status=row.status,
        status_message=row.status_message,
        user_id=row.user_id,
        creation_timestamp=row.creation_timestamp,
        last_updated_timestamp=row.last_updated_timestamp,
        tags=tags,
        aliases=aliases,
    )


def new_version_view(model_name: str, values: Mapping[str, Any], tags: Mapping[str, str]) -> ModelVersion:
    """The view of a version just inserted with ``values`` (``model_versions`` columns, all given) and
    ``tags``, built without reading it back: a new version has exactly those tags and no aliases."""
    return ModelVersion(
        name=model_name,
        version=values["version"],
        current_stage=values["current_stage"],
        description=values["description"],
        source=values["source"],
        run_id=values["run_id"],
        run_link=values["run_link"],
        model_id=values["model_id_ref"],
        storage_location=values["storage_location"],
        artifact_id=values["artifact_id"],
        digest=values["digest"],
        signature=values["signature"],
        evidence=json.loads(values["evidence"]),
        status=values["status"],
        status_message=values["status_message"],
        user_id=values["user_id"],
        creation_timestamp=values["creation_timestamp"],
        last_updated_timestamp=values["last_updated_timestamp"],
        tags=dict(sorted(tags.items())),
        aliases=[],
    )


def versions_views(
    session: Session, rows: Sequence[tuple[ModelVersionRow, str]], *, with_aliases: bool
) -> list[ModelVersion]:
    """Views of several (version row, model name) pairs, loading tags (and aliases) in bulk."""
    ids = [row.id for row, _ in rows if row.id is not None]
    tags: dict[int, dict[str, str]] = defaultdict(dict)
    aliases: dict[int, list[str]] = defaultdict(list)
    if ids:
        for tag in session.exec(_VERSION_TAGS, params={"ids": ids}):
            tags[tag.version_id][tag.key] = tag.value
        if with_aliases:
            for alias in session.exec(_VERSION_ALIASES, params={"ids": ids}):
                aliases[alias.version_id].append(alias.alias)
    return [
        version_view(row, name, tags[row.id or 0], aliases[row.id or 0] if with_aliases else [])
        for row, name in rows
    ]


def latest_per_stage(
    session: Session, model_id: int, stages: Sequence[str] = ALL_STAGES
) -> list[ModelVersionRow]:
    """The highest version in each of ``stages``: one statement, one index seek per stage."""
    if tuple(stages) == ALL_STAGES:
        rows = session.exec(_LATEST_ALL_STAGES, params={"model_id": model_id}).all()
        return sorted(rows, key=lambda r: r.version)
    newest = [
        select(ModelVersionRow.id)
        .where(col(ModelVersionRow.model_id) == model_id, col(ModelVersionRow.current_stage) == stage)
        .order_by(col(ModelVersionRow.version).desc())
        .limit(1)
        .scalar_subquery()
        for stage in stages
    ]
    rows = session.exec(select(ModelVersionRow).where(col(ModelVersionRow.id).in_(newest))).all()
    return sorted(rows, key=lambda r: r.version)


def models_views(session: Session, models: Sequence[RegisteredModelRow]) -> list[RegisteredModel]:
    """Views of several registered models with tags, aliases and latest versions."""
    ids = [m.id for m in models if m.id is not None]
    tags: dict[int, dict[str, str]] = defaultdict(dict)
    aliases: dict[int, list[AliasRef]] = defaultdict(list)
    if ids:
        for tag in session.exec(_MODEL_TAGS, params={"ids": ids}):
            tags[tag.model_id][tag.key] = tag.value
        for alias, number in session.exec(_MODEL_ALIASES, params={"ids": ids}):
            aliases[alias.model_id].append(AliasRef(alias=alias.alias, version=number))
    views = []
    for model in models:
        assert model.id is not None
        latest = latest_per_stage(session, model.id)
        views.append(
            RegisteredModel(
                name=model.name,
                description=model.description,
                creation_timestamp=model.creation_timestamp,
                last_updated_timestamp=model.last_updated_timestamp,
                tags=tags[model.id],
                aliases=aliases[model.id],
                latest_versions=versions_views(session, [(r, model.name) for r in latest], with_aliases=False),
            )
        )
    return views


def model_view(session: Session, model: RegisteredModelRow) -> RegisteredModel:
    """The view of one registered model."""
    return models_views(session, [model])[0]
