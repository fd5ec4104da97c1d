"""Content digests of an artifact tree: the bytes behind invariant 3."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from registry_store.artifacts._tree import tree_files

__all__ = ["file_sha256", "manifest_digest", "tree_digest", "tree_manifest"]


def file_sha256(path: Path) -> str:
    """The hex sha256 of one file, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tree_manifest(path: Path) -> dict[str, str]:
    """``{relative posix path: hex sha256}`` of every file of a tree (a single file counts as a tree).

    Symlinks and special files are refused (InvalidParameterError).
    """
    return {rel: file_sha256(file) for rel, file in tree_files(path)}


def manifest_digest(manifest: Mapping[str, str]) -> str:
    """``sha256:<hex>`` over the sorted paths and content hashes of a manifest.

    Each file contributes ``<path> NUL <hex sha256> LF``; paths cannot contain NUL, so the
    encoding is unambiguous.
    """
    outer = hashlib.sha256()
    for rel in sorted(manifest):
        outer.update(rel.encode("utf-8", "surrogateescape"))
        outer.update(b"\x00")
        outer.update(manifest[rel].encode("ascii"))
        outer.update(b"\n")
    return f"sha256:{outer.hexdigest()}"


def tree_digest(path: Path) -> str:
    """The digest of a tree: :func:`manifest_digest` of its :func:`tree_manifest`.

    ``model.pkl`` and a directory containing only ``model.pkl`` have the same digest.
    """
    return manifest_digest(tree_manifest(path))
