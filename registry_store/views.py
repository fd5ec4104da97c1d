"""Read-side helpers: load rows with their tags and aliases and build entity views."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import BindParameter, CompoundSelect, Row, String, bindparam, literal, literal_column, union_all
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from registry_store.entities import AliasRef, ModelVersion, RegisteredModel
from registry_store.stages import ALL_STAGES
from registry_store.tables import (
    GroupRow,
    ModelVersionRow,
    ModelVersionTagRow,
    RegisteredModelAliasRow,
    RegisteredModelRow,
    RegisteredModelTagRow,
)

__all__ = [
    "NAMED_VERSIONS",
    "AnyRow",
    "ModelRecord",
    "VersionRecord",
    "latest_per_stage",
    "model_view",
    "models_views",
    "named_version",
    "new_version_view",
    "version_view",
    "versions_views",
]

AnyRow = Row[*tuple[Any, ...]]
VersionRecord = ModelVersionRow | AnyRow | SimpleNamespace
"""A version's ``model_versions`` columns, read by attribute: the ORM object, a Core row, or the values
of a row just inserted."""
ModelRecord = RegisteredModelRow | AnyRow
"""A model row: the ORM object, or a Core row of the ``registered_models`` columns."""

# Statements built once: the read paths run them on every request, and building a SQLAlchemy
# statement costs more than SQLite takes to answer it. They select columns, not ORM objects
# (loading those costs more again): a version read by number or alias is one join and one
# query for its tags and aliases.
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_VERSION_COLUMNS = ModelVersionRow.__table__.columns  # type: ignore[attr-defined]
_VERSION_TAGS = (
    select(col(ModelVersionTagRow.version_id), col(ModelVersionTagRow.key), col(ModelVersionTagRow.value))
    .where(col(ModelVersionTagRow.version_id).in_(_IDS))
    .order_by(col(ModelVersionTagRow.key))
)
_VERSION_TAGS_AND_ALIASES: CompoundSelect[*tuple[Any, ...]] = union_all(
    select(
        literal("tag", String).label("kind"),
        col(ModelVersionTagRow.version_id).label("version_id"),
        col(ModelVersionTagRow.key).label("name"),
        col(ModelVersionTagRow.value).label("value"),
    ).where(col(ModelVersionTagRow.version_id).in_(_IDS)),
    select(
        literal("alias", String),
        col(RegisteredModelAliasRow.version_id),
        col(RegisteredModelAliasRow.alias),
        literal("", String),
    ).where(col(RegisteredModelAliasRow.version_id).in_(_IDS)),
).order_by(literal_column("kind"), literal_column("name"))
_MODEL_COLUMNS: tuple[Any, ...] = (
    col(RegisteredModelRow.name).label("model_name"),
    col(RegisteredModelRow.restricted).label("model_restricted"),
    col(RegisteredModelRow.owner_group_id).label("model_owner_group_id"),
)
NAMED_VERSIONS = select_columns(*_VERSION_COLUMNS, *_MODEL_COLUMNS).join(
    RegisteredModelRow, col(RegisteredModelRow.id) == col(ModelVersionRow.model_id)
)
"""Every column of ``model_versions`` and the model's name, restricted flag and owning group as ``model_name``,
``model_restricted`` and ``model_owner_group_id`` (``model_access.version_model``): add conditions and order."""
_VERSION_BY_NUMBER = NAMED_VERSIONS.where(
    col(RegisteredModelRow.name) == bindparam("name"), col(ModelVersionRow.version) == bindparam("number")
)
_VERSION_BY_ALIAS = (  # model by name, alias by its key (model, alias), version by id: never a scan of versions
    select_columns(*_VERSION_COLUMNS, *_MODEL_COLUMNS)
    .select_from(RegisteredModelRow)
    .join(RegisteredModelAliasRow, col(RegisteredModelAliasRow.model_id) == col(RegisteredModelRow.id))
    .join(ModelVersionRow, col(ModelVersionRow.id) == col(RegisteredModelAliasRow.version_id))
    .where(col(RegisteredModelRow.name) == bindparam("name"), col(RegisteredModelAliasRow.alias) == bindparam("alias"))
)
_NEWEST_VERSION = (
    NAMED_VERSIONS.where(col(RegisteredModelRow.name) == bindparam("name"))
    .order_by(col(ModelVersionRow.version).desc())
    .limit(1)
)
_MODEL_TAGS = (
    select(col(RegisteredModelTagRow.model_id), col(RegisteredModelTagRow.key), col(RegisteredModelTagRow.value))
    .where(col(RegisteredModelTagRow.model_id).in_(_IDS))
    .order_by(col(RegisteredModelTagRow.key))
)
_GROUP_NAMES = select(col(GroupRow.id), col(GroupRow.name)).where(col(GroupRow.id).in_(_IDS))
_MODEL_ALIASES = (
    select(col(RegisteredModelAliasRow.model_id), col(RegisteredModelAliasRow.alias), col(ModelVersionRow.version))
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


def _latest_in(stages: Sequence[str]) -> Any:
    return select_columns(*_VERSION_COLUMNS).where(col(ModelVersionRow.id).in_([_newest_in(s) for s in stages]))


_LATEST_ALL_STAGES = _latest_in(ALL_STAGES)


def named_version(
    session: Session, model_name: str, *, number: int | None = None, alias: str | None = None
) -> AnyRow | None:
    """One version of ``model_name`` (by number, by alias, or else the newest) with a ``model_name``
    column, in one statement; None when the model or the version is missing."""
    if number is not None:
        statement, params = _VERSION_BY_NUMBER, {"name": model_name, "number": number}
    elif alias is not None:
        statement, params = _VERSION_BY_ALIAS, {"name": model_name, "alias": alias}
    else:
        statement, params = _NEWEST_VERSION, {"name": model_name}
    return session.connection().execute(statement, params).first()


def version_view(row: VersionRecord, model_name: str, tags: dict[str, str], aliases: list[str]) -> ModelVersion:
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
    return version_view(SimpleNamespace(**values), model_name, dict(sorted(tags.items())), [])


def versions_views(
    session: Session, rows: Sequence[tuple[VersionRecord, str]], *, with_aliases: bool
) -> list[ModelVersion]:
    """Views of several (version row, model name) pairs, loading tags (and aliases) in one query."""
    ids = [row.id for row, _ in rows if row.id is not None]
    tags: dict[int, dict[str, str]] = defaultdict(dict)
    aliases: dict[int, list[str]] = defaultdict(list)
    if ids:
        connection = session.connection()
        if with_aliases:
            for kind, version_id, name, value in connection.execute(_VERSION_TAGS_AND_ALIASES, {"ids": ids}):
                if kind == "tag":
                    tags[version_id][name] = value
                else:
                    aliases[version_id].append(name)
        else:
            for version_id, key, value in connection.execute(_VERSION_TAGS, {"ids": ids}):
                tags[version_id][key] = value
    return [
        version_view(row, name, tags[row.id or 0], aliases[row.id or 0] if with_aliases else [])
        for row, name in rows
    ]


def latest_per_stage(session: Session, model_id: int, stages: Sequence[str] = ALL_STAGES) -> list[AnyRow]:
    """The highest version in each of ``stages``: one statement, one index seek per stage."""
    statement = _LATEST_ALL_STAGES if tuple(stages) == ALL_STAGES else _latest_in(stages)
    rows = session.connection().execute(statement, {"model_id": model_id}).all()
    return sorted(rows, key=lambda r: r.version)


def models_views(session: Session, models: Sequence[ModelRecord]) -> list[RegisteredModel]:
    """Views of several registered models with tags, aliases and latest versions."""
    ids = [m.id for m in models if m.id is not None]
    tags: dict[int, dict[str, str]] = defaultdict(dict)
    aliases: dict[int, list[AliasRef]] = defaultdict(list)
    if ids:
        connection = session.connection()
        for model_id, key, value in connection.execute(_MODEL_TAGS, {"ids": ids}):
            tags[model_id][key] = value
        for model_id, alias, number in connection.execute(_MODEL_ALIASES, {"ids": ids}):
            aliases[model_id].append(AliasRef(alias=alias, version=number))
    owner_ids = sorted({m.owner_group_id for m in models if m.owner_group_id is not None})
    owners = dict(session.connection().execute(_GROUP_NAMES, {"ids": owner_ids}).all()) if owner_ids else {}
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
                risk_tier=model.risk_tier,
                owner_group=owners.get(model.owner_group_id),
                restricted=bool(model.restricted),
            )
        )
    return views


def model_view(session: Session, model: ModelRecord) -> RegisteredModel:
    """The view of one registered model."""
    return models_views(session, [model])[0]
