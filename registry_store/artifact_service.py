"""Registry copies served to loaders (the ``calabi-registry`` namespace), each file checked against its digest.

Every file leaves the store through a temporary spool that is hashed on the way in and
compared with the sha256 recorded at registration; only a matching spool is served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import bindparam
from sqlmodel import col

from registry_store.artifacts import manifest_digest, tree_manifest
from registry_store.artifacts._tree import CHUNK_SIZE, safe_relpath
from registry_store.audit import Actor
from registry_store.context import ServiceBase
from registry_store.errors import ArtifactIntegrityError, InvalidParameterError, NotFoundError
from registry_store.model_access import READ, require_model_permission, version_model
from registry_store.orphan_sweep import SweepReport, sweep_orphans
from registry_store.tables import ModelVersionRow
from registry_store.users import require_role
from registry_store.views import NAMED_VERSIONS

__all__ = ["ArtifactEntry", "ArtifactService", "VerifiedFile"]

log = logging.getLogger(__name__)
_ARTIFACT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BY_ARTIFACT_ID = NAMED_VERSIONS.where(col(ModelVersionRow.artifact_id) == bindparam("artifact_id"))
SPOOL_MEMORY_BYTES = 1024 * 1024
_LEGACY_CACHE_SIZE = 256


@dataclass(frozen=True)
class ArtifactEntry:
    """One entry of a listing: a name relative to the listed directory."""

    path: str
    is_dir: bool
    file_size: int | None = None


@dataclass
class VerifiedFile:
    """A file whose bytes matched the recorded sha256, spooled and rewound; close it when done."""

    relpath: str
    size: int
    stream: IO[bytes]

    def close(self) -> None:
        """Release the spool."""
        self.stream.close()


@dataclass(frozen=True)
class _Copy:
    model: str
    version: int
    location: str
    digest: str
    file_digests: str


class _LegacyManifests:
    """Manifests computed (and checked against the tree digest) for versions registered without one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], dict[str, str]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> dict[str, str] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], manifest: dict[str, str]) -> None:
        with self._lock:
            self._items[key] = manifest
            while len(self._items) > _LEGACY_CACHE_SIZE:
                self._items.popitem(last=False)


_LEGACY = _LegacyManifests()


class ArtifactService(ServiceBase):
    """List and read registry copies by artifact id, refusing any byte that differs from registration."""

    def sweep_orphans(self, *, min_age_s: float) -> SweepReport:
        """Remove what killed registrations left in the store, untouched for ``min_age_s``
        (``registry_store/orphan_sweep.py``). The server's own maintenance: no actor, no audit event."""
        return sweep_orphans(self._db, self._artifacts, min_age_s=min_age_s)

    def list_registry_artifacts(self, actor: Actor, artifact_id: str, path: str = "") -> list[ArtifactEntry]:
        """The entries directly below ``path`` of a copy; a file or an unknown path lists as empty (MLflow's rule).

        The store's file set must equal the recorded manifest.
        """
        require_role(actor, "viewer", "download model artifacts")
        prefix = f"{safe_relpath(path, 'artifact path')}/" if path else ""
        copy = self._copy(actor, artifact_id)
        manifest = self._manifest(copy)
        stored = dict(self._artifacts.list_files(copy.location))
        if set(stored) != set(manifest):
            missing, extra = sorted(set(manifest) - set(stored)), sorted(set(stored) - set(manifest))
            problems = []
            if missing:
                problems.append(f"missing {missing}")
            if extra:
                problems.append(f"not recorded {extra}")
            raise _integrity(copy, f"files {'; '.join(problems)}")
        entries: dict[str, ArtifactEntry] = {}
        for rel, size in sorted(stored.items()):
            if not rel.startswith(prefix):
                continue
            head, sep, _rest = rel[len(prefix) :].partition("/")
            entries.setdefault(head, ArtifactEntry(head, True) if sep else ArtifactEntry(head, False, size))
        return list(entries.values())

    def open_registry_artifact(self, actor: Actor, artifact_id: str, relpath: str) -> VerifiedFile:
        """One file of a copy, spooled while hashed and served only if it matches the recorded sha256."""
        require_role(actor, "viewer", "download model artifacts")
        rel = str(safe_relpath(relpath, "artifact path"))
        copy = self._copy(actor, artifact_id)
        manifest = self._manifest(copy)
        expected = manifest.get(rel)
        try:
            source = self._artifacts.open_file(copy.location, rel)
        except NotFoundError:
            if expected is None:
                raise NotFoundError(
                    f"Model '{copy.model}' version {copy.version} has no artifact file '{rel}'"
                ) from None
            raise _integrity(copy, f"file '{rel}' is missing") from None
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, prefix="calabi-serve-")
        try:
            with source:
                if expected is None:
                    raise _integrity(copy, f"file '{rel}' was not recorded at registration")
                hasher, size = hashlib.sha256(), 0
                while chunk := source.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    spool.write(chunk)
                    size += len(chunk)
            if hasher.hexdigest() != expected:
                raise _integrity(
                    copy, f"file '{rel}' has sha256 {hasher.hexdigest()}, registration recorded {expected}"
                )
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return VerifiedFile(rel, size, spool)

    def _copy(self, actor: Actor, artifact_id: str) -> _Copy:
        """The version holding the copy; one whose model ``actor`` may not see answers like an unknown id."""
        if not _ARTIFACT_ID.match(artifact_id):
            raise InvalidParameterError(f"Invalid registry artifact id {artifact_id[:80]!r}")
        unknown = NotFoundError(f"No model version has registry artifact id '{artifact_id}'")
        with self._db.read_connection() as connection:
            row = connection.execute(_BY_ARTIFACT_ID, {"artifact_id": artifact_id}).first()
            if row is None:
                raise unknown
            try:
                require_model_permission(connection, actor, version_model(row), READ)
            except NotFoundError:
                raise unknown from None
        return _Copy(row.model_name, row.version, row.storage_location, row.digest, row.file_digests)

    def _manifest(self, copy: _Copy) -> dict[str, str]:
        """The recorded ``{relpath: sha256}``; for older versions computed from the store and checked."""
        if copy.file_digests:
            recorded: dict[str, str] = json.loads(copy.file_digests)
            return recorded
        key = (copy.location, copy.digest)
        if (cached := _LEGACY.get(key)) is not None:
            return cached
        with tempfile.TemporaryDirectory(prefix="calabi-verify-") as tmp:
            target = Path(tmp) / "copy"
            self._artifacts.download_tree(copy.location, target)
            manifest = tree_manifest(target)
        if (found := manifest_digest(manifest)) != copy.digest:
            raise _integrity(copy, f"its tree digest is {found}, registration recorded {copy.digest}")
        _LEGACY.put(key, manifest)
        return manifest


def _integrity(copy: _Copy, detail: str) -> ArtifactIntegrityError:
    log.error("registry copy of %s/%s at %s failed verification: %s", copy.model, copy.version, copy.location, detail)
    return ArtifactIntegrityError(
        f"Model '{copy.model}' version {copy.version}: the registry's copy does not match the digest recorded "
        f"at registration ({detail}); it was not served. Ask an admin to investigate the artifact store."
    )
