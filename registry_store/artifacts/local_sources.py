"""Copying a local source below ``CALABI_LOCAL_SOURCE_ROOTS``, never the registry's own files.

The registry's private paths (data dir, artifact root, database, admin token, server key) are
refused however they are reached: by path, through a symlink (every file is checked by the real
path of its open descriptor) or through a hard link (its device and inode are compared with those
of the private files). The walk is iterative and bounded, so a deep tree is a 400, not a crash.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from registry_store.artifacts._tree import CHUNK_SIZE, MAX_TREE_DEPTH, ProgressCallback
from registry_store.errors import InvalidParameterError

__all__ = ["ROOTS_HINT", "LocalCopier", "private_inodes", "within"]

ROOTS_HINT = "local sources must be below CALABI_LOCAL_SOURCE_ROOTS"
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalised, as ``realpath`` gives them)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class LocalCopier:
    """Copies one local source (already checked against the roots) into a staging directory."""

    source: str
    roots: tuple[str, ...]
    private: tuple[str, ...]
    """Real paths never copied, nor anything below them."""
    secret: tuple[str, ...]
    """Real paths of the files (or directories of files) whose inodes are refused: hard links to them."""
    progress: ProgressCallback | None

    def copy(self, requested: Path, real: Path, dest: Path) -> dict[str, str]:
        """Copy the file or tree at ``real`` into ``dest``; ``{relative path: hex sha256}``."""
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            raise InvalidParameterError(f"Source '{self.source}' does not exist") from None
        except OSError as exc:
            raise InvalidParameterError(f"Source '{self.source}' is not readable: {exc.strerror}") from None
        inodes = private_inodes(self.secret, skipped=self.private)
        digests: dict[str, str] = {}
        if stat.S_ISREG(mode):
            digests[requested.name] = self._copy_file(real, dest / requested.name, requested.name, inodes)
        elif stat.S_ISDIR(mode):
            self._copy_tree(real, dest, digests, inodes)
        else:
            raise InvalidParameterError(f"Source '{self.source}' is neither a regular file nor a directory")
        if not digests:
            raise InvalidParameterError(f"Source '{self.source}' is empty or does not exist")
        return digests

    def allowed(self, real: str | Path) -> bool:
        """Whether ``real`` lies below one of the roots and outside the registry's private paths."""
        path = os.fspath(real)
        return any(within(path, root) for root in self.roots) and not any(within(path, p) for p in self.private)

    def _copy_tree(self, top: Path, dest: Path, digests: dict[str, str], inodes: frozenset[tuple[int, int]]) -> None:
        pending: list[tuple[Path, Path, str]] = [(top, dest, "")]
        while pending:
            directory, out_dir, prefix = pending.pop()
            if prefix.count("/") >= MAX_TREE_DEPTH:
                raise InvalidParameterError(
                    f"Source '{self.source}' is nested deeper than {MAX_TREE_DEPTH} directories: '{prefix}'"
                )
            try:
                with os.scandir(directory) as scan:
                    entries = sorted(scan, key=lambda entry: entry.name)
            except OSError as exc:
                raise InvalidParameterError(
                    f"Source '{self.source}' is not readable: '{prefix}' {exc.strerror}"
                ) from None
            for entry in entries:
                rel, out = f"{prefix}{entry.name}", out_dir / entry.name
                if entry.is_symlink():
                    target = Path(os.path.realpath(entry.path))
                    if not self.allowed(target):
                        raise InvalidParameterError(
                            f"Source '{self.source}' contains a symlink pointing outside the allowed roots or into "
                            f"the registry's own data: '{rel}'; {ROOTS_HINT}"
                        )
                    if target.is_dir():
                        raise InvalidParameterError(
                            f"Source '{self.source}' contains a symlink to a directory ('{rel}'); register its target"
                        )
                    digests[rel] = self._copy_file(target, out, rel, inodes)
                elif entry.is_dir(follow_symlinks=False):
                    out.mkdir()
                    pending.append((Path(entry.path), out, f"{rel}/"))
                elif entry.is_file(follow_symlinks=False):
                    digests[rel] = self._copy_file(Path(entry.path), out, rel, inodes)
                else:
                    raise InvalidParameterError(f"Source '{self.source}' contains a special file: '{rel}'")

    def _copy_file(self, path: Path, out: Path, rel: str, inodes: frozenset[tuple[int, int]]) -> str:
        """Copy one regular file, opened without following a final symlink and re-checked after open.

        Returns the hex sha256 of the bytes copied (hashed on the way: the file is read once).
        """
        try:
            fd = self._open_checked(path, rel, inodes)
        except FileNotFoundError:
            raise InvalidParameterError(f"Source '{self.source}': '{rel}' does not exist") from None
        except OSError as exc:
            raise InvalidParameterError(f"Source '{self.source}' is not readable: '{rel}' {exc.strerror}") from None
        with os.fdopen(fd, "rb", buffering=0) as fin:
            digest = hashlib.sha256()
            with out.open("xb") as fout:
                while True:
                    try:
                        chunk = fin.read(CHUNK_SIZE)
                    except OSError as exc:
                        raise InvalidParameterError(
                            f"Source '{self.source}' is not readable: '{rel}' {exc.strerror}"
                        ) from None
                    if not chunk:
                        break
                    fout.write(chunk)
                    digest.update(chunk)
                    if self.progress is not None:
                        self.progress(len(chunk))
        return digest.hexdigest()

    def _open_checked(self, path: Path, rel: str, inodes: frozenset[tuple[int, int]]) -> int:
        """A descriptor for reading ``path``, checked before any readable descriptor exists.

        On Linux the file is first opened with ``O_PATH`` and checked; only a file that passes is reopened
        for reading through ``/proc/self/fd`` (the same inode, so a swapped path cannot slip in). Closing a
        readable descriptor of the registry's own database would drop every POSIX lock SQLite holds on it in
        this process (locks belong to the process and inode), and the server's connections would then read
        stale snapshots; an ``O_PATH`` descriptor holds no lock and releases none.
        """
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        o_path = getattr(os, "O_PATH", 0)
        if not o_path:
            fd = os.open(path, flags)
            try:
                self._check_open(fd, rel, inodes)
            except BaseException:
                os.close(fd)
                raise
            return fd
        handle = os.open(path, o_path | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._check_open(handle, rel, inodes)
            return os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        finally:
            os.close(handle)

    def _check_open(self, fd: int, rel: str, inodes: frozenset[tuple[int, int]]) -> None:
        """Refuse special files, files resolving outside the roots or into private data, and hard links to it."""
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidParameterError(f"Source '{self.source}' contains a special file: '{rel}'")
        opened = _opened_path(fd)
        if (opened is not None and not self.allowed(opened)) or (info.st_dev, info.st_ino) in inodes:
            raise InvalidParameterError(
                f"Source '{self.source}': '{rel}' resolves outside the allowed roots or to the registry's own data"
            )


def private_inodes(secret: Sequence[str], *, skipped: Sequence[str]) -> frozenset[tuple[int, int]]:
    """``(st_dev, st_ino)`` of the secret files (a database with its side files) and of the files at most
    two levels below a secret directory (the data dir: tokens, keys, logs, tracking and Temporal state),
    not descending into the ``skipped`` directories (the artifact root: copies any viewer may read)."""
    found: set[tuple[int, int]] = set()
    for path in secret:
        candidates = [path + suffix for suffix in ("", *_SQLITE_SIDE_FILES)]
        if os.path.isdir(path):
            candidates = _files_below(path, [p for p in skipped if p != path])
        for candidate in candidates:
            try:
                info = os.stat(candidate, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found.add((info.st_dev, info.st_ino))
    return frozenset(found)


def _files_below(directory: str, skipped: list[str], depth: int = 2) -> list[str]:
    try:
        with os.scandir(directory) as scan:
            entries = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in scan]
    except OSError:
        return []
    files = [path for path, is_dir in entries if not is_dir]
    if depth > 1:
        for path, is_dir in entries:
            if is_dir and path not in skipped:
                files += _files_below(path, skipped, depth - 1)
    return files


def _opened_path(fd: int) -> Path | None:
    """The real path of an open descriptor on Linux (guards against swapped parents); None elsewhere."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return Path(target) if target.startswith("/") else None
