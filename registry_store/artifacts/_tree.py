"""Artifact-tree helpers: validated relative paths, sorted file walks, chunked copies."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from registry_store.errors import InvalidParameterError

__all__ = ["CHUNK_SIZE", "MAX_TREE_DEPTH", "ProgressCallback", "copy_stream", "safe_relpath", "tree_files"]

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes just written (increments, not totals)."""

CHUNK_SIZE = 1024 * 1024
MAX_TREE_DEPTH = 256
"""Directories nested deeper than this are refused (a clean 400 instead of exhausting the stack or PATH_MAX)."""


def safe_relpath(value: str, what: str = "path") -> PurePosixPath:
    """Validate a relative posix path: no NUL, not absolute, no empty, ``.`` or ``..`` segments."""
    if not value or "\x00" in value:
        raise InvalidParameterError(f"Invalid {what} {value!r}: must be a non-empty relative path")
    if value.startswith("/"):
        raise InvalidParameterError(f"Invalid {what} {value!r}: must be relative")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidParameterError(f"Invalid {what} {value!r}: empty, '.' or '..' segments are not allowed")
    return PurePosixPath(*parts)


def tree_files(path: Path) -> list[tuple[str, Path]]:
    """List the regular files below ``path`` as ``(relative posix path, path)``, sorted by relative path.

    A single file is listed under its own name. Symlinks and special files are refused.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise InvalidParameterError(f"Artifact path '{path}' does not exist") from None
    if stat.S_ISREG(mode):
        return [(path.name, path)]
    if not stat.S_ISDIR(mode):
        raise InvalidParameterError(f"Artifact path '{path}' is neither a regular file nor a directory")
    found: list[tuple[str, Path]] = []
    pending: list[tuple[Path, str]] = [(path, "")]
    while pending:  # iterative: a deep tree must not exhaust the stack
        directory, prefix = pending.pop()
        if prefix.count("/") >= MAX_TREE_DEPTH:
            raise InvalidParameterError(f"Artifact tree '{path}' is nested deeper than {MAX_TREE_DEPTH} directories")
        with os.scandir(directory) as scan:
            entries = list(scan)
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_symlink():
                raise InvalidParameterError(f"Artifact tree '{directory}' contains a symlink: '{rel}'")
            if entry.is_dir(follow_symlinks=False):
                pending.append((Path(entry.path), f"{rel}/"))
            elif entry.is_file(follow_symlinks=False):
                found.append((rel, Path(entry.path)))
            else:
                raise InvalidParameterError(f"Artifact tree '{directory}' contains a special file: '{rel}'")
    found.sort(key=lambda item: item[0])
    return found


def copy_stream(source: BinaryIO, target: BinaryIO, progress: ProgressCallback | None = None) -> int:
    """Copy ``source`` to ``target`` in chunks, reporting each chunk to ``progress``; return bytes copied."""
    total = 0
    while chunk := source.read(CHUNK_SIZE):
        target.write(chunk)
        total += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return total
