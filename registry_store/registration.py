"""Copying a source artifact into the registry's own store, outside any transaction."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_store.artifacts import ArtifactStore, SourceFetcher, read_model_metadata, tree_digest

__all__ = ["StagedArtifact", "stage_artifact"]


@dataclass(frozen=True)
class StagedArtifact:
    """An artifact copied into the registry store, not yet referenced by any version."""

    storage_location: str
    digest: str
    signature: str
    evidence: dict[str, Any]


def stage_artifact(
    fetcher: SourceFetcher,
    store: ArtifactStore,
    *,
    model_name: str,
    source: str,
    progress: Callable[[int], None] | None = None,
) -> StagedArtifact:
    """Fetch ``source``, digest it, read its MLmodel and copy it to ``<model>/<uuid>/``."""
    with tempfile.TemporaryDirectory(prefix="calabi-stage-") as tmp:
        local = Path(tmp) / "artifact"
        local.mkdir()
        fetcher.fetch(source, local)
        digest = tree_digest(local)
        metadata = read_model_metadata(local)
        location = store.put_tree(local, f"{model_name}/{uuid.uuid4().hex}", progress)
    return StagedArtifact(
        storage_location=location,
        digest=digest,
        signature=metadata.signature,
        evidence={"flavors": list(metadata.flavors)},
    )
