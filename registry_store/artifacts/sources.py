"""Fetching a registration's source artifacts (``s3://``, allowed local paths, tracking URIs).

Local sources are confined to the operator's ``CALABI_LOCAL_SOURCE_ROOTS`` (compared by
real path), so no client can make the server copy its own files. On any failure the
destination is emptied again. Local and S3 copies are hashed on the way (``SourceFacts.file_digests``),
so the copy need not be read again to digest it.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from registry_store.artifacts._s3 import classify_error, make_s3_client, parse_s3_uri
from registry_store.artifacts._tree import ProgressCallback, safe_relpath
from registry_store.artifacts.digest import file_sha256
from registry_store.artifacts.local_sources import ROOTS_HINT, LocalCopier, within
from registry_store.errors import InvalidParameterError, RegistryError, UnavailableError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["TRACKING_SCHEMES", "S3ClientFactory", "SourceFacts", "SourceFetcher", "TrackingResolver"]

TRACKING_SCHEMES = frozenset({"runs", "models", "mlflow-artifacts"})
"""Schemes only the MLflow tracking gateway can resolve."""


@dataclass(frozen=True)
class SourceFacts:
    """What a fetch learnt besides the files: the copy's digests, and what a tracking source says about itself."""

    run_id: str = ""
    """The run that produced the artifact (a logged model's ``source_run_id``)."""
    model_id: str = ""
    """The MLflow logged model (``m-…``) the artifact belongs to."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """Snapshotted numbers: ``run_metrics``, ``run_params``, ``model_metrics``."""
    require_mlmodel: bool = False
    """The source claims to be an MLflow model, so an ``MLmodel`` file must be present."""
    file_digests: dict[str, str] | None = None
    """``{relative posix path: hex sha256}`` of every file copied, hashed while copying (local and S3
    sources); None when the copier did not hash (tracking sources): digest the copy itself."""


TrackingResolver = Callable[[str, Path, ProgressCallback | None], SourceFacts]
"""``(source, dest, progress)``: copy a tracking-server source into the empty directory ``dest``."""

S3ClientFactory = Callable[[str | None], "S3Client"]
"""Builds an S3 client for an endpoint URL (None: the default AWS endpoint)."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class SourceFetcher:
    """Copies a version's source artifacts into a local staging directory."""

    def __init__(
        self,
        local_roots: Sequence[Path] = (),
        s3_endpoint_url: str | None = None,
        *,
        s3_client_factory: S3ClientFactory | None = None,
        tracking_resolver: TrackingResolver | None = None,
        private_paths: Sequence[Path] = (),
        secret_paths: Sequence[Path] = (),
    ) -> None:
        # Real paths, compared as strings (pathlib's comparisons are slow on the registration path).
        self._roots = tuple(os.path.realpath(root) for root in local_roots)
        self._private = tuple(os.path.realpath(path) for path in private_paths)
        """The registry's own data (data dir, artifact root): never a source, nor inside or around one."""
        self._secret = tuple(os.path.realpath(path) for path in secret_paths)
        """Files (the database) and directories of files (the data dir) whose hard links are refused too."""
        self._local_slot = threading.Lock()
        self.s3_endpoint_url = s3_endpoint_url
        self.tracking_resolver = tracking_resolver
        self._s3_client_factory: S3ClientFactory = s3_client_factory or make_s3_client
        self._s3_client: S3Client | None = None

    def fetch(self, source: str, dest: Path, progress: ProgressCallback | None = None) -> SourceFacts:
        """Copy ``source`` into ``dest`` (missing or empty); a single file lands as ``dest/<name>``.

        ``progress`` gets byte increments; for S3 it may be called from transfer threads.
        Raises InvalidParameterError for refused, missing, empty or unreadable sources and
        UnavailableError when S3 cannot be reached; ``dest`` is left empty on failure. Local and
        S3 copies come back with ``file_digests`` (the manifest of ``dest``).
        """
        copy = self._plan(source)
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise ValueError(f"Fetch destination '{dest}' must be empty")
        try:
            return copy(dest, progress) or SourceFacts()
        except BaseException:
            _empty_directory(dest)
            raise

    def slot(self, source: str) -> AbstractContextManager[object]:
        """Hold this while staging ``source``: local sources stage one at a time in this process.

        A local staging is CPU-bound, so under the GIL several cannot overlap anyway, and side by side
        their many short system calls only trade the GIL back and forth between threads (8 concurrent
        local registrations: about 530 a second side by side, 630 one at a time). S3 and tracking
        sources wait on the network and stage concurrently. A throughput device only: nothing
        depends on it for correctness.
        """
        return self._local_slot if source.startswith("/") or _scheme(source) == "file" else nullcontext()

    def _plan(self, source: str) -> Callable[[Path, ProgressCallback | None], SourceFacts | None]:
        """Validate ``source`` and pick the copier, before anything touches ``dest``."""
        if not source or "\x00" in source:
            raise InvalidParameterError("Source must be a non-empty URI or path without NUL bytes")
        if source.startswith("/"):
            path, real = self._local_path(source, source)
            return lambda dest, progress: self._copy_local(source, path, real, dest, progress)
        scheme = _scheme(source)
        if scheme == "s3":
            bucket, key = parse_s3_uri(source)
            return lambda dest, progress: self._copy_s3(source, bucket, key, dest, progress)
        if scheme == "file":
            path, real = self._local_path(source, _file_uri_path(source))
            return lambda dest, progress: self._copy_local(source, path, real, dest, progress)
        if scheme in TRACKING_SCHEMES:
            resolver = self.tracking_resolver
            if resolver is None:
                raise InvalidParameterError(
                    f"Source '{source}' uses the '{scheme}' scheme, which needs the MLflow tracking "
                    "gateway; no tracking gateway is configured (CALABI_MLFLOW_TRACKING_URL)"
                )
            return lambda dest, progress: resolver(source, dest, progress)
        if scheme in ("http", "https"):
            raise InvalidParameterError(
                f"Source '{source}' is an {scheme} URL; the registry does not fetch arbitrary URLs: use s3://, "
                "runs:/, models:/m-…, mlflow-artifacts:/ or an absolute path"
            )
        if not scheme:
            raise InvalidParameterError(f"Source '{source}' is a relative path; {ROOTS_HINT} (absolute paths)")
        raise InvalidParameterError(
            f"Source scheme '{scheme}' is not supported: use s3://, file:// or an absolute path "
            f"({ROOTS_HINT}); runs:/, models:/ and mlflow-artifacts:/ need the MLflow tracking gateway "
            "(CALABI_MLFLOW_TRACKING_URL)"
        )

    # -- local -----------------------------------------------------------------------------

    def _local_path(self, source: str, raw: str) -> tuple[Path, Path]:
        """The requested absolute path and its real path, checked against the roots.

        The copy scans the real path; every file is checked again once it is open (``_copy_file``),
        so a parent swapped for a symlink after this check cannot lead outside the roots.
        """
        if "\x00" in raw or not raw.startswith("/") or ".." in raw.split("/"):
            raise InvalidParameterError(
                f"Source '{source}' must be an absolute path without '..' segments; {ROOTS_HINT}"
            )
        if not self._roots:
            raise InvalidParameterError(
                f"Local source '{source}' refused: {ROOTS_HINT}, and CALABI_LOCAL_SOURCE_ROOTS is not set"
            )
        real = os.path.realpath(raw)
        if not any(within(real, root) for root in self._roots):
            raise InvalidParameterError(f"Local source '{source}' refused: {ROOTS_HINT}")
        for private in self._private:
            if within(real, private) or within(private, real):
                raise InvalidParameterError(
                    f"Local source '{source}' refused: it overlaps the registry's own data ({private})"
                )
        return Path(raw), Path(real)

    def _copy_local(
        self, source: str, requested: Path, real: Path, dest: Path, progress: ProgressCallback | None
    ) -> SourceFacts:
        copier = LocalCopier(source, self._roots, self._private, self._secret, progress)
        return SourceFacts(file_digests=copier.copy(requested, real, dest))

    # -- S3 --------------------------------------------------------------------------------

    def _client(self) -> S3Client:
        if self._s3_client is None:
            self._s3_client = self._s3_client_factory(self.s3_endpoint_url)
        return self._s3_client

    def _copy_s3(
        self, source: str, bucket: str, key: str, dest: Path, progress: ProgressCallback | None
    ) -> SourceFacts:
        client = self._client()
        with _s3_errors(source, bucket):
            prefix = key if not key or key.endswith("/") else f"{key}/"
            objects = _list_objects(client, bucket, prefix)
            if objects:
                files = _object_paths(source, prefix, objects)
            elif key and not key.endswith("/"):
                client.head_object(Bucket=bucket, Key=key)
                files = [(key, _object_name(source, key))]
            else:
                raise InvalidParameterError(f"Source '{source}' is empty or does not exist")
            digests: dict[str, str] = {}
            for object_key, rel in files:
                out = dest.joinpath(*rel.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, object_key, str(out), Callback=progress)
                digests[rel.as_posix()] = file_sha256(out)  # just written: read back from the page cache
        return SourceFacts(file_digests=digests)


def _list_objects(client: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/"))
    return keys


def _object_paths(source: str, prefix: str, keys: list[str]) -> list[tuple[str, PurePosixPath]]:
    """Map object keys to relative paths, refusing keys that would escape or collide."""
    files: list[tuple[str, PurePosixPath]] = []
    for key in keys:
        try:
            files.append((key, safe_relpath(key[len(prefix) :], "object key")))
        except InvalidParameterError:
            raise InvalidParameterError(
                f"Source '{source}' contains an object key that cannot be a file path: '{key}'"
            ) from None
    directories = {parent for _key, rel in files for parent in rel.parents}
    clashes = sorted(str(rel) for _key, rel in files if rel in directories)
    if clashes:
        raise InvalidParameterError(f"Source '{source}' has objects that are also prefixes: {clashes[:5]}")
    return files


def _object_name(source: str, key: str) -> PurePosixPath:
    name = key.rsplit("/", 1)[-1]
    try:
        return safe_relpath(name, "object name")
    except InvalidParameterError:
        raise InvalidParameterError(f"Source '{source}' names an object that cannot be a file: '{key}'") from None


@contextmanager
def _s3_errors(source: str, bucket: str) -> Iterator[None]:
    """Translate boto errors for a client-supplied source: most are the client's to fix."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        kind = classify_error(exc)
        if kind == "unreachable" or kind == "server":
            raise UnavailableError(f"S3 is unavailable while reading source '{source}': {exc}") from exc
        if kind == "no_credentials":
            raise RegistryError("The registry server has no S3 credentials configured") from exc
        if kind == "no_bucket":
            raise InvalidParameterError(f"Source '{source}': S3 bucket '{bucket}' does not exist") from exc
        if kind == "denied":
            raise InvalidParameterError(
                f"Source '{source}': access denied; the registry's S3 credentials cannot read it"
            ) from exc
        if kind == "not_found":
            raise InvalidParameterError(f"Source '{source}' is empty or does not exist") from exc
        raise InvalidParameterError(f"Source '{source}' could not be read from S3: {exc}") from exc


def _file_uri_path(source: str) -> str:
    """The decoded path of a ``file:`` URI; only local hosts, no query or fragment."""
    try:
        parts = urlsplit(source)
    except ValueError:
        raise InvalidParameterError(f"Source '{source}' is not a valid file URI") from None
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise InvalidParameterError(
            f"Source '{source}' must be a file:///absolute/path URI on this host; {ROOTS_HINT}"
        )
    return unquote(parts.path)


def _scheme(source: str) -> str:
    """The URI scheme of ``source``, lower-cased; empty for a path."""
    match = _SCHEME.match(source)
    return match.group(1).lower() if match else ""


def _empty_directory(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
