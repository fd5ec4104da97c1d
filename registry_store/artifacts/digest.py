"""Content digest of an artifact tree: the bytes behind invariant 3."""

from __future__ import annotations

import hashlib
from pathlib import Path

from registry_store.artifacts._tree import tree_files

__all__ = ["file_sha256", "tree_digest"]


def file_sha256(path: Path) -> str:
    """The hex sha256 of one file, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tree_digest(path: Path) -> str:
    """``sha256:<hex>`` over the sorted relative posix paths and content hashes of a tree.

    Each file contributes ``<path> NUL <hex sha256> LF``; paths cannot contain NUL, so the
    encoding is unambiguous. A single file counts as a tree holding just that file, so
    ``model.pkl`` and a directory containing only ``model.pkl`` have the same digest.
    Symlinks and special files are refused (InvalidParameterError).
    """
    outer = hashlib.sha256()
    for rel, file in tree_files(path):
        outer.update(rel.encode("utf-8", "surrogateescape"))
        outer.update(b"\x00")
        outer.update(file_sha256(file).encode("ascii"))
        outer.update(b"\n")
    return f"sha256:{outer.hexdigest()}"
