"""Content digests of an artifact tree: the bytes behind invariant 3."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from policies.identity import manifest_digest
from registry_store.artifacts._tree import CHUNK_SIZE, tree_files

__all__ = ["file_sha256", "manifest_digest", "stream_sha256", "tree_digest", "tree_manifest"]


def file_sha256(path: Path) -> str:
    """The hex sha256 of one file, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def stream_sha256(source: BinaryIO, copy_to: BinaryIO | None = None) -> tuple[str, int]:
    """The hex sha256 and size of ``source`` read in chunks (bounded memory), written to ``copy_to`` on the way."""
    hasher, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK_SIZE):
        hasher.update(chunk)
        size += len(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return hasher.hexdigest(), size


def tree_manifest(path: Path) -> dict[str, str]:
    """``{relative posix path: hex sha256}`` of every file of a tree (a single file counts as a tree).

    Symlinks and special files are refused (InvalidParameterError).
    """
    return {rel: file_sha256(file) for rel, file in tree_files(path)}


def tree_digest(path: Path) -> str:
    """The digest of a tree: :func:`manifest_digest` of its :func:`tree_manifest`.

    ``model.pkl`` and a directory containing only ``model.pkl`` have the same digest.
    """
    return manifest_digest(tree_manifest(path))
