"""The registry's own artifact store: a local directory or an S3 prefix.

Locations are URIs the store hands out from ``put_tree`` and ``put_staged`` (``file:///…`` or
``s3://bucket/prefix/…``); every other method accepts only locations inside the store.

Registration assembles a tree in ``staging()`` and hands it to ``put_staged``: the local store
stages inside its root (``<root>/:staging/``, a name no model can have) and renames the finished
tree into place, so the bytes are written once and the location appears whole or not at all;
the S3 store stages in a temporary directory and uploads from it.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from registry_store.artifacts._s3 import classify_error, make_s3_client, parse_s3_uri
from registry_store.artifacts._tree import CHUNK_SIZE, ProgressCallback, copy_stream, safe_relpath, tree_files
from registry_store.errors import (
    AlreadyExistsError,
    InvalidParameterError,
    NotFoundError,
    RegistryError,
    UnavailableError,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ArtifactStore", "LocalArtifactStore", "RemovedTree", "S3ArtifactStore", "StoredTree", "make_artifact_store",
]

_DELETE_BATCH = 1000
_ARTIFACT_ID = re.compile(r"[0-9a-f]{32}")
"""A version tree's directory name (``uuid4().hex``, see ``registry_store.registration``)."""
_STAGING_DIR = ":staging"
"""Below a local store's root; model names cannot contain ':', so no model's directory has this name."""


class ArtifactStore(Protocol):
    """Where the registry keeps its own copy of every version's artifacts."""

    stages_in_place: bool
    """True when ``staging()`` directories lie inside the store and ``put_staged`` only renames: the
    writes into the staging directory are then the store's writes (report those as progress)."""

    def put_tree(self, local_dir: Path, key: str, progress: ProgressCallback | None = None) -> str:
        """Copy a tree (or one file) under ``key``; return the location URI. Empty trees are refused."""
        ...

    def staging(self) -> AbstractContextManager[Path]:
        """A new empty local directory to assemble a tree in for ``put_staged``; removed (with whatever
        is still in it) when the block ends."""
        ...

    def put_staged(self, staged: Path, key: str, progress: ProgressCallback | None = None) -> str:
        """Store the tree assembled in ``staged`` (a ``staging()`` directory) under ``key``, like
        ``put_tree``; the local store moves it into place, so ``staged`` is gone afterwards."""
        ...

    def delete(self, location: str) -> None:
        """Remove the tree at ``location``; a missing tree is fine."""
        ...

    def swept_away(self, location: str) -> bool:
        """Whether the orphan sweep has taken the tree at ``location`` (asked by a registration before it
        records the version, in the transaction the sweep's own check runs in)."""
        ...

    def list_files(self, location: str) -> list[tuple[str, int]]:
        """``(relative posix path, size)`` of every file at ``location``, sorted by path."""
        ...

    def open_file(self, location: str, relpath: str) -> BinaryIO:
        """Open one file of the tree at ``location`` for reading."""
        ...

    def download_tree(self, location: str, dest: Path, progress: ProgressCallback | None = None) -> None:
        """Copy the tree at ``location`` into the directory ``dest`` (created if missing)."""
        ...


def make_artifact_store(artifact_root: str, s3_endpoint_url: str | None) -> ArtifactStore:
    """``s3://bucket/prefix`` gives an S3 store, anything else a local directory (created by its first write)."""
    if artifact_root.startswith("s3://"):
        bucket, prefix = parse_s3_uri(artifact_root)
        return S3ArtifactStore(bucket, prefix, make_s3_client(s3_endpoint_url))
    if artifact_root.startswith("file:"):
        return LocalArtifactStore(Path(unquote(urlsplit(artifact_root).path)))
    return LocalArtifactStore(Path(artifact_root))


def _foreign(location: str) -> InvalidParameterError:
    return InvalidParameterError(f"Location '{location}' is not inside this artifact store")


class LocalArtifactStore:
    """Artifact trees as directories below ``root``; locations are ``file://`` URIs."""

    stages_in_place = True

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self._staging_root = self.root / _STAGING_DIR

    @property
    def root_uri(self) -> str:
        """The URI every location of this store starts with (followed by ``/<key>``)."""
        return self.root.as_uri()

    def put_tree(self, local_dir: Path, key: str, progress: ProgressCallback | None = None) -> str:
        """Copy ``local_dir`` to ``<root>/<key>``; return its ``file://`` URI."""
        target = self.root.joinpath(*safe_relpath(key, "artifact key").parts)
        files = tree_files(local_dir)
        if not files:
            raise InvalidParameterError(f"Artifact tree '{local_dir}' is empty")
        if os.path.lexists(target):
            raise AlreadyExistsError(f"Artifact location '{target.as_uri()}' exists already")
        try:
            for rel, source in files:
                out = target.joinpath(*rel.split("/"))
                out.parent.mkdir(parents=True, exist_ok=True)
                with source.open("rb") as fin, out.open("xb") as fout:
                    copy_stream(fin, fout, progress)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return target.as_uri()

    def sweep_staging(self, older_than_s: float) -> list[RemovedTree]:
        """Remove what killed registrations and uploads left in the staging area: every entry in which
        nothing was written for ``older_than_s`` (the newest modification anywhere in it counts, so a
        long upload into an old directory is not taken). What was removed, with sizes."""
        cutoff = time.time() - older_than_s
        try:
            entries = list(os.scandir(self._staging_root))
        except FileNotFoundError:
            return []
        removed: list[RemovedTree] = []
        for entry in entries:
            path = Path(entry.path)
            if _last_written(path) < cutoff:
                removed.append(RemovedTree(str(path), _discard(path)))
        return removed

    def stored_trees(self) -> list[StoredTree]:
        """The version trees below the root: ``<root>/<model>/<artifact id>`` (an id as ``put_staged`` makes it)."""
        found: list[StoredTree] = []
        try:
            models = [entry for entry in os.scandir(self.root) if entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        for model in models:
            if model.name.startswith(":"):  # the staging area; model names cannot contain ':'
                continue
            for entry in os.scandir(model.path):
                if _ARTIFACT_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    found.append(StoredTree(model.name, entry.name, Path(entry.path).as_uri()))
        return found

    def last_written(self, tree: StoredTree) -> float:
        """The newest modification time (epoch seconds) of anything in ``tree``."""
        return _last_written(self._path(tree.location))

    def retire(self, tree: StoredTree) -> Callable[[], int] | None:
        """Take ``tree`` out of its location now (one rename into the staging area); None when it is gone
        already, else a function that deletes it (outside the caller's transaction) and returns its bytes.
        A crash in between leaves it to the staging sweep."""
        target = self._staging_root / f"orphan-{tree.artifact_id}-{uuid.uuid4().hex[:8]}"
        self._staging_root.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self._path(tree.location), target)
        except FileNotFoundError:
            return None
        return partial(_discard, target)

    def swept_away(self, location: str) -> bool:
        """Whether the tree at ``location`` is no longer there."""
        return not os.path.isdir(self._path(location))

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A new directory in ``<root>/:staging/`` (same filesystem as the store, so it can be renamed in)."""
        path = self._staging_root / uuid.uuid4().hex
        try:
            path.mkdir()
        except FileNotFoundError:
            self._staging_root.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        try:
            yield path
        finally:
            if os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)

    def put_staged(self, staged: Path, key: str, progress: ProgressCallback | None = None) -> str:
        """Rename the staged tree to ``<root>/<key>`` (one atomic step); return its ``file://`` URI.

        ``progress`` is not called: the bytes were written while staging. Symlinks, special files and
        trees without files are refused, as by ``put_tree``; an existing location is never replaced.
        """
        target = self.root.joinpath(*safe_relpath(key, "artifact key").parts)
        if staged.parent != self._staging_root or staged.is_symlink() or not staged.is_dir():
            raise ValueError(f"'{staged}' is not a staging directory of this store")
        if not tree_files(staged):
            raise InvalidParameterError(f"Artifact tree '{staged}' is empty")
        if os.path.lexists(target):
            raise AlreadyExistsError(f"Artifact location '{target.as_uri()}' exists already")
        try:
            _rename_into(staged, target)  # onto a non-empty directory or a file it fails: nothing is overwritten
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise AlreadyExistsError(f"Artifact location '{target.as_uri()}' exists already") from None
            if exc.errno != errno.EXDEV:
                raise
            return self.put_tree(staged, key, progress)  # the model's directory is another mount: copy
        return target.as_uri()

    def delete(self, location: str) -> None:
        """Remove the tree at ``location``; missing is fine, outside the root is refused."""
        path = self._path(location)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass

    def list_files(self, location: str) -> list[tuple[str, int]]:
        """Files at ``location`` with their sizes."""
        return [(rel, path.stat().st_size) for rel, path in self._files(location)]

    def open_file(self, location: str, relpath: str) -> BinaryIO:
        """Open ``relpath`` below ``location``; traversal and non-files are refused."""
        base = self._path(location)
        candidate = Path(os.path.realpath(base.joinpath(*safe_relpath(relpath, "artifact path").parts)))
        if not candidate.is_relative_to(base):
            raise InvalidParameterError(f"Artifact path '{relpath}' leaves its location")
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"Artifact file '{relpath}' not found at '{location}'") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotFoundError(f"Artifact file '{relpath}' not found at '{location}'")
        return os.fdopen(fd, "rb")

    def download_tree(self, location: str, dest: Path, progress: ProgressCallback | None = None) -> None:
        """Copy the tree at ``location`` into ``dest``."""
        for rel, source in self._files(location):
            out = dest.joinpath(*rel.split("/"))
            out.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as fin, out.open("wb") as fout:
                copy_stream(fin, fout, progress)

    def _files(self, location: str) -> list[tuple[str, Path]]:
        path = self._path(location)
        if not os.path.lexists(path):
            raise NotFoundError(f"No artifacts at '{location}'")
        if path.is_file():
            return [(path.name, path)]
        return tree_files(path)

    def _path(self, location: str) -> Path:
        """The real path of a location, which must lie strictly below the root."""
        if location.startswith("file:"):
            try:
                parts = urlsplit(location)
            except ValueError:
                raise _foreign(location) from None
            if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
                raise _foreign(location)
            raw = unquote(parts.path)
        else:
            raw = location
        if "\x00" in raw or not raw.startswith("/") or ".." in raw.split("/"):
            raise _foreign(location)
        path = Path(os.path.realpath(raw))
        if path == self.root or not path.is_relative_to(self.root):
            raise _foreign(location)
        return path


@dataclass(frozen=True)
class StoredTree:
    """One version tree of a store: ``<root>/<model>/<artifact_id>`` at ``location``."""

    model: str
    artifact_id: str
    location: str


@dataclass(frozen=True)
class RemovedTree:
    """What the sweep removed (a staging path or a tree's location), and how many bytes it held."""

    location: str
    size: int


def _last_written(path: Path) -> float:
    """The newest ``st_mtime`` of ``path`` and everything below it (symlinks not followed)."""
    newest = os.lstat(path).st_mtime
    for directory, subdirs, files in os.walk(path):
        for name in (*subdirs, *files):
            with suppress(FileNotFoundError):
                newest = max(newest, os.lstat(os.path.join(directory, name)).st_mtime)
    return newest


def _discard(path: Path) -> int:
    """Remove a file or tree; the bytes its files held."""
    if path.is_symlink() or not path.is_dir():
        size = os.lstat(path).st_size
        path.unlink(missing_ok=True)
        return size
    size = 0
    for directory, _subdirs, files in os.walk(path):
        for name in files:
            with suppress(FileNotFoundError):
                size += os.lstat(os.path.join(directory, name)).st_size
    shutil.rmtree(path, ignore_errors=True)
    return size


def _rename_into(staged: Path, target: Path) -> None:
    try:
        os.rename(staged, target)
    except FileNotFoundError:  # the model's first version: its directory is made once
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, target)


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore ``StreamingBody`` so it can be buffered as a BinaryIO."""

    def __init__(self, body: StreamingBody) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3ArtifactStore:
    """Artifact trees below ``s3://bucket/prefix``; locations are ``s3://`` URIs."""

    stages_in_place = False

    def __init__(self, bucket: str, prefix: str, client: S3Client) -> None:
        self.bucket = bucket
        stripped = prefix.strip("/")
        self.prefix = str(safe_relpath(stripped, "artifact prefix")) if stripped else ""
        self.client = client

    @property
    def root_uri(self) -> str:
        """The URI every location of this store starts with (followed by ``/<key>``)."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def put_tree(self, local_dir: Path, key: str, progress: ProgressCallback | None = None) -> str:
        """Upload ``local_dir`` to ``<prefix>/<key>/``; return its ``s3://`` URI."""
        rel_key = str(safe_relpath(key, "artifact key"))
        base = f"{self.prefix}/{rel_key}" if self.prefix else rel_key
        location = f"s3://{self.bucket}/{base}"
        files = tree_files(local_dir)
        if not files:
            raise InvalidParameterError(f"Artifact tree '{local_dir}' is empty")
        with self._errors(location):
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{base}/", MaxKeys=1)
            if listed.get("KeyCount", 0):
                raise AlreadyExistsError(f"Artifact location '{location}' exists already")
            try:
                for rel, source in files:
                    self.client.upload_file(str(source), self.bucket, f"{base}/{rel}", Callback=progress)
            except BaseException:
                with suppress(BotoCoreError, ClientError, RegistryError):
                    self._delete_prefix(f"{base}/")
                raise
        return location

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A temporary local directory; ``put_staged`` uploads from it."""
        with tempfile.TemporaryDirectory(prefix="calabi-stage-") as tmp:
            yield Path(tmp)

    def put_staged(self, staged: Path, key: str, progress: ProgressCallback | None = None) -> str:
        """Upload the staged tree to ``<prefix>/<key>/`` (``put_tree``)."""
        return self.put_tree(staged, key, progress)

    def sweep_staging(self, older_than_s: float) -> list[RemovedTree]:
        """Nothing: an S3 store stages in the host's temporary directory, shared with other processes."""
        return []

    def stored_trees(self) -> list[StoredTree]:
        """The version trees below the prefix: ``<prefix>/<model>/<artifact id>/``."""
        base = f"{self.prefix}/" if self.prefix else ""
        found: list[StoredTree] = []
        with self._errors(f"s3://{self.bucket}/{base}"):
            for model_prefix in self._common_prefixes(base):
                model = model_prefix[len(base) : -1]
                for tree_prefix in self._common_prefixes(model_prefix):
                    artifact_id = tree_prefix[len(model_prefix) : -1]
                    if _ARTIFACT_ID.fullmatch(artifact_id):
                        found.append(StoredTree(model, artifact_id, f"s3://{self.bucket}/{tree_prefix[:-1]}"))
        return found

    def last_written(self, tree: StoredTree) -> float:
        """The newest ``LastModified`` (epoch seconds) of the tree's objects."""
        key = self._key(tree.location)
        newest = 0.0
        with self._errors(tree.location):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{key}/"):
                for item in page.get("Contents", []):
                    newest = max(newest, item["LastModified"].timestamp())
        return newest

    def retire(self, tree: StoredTree) -> Callable[[], int] | None:
        """Delete the tree's objects now (in the caller's transaction); None when there were none, else a
        function returning the bytes they held."""
        key = self._key(tree.location)
        with self._errors(tree.location):
            objects = list(self._objects(f"{key}/"))
            if not objects:
                return None
            self._delete_prefix(f"{key}/")
        size = sum(item_size for _name, item_size in objects)
        return lambda: size

    def swept_away(self, location: str) -> bool:
        """Whether no object is left below ``location`` (one listing request)."""
        key = self._key(location)
        with self._errors(location):
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{key}/", MaxKeys=1)
        return not listed.get("KeyCount", 0)

    def _common_prefixes(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"]

    def delete(self, location: str) -> None:
        """Delete every object below ``location``; missing is fine, outside the prefix is refused."""
        key = self._key(location)
        with self._errors(location):
            self._delete_prefix(f"{key}/")

    def list_files(self, location: str) -> list[tuple[str, int]]:
        """Objects below ``location`` as relative paths with sizes."""
        key = self._key(location)
        with self._errors(location):
            found = sorted(self._objects(f"{key}/"))
        if not found:
            raise NotFoundError(f"No artifacts at '{location}'")
        return found

    def open_file(self, location: str, relpath: str) -> BinaryIO:
        """Stream one object below ``location``."""
        key = f"{self._key(location)}/{safe_relpath(relpath, 'artifact path')}"
        with self._errors(location, missing=f"Artifact file '{relpath}' not found at '{location}'"):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        return io.BufferedReader(_BodyReader(response["Body"]), buffer_size=CHUNK_SIZE)

    def download_tree(self, location: str, dest: Path, progress: ProgressCallback | None = None) -> None:
        """Download every object below ``location`` into ``dest``."""
        key = self._key(location)
        for rel, _size in self.list_files(location):
            out = dest.joinpath(*safe_relpath(rel, "artifact path").parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with self._errors(location):
                self.client.download_file(self.bucket, f"{key}/{rel}", str(out), Callback=progress)

    def _objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) :]
                if name and not name.endswith("/"):
                    yield name, item.get("Size", 0)

    def _delete_prefix(self, prefix: str) -> None:
        keys = [f"{prefix}{name}" for name, _size in self._objects(prefix)]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            if errors := response.get("Errors"):
                raise RegistryError(f"Could not delete {len(errors)} artifact objects below '{prefix}'")

    def _key(self, location: str) -> str:
        """The object key prefix of a location, which must lie strictly below the store prefix."""
        try:
            bucket, key = parse_s3_uri(location)
            key = str(safe_relpath(key.rstrip("/"), "location"))
        except InvalidParameterError:
            raise _foreign(location) from None
        if bucket != self.bucket or (self.prefix and not key.startswith(f"{self.prefix}/")):
            raise _foreign(location)
        return key

    @contextmanager
    def _errors(self, location: str, missing: str | None = None) -> Iterator[None]:
        """Translate boto errors: the registry's own bucket failing is a server-side problem."""
        try:
            yield
        except S3UploadFailedError as exc:
            raise RegistryError(f"Upload to the artifact store failed for '{location}': {exc}") from exc
        except (BotoCoreError, ClientError) as exc:
            kind = classify_error(exc)
            if kind == "not_found" and missing is not None:
                raise NotFoundError(missing) from exc
            if kind in ("unreachable", "server"):
                raise UnavailableError(f"Artifact store S3 endpoint unavailable ({location}): {exc}") from exc
            raise RegistryError(f"Artifact store S3 error for '{location}' ({kind}): {exc}") from exc
