"""Artifact layer: the registry's own store, source fetching, digests and MLmodel metadata."""

from __future__ import annotations

from registry_store.artifacts._s3 import make_s3_client
from registry_store.artifacts._tree import ProgressCallback
from registry_store.artifacts.digest import file_sha256, manifest_digest, stream_sha256, tree_digest, tree_manifest
from registry_store.artifacts.mlmodel import MLMODEL_FILE, ModelMetadata, read_model_metadata
from registry_store.artifacts.sources import (
    TRACKING_SCHEMES,
    S3ClientFactory,
    SourceFacts,
    SourceFetcher,
    TrackingResolver,
)
from registry_store.artifacts.store import (
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    make_artifact_store,
)

__all__ = [
    "MLMODEL_FILE",
    "TRACKING_SCHEMES",
    "ArtifactStore",
    "LocalArtifactStore",
    "ModelMetadata",
    "ProgressCallback",
    "S3ArtifactStore",
    "S3ClientFactory",
    "SourceFacts",
    "SourceFetcher",
    "TrackingResolver",
    "file_sha256",
    "make_artifact_store",
    "make_s3_client",
    "manifest_digest",
    "read_model_metadata",
    "stream_sha256",
    "tree_digest",
    "tree_manifest",
]
