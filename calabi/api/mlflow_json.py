"""Entity views in the MLflow wire format (``version`` as a string, list-shaped tags)."""

from __future__ import annotations

from typing import Any

from registry_store.entities import ModelVersion, RegisteredModel

__all__ = ["model_json", "version_json"]


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def version_json(mv: ModelVersion, *, with_aliases: bool = True) -> dict[str, Any]:
    """A ModelVersion as the mlflow client parses it."""
    body: dict[str, Any] = {
        "name": mv.name,
        "version": str(mv.version),
        "creation_timestamp": mv.creation_timestamp,
        "last_updated_timestamp": mv.last_updated_timestamp,
        "user_id": mv.user_id,
        "current_stage": mv.current_stage,
        "description": mv.description,
        "source": mv.source,
        "run_id": mv.run_id,
        "status": mv.status,
        "run_link": mv.run_link,
        "tags": _tags(mv.tags),
    }
    if mv.model_id:
        body["model_id"] = mv.model_id
    if mv.status_message:
        body["status_message"] = mv.status_message
    if with_aliases:
        body["aliases"] = list(mv.aliases)
    return body


def model_json(rm: RegisteredModel) -> dict[str, Any]:
    """A RegisteredModel as the mlflow client parses it."""
    return {
        "name": rm.name,
        "creation_timestamp": rm.creation_timestamp,
        "last_updated_timestamp": rm.last_updated_timestamp,
        "description": rm.description,
        "latest_versions": [version_json(v, with_aliases=False) for v in rm.latest_versions],
        "tags": _tags(rm.tags),
        "aliases": [{"alias": a.alias, "version": str(a.version)} for a in rm.aliases],
    }
