"""Copying a source artifact into the registry's own store, outside any transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_store.artifacts import (
    MLMODEL_FILE,
    ArtifactStore,
    ModelMetadata,
    ProgressCallback,
    SourceFacts,
    SourceFetcher,
    manifest_digest,
    read_model_metadata,
    tree_manifest,
)
from registry_store.errors import InvalidParameterError

__all__ = ["IMPORTANCES_FILE", "METRICS_FILE", "StagedArtifact", "UploadedTree", "stage_artifact"]

METRICS_FILE = "metrics.json"
IMPORTANCES_FILE = "feature_importances.json"


@dataclass(frozen=True)
class StagedArtifact:
    """An artifact copied into the registry store, not yet referenced by any version."""

    storage_location: str
    artifact_id: str
    digest: str
    file_digests: dict[str, str]
    signature: str
    evidence: dict[str, Any]
    facts: SourceFacts


class UploadedTree(SourceFetcher):
    """Fetches one directory the server itself unpacked from a client's upload, whatever the source says.

    The source is only the label the version records (``upload:<name>``): no client can name a
    server path through it.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(local_roots=[directory])
        self._directory = str(directory)

    def fetch(self, source: str, dest: Path, progress: ProgressCallback | None = None) -> SourceFacts:
        """Copy the uploaded directory into ``dest``."""
        return super().fetch(self._directory, dest, progress)

    def slot(self, source: str) -> AbstractContextManager[object]:
        """The local staging slot (an upload stages like a local source)."""
        return super().slot(self._directory)


def stage_artifact(
    fetcher: SourceFetcher,
    store: ArtifactStore,
    *,
    model_name: str,
    source: str,
    progress: Callable[[int], None] | None = None,
) -> StagedArtifact:
    """Fetch ``source``, digest it, read its MLmodel and store it at ``<model>/<uuid>/``.

    The source is fetched straight into the store's staging area and hashed while it is copied
    (tracking sources, whose copier does not hash, are digested afterwards); the local store then
    renames the tree into place, the S3 store uploads it. Nothing remains when this raises.
    Tracking sources must hold an ``MLmodel``; their run and logged-model numbers join the
    evidence, and stand in for ``metrics.json`` when the artifact has none.
    """
    with store.staging() as local:
        facts = fetcher.fetch(source, local, progress if store.stages_in_place else None)
        file_digests = facts.file_digests if facts.file_digests is not None else tree_manifest(local)
        if facts.require_mlmodel and MLMODEL_FILE not in file_digests:
            raise InvalidParameterError(
                f"Source '{source}' is not an MLflow model: it has no {MLMODEL_FILE} file at its root"
            )
        metadata = read_model_metadata(local) if MLMODEL_FILE in file_digests else ModelMetadata()
        evidence: dict[str, Any] = {
            "flavors": list(metadata.flavors), **facts.evidence, **_recorded_numbers(local, file_digests)
        }
        if "metrics" not in evidence:
            tracked = {**facts.evidence.get("run_metrics", {}), **facts.evidence.get("model_metrics", {})}
            if tracked:
                evidence["metrics"] = tracked
        artifact_id = uuid.uuid4().hex
        location = store.put_staged(local, f"{model_name}/{artifact_id}", None if store.stages_in_place else progress)
    return StagedArtifact(
        storage_location=location,
        artifact_id=artifact_id,
        digest=manifest_digest(file_digests),
        file_digests=file_digests,
        signature=metadata.signature,
        evidence=evidence,
        facts=facts,
    )


def _recorded_numbers(root: Path, files: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Metrics and feature importances recorded next to the model (``metrics.json``, ...); ``files`` lists the tree."""
    found: dict[str, dict[str, float]] = {}
    for key, filename in (("metrics", METRICS_FILE), ("feature_importances", IMPORTANCES_FILE)):
        if filename not in files:
            continue
        path = root / filename
        try:
            document = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidParameterError(f"{filename} in the artifact is not valid JSON: {exc}") from exc
        if not isinstance(document, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in document.items()
        ):
            raise InvalidParameterError(f"{filename} in the artifact must be a JSON object of names to numbers.")
        found[key] = {k: float(v) for k, v in document.items()}
    return found
