"""Uploading a model from the caller's machine: the tree, checked, then streamed as a tar archive.

Only regular files and directories are sent; a symlink or special file is refused here, as the
server would refuse it. The archive is generated on the fly (headers, file bytes, padding), so
memory stays flat whatever the model's size.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from calabi.cli.http import ApiError

__all__ = ["LocalTree", "local_tree", "tar_chunks"]

_BLOCK = 512
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LocalTree:
    """The files of a local model: ``(relative posix path, path, size)``, sorted, and their total size."""

    name: str
    files: list[tuple[str, Path, int]]
    size: int


def _refused(path: str, why: str) -> ApiError:
    return ApiError("INVALID_PARAMETER_VALUE", f"cannot upload '{path}': {why}")


def local_tree(path: str) -> LocalTree:
    """List a local file or directory to upload; a clear error for anything that cannot be sent."""
    root = Path(path).expanduser()
    try:
        mode = os.lstat(root).st_mode
    except FileNotFoundError:
        raise _refused(path, "no such file or directory on this machine") from None
    except OSError as exc:
        raise _refused(path, exc.strerror or str(exc)) from None
    files: list[tuple[str, Path, int]] = []
    if stat.S_ISREG(mode):
        files.append((root.name, root, os.stat(root).st_size))
    elif stat.S_ISDIR(mode):
        _walk(path, root, "", files)
    else:
        raise _refused(path, "neither a regular file nor a directory")
    if not files:
        raise _refused(path, "it holds no file")
    files.sort(key=lambda item: item[0])
    return LocalTree(root.resolve().name or "model", files, sum(size for _rel, _path, size in files))


def _walk(source: str, directory: Path, prefix: str, files: list[tuple[str, Path, int]]) -> None:
    try:
        with os.scandir(directory) as scan:
            entries = list(scan)
    except OSError as exc:
        raise _refused(source, f"'{prefix or '.'}' is not readable ({exc.strerror})") from None
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        if entry.is_symlink():
            raise _refused(source, f"'{rel}' is a symlink; copy its target into the directory instead")
        if entry.is_dir(follow_symlinks=False):
            _walk(source, Path(entry.path), f"{rel}/", files)
        elif entry.is_file(follow_symlinks=False):
            if not os.access(entry.path, os.R_OK):
                raise _refused(source, f"'{rel}' is not readable")
            files.append((rel, Path(entry.path), entry.stat(follow_symlinks=False).st_size))
        else:
            raise _refused(source, f"'{rel}' is a special file")


def tar_chunks(tree: LocalTree, progress: Callable[[int], None]) -> Iterator[bytes]:
    """The tar archive of ``tree``, in chunks; ``progress`` gets the file bytes sent."""
    for rel, path, size in tree.files:
        info = tarfile.TarInfo(rel)
        info.size, info.mode = size, 0o644
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        sent = 0
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(min(_CHUNK, size - sent)):
                    sent += len(chunk)
                    yield chunk
                    progress(len(chunk))
        except OSError as exc:
            raise _refused(str(path), exc.strerror or str(exc)) from None
        if sent != size:
            raise _refused(str(path), f"'{rel}' changed size while it was sent")
        if size % _BLOCK:
            yield b"\0" * (_BLOCK - size % _BLOCK)
    yield b"\0" * (2 * _BLOCK)
