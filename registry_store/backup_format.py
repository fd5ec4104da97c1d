"""The layout of a backup directory and its ``backup.json``.

::

    backup.json       this description (written last: a directory without it is no backup)
    README.txt        what the directory holds and how to restore it
    database.sqlite   SQLite: the online-backup copy     | database.pgdump  PostgreSQL: pg_dump -Fc
    manifest.jsonl    every version's location, tree digest and per-file digests, one per line
    artifacts/<key>/  a local store: a copy of every version's files (<key> = <model>/<artifact id>)
    secrets/          server-key (token hashes, the audit anchor's signature), admin-token, audit-anchor
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ARTIFACTS_DIR", "BACKUP_FILE", "FORMAT_VERSION", "MANIFEST_FILE", "PG_DUMP_FILE", "README_FILE", "S3_ADVICE",
    "SECRETS_DIR", "SQLITE_FILE", "ArtifactCopy", "AuditHead", "BackupCounts", "BackupDatabase", "BackupInfo",
    "IntegrityProblem",
    "readme", "store_key",
]

FORMAT_VERSION = 1
BACKUP_FILE = "backup.json"
README_FILE = "README.txt"
MANIFEST_FILE = "manifest.jsonl"
SQLITE_FILE = "database.sqlite"
PG_DUMP_FILE = "database.pgdump"
ARTIFACTS_DIR = "artifacts"
SECRETS_DIR = "secrets"
S3_ADVICE = (
    "The artifact store is S3: this backup holds the manifest (every version's files and digests), not the "
    "objects. Enable versioning on the bucket (and a lifecycle rule that expires noncurrent versions late "
    "enough), so an object deleted or overwritten after this backup can be brought back; `calabi verify-store` "
    "after a restore names any file that is missing or differs."
)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackupDatabase(_Part):
    """How the database was saved."""

    backend: Literal["sqlite", "postgresql"]
    file: str
    tool: str
    """``sqlite3 <version> online backup`` or pg_dump's version line."""
    tool_major: int = 0
    """pg_dump's major version (pg_restore must be at least this); 0 for SQLite."""


class AuditHead(_Part):
    """The audit chain's head in the snapshot."""

    seq: int = Field(ge=0)
    hash: str


class ArtifactCopy(_Part):
    """The artifact store the backup was taken from, and whether its files are in ``artifacts/``."""

    kind: Literal["local", "s3"]
    root: str
    """The store's root URI (``file:///…`` or ``s3://bucket/prefix``)."""
    copied: bool
    advice: str = ""


class BackupCounts(_Part):
    """What the snapshot holds."""

    models: int = Field(ge=0)
    versions: int = Field(ge=0)
    files: int = Field(ge=0)
    bytes_copied: int = Field(ge=0)
    audit_events: int = Field(ge=0)


class IntegrityProblem(_Part):
    """A version whose stored files did not match its recorded digests when the backup copied them."""

    model: str
    version: int
    problem: str

    def describe(self) -> str:
        """One line."""
        return f"{self.model} version {self.version}: {self.problem}"


class BackupInfo(_Part):
    """``backup.json``."""

    format: Literal["calabi-backup"] = "calabi-backup"
    format_version: Literal[1] = 1
    created_at: str
    """UTC, ISO 8601."""
    schema_revision: str
    database: BackupDatabase
    audit_head: AuditHead
    artifacts: ArtifactCopy
    counts: BackupCounts
    secrets: list[str]
    integrity_problems: list[IntegrityProblem] = Field(default_factory=list)
    """Versions damaged in the store already when copied (restored as found; ``calabi verify-store`` names them)."""


def readme(info: BackupInfo) -> str:
    """``README.txt`` for a backup."""
    lines = [
        f"Calabi Registry backup taken {info.created_at} (schema revision {info.schema_revision}, "
        f"audit head {info.audit_head.seq}).",
        "",
        f"It holds the {info.database.backend} database ({info.database.file}), the manifest of every version's "
        f"files with their sha256 digests ({MANIFEST_FILE}) and, in {SECRETS_DIR}/, the server key: treat the whole "
        "directory as a secret.",
        f"Artifacts: {'copies in ' + ARTIFACTS_DIR + '/' if info.artifacts.copied else 'not copied'} "
        f"(store {info.artifacts.root}).",
    ]
    if info.artifacts.advice:
        lines += ["", info.artifacts.advice]
    lines += [
        "",
        "Restore into an empty data dir and an empty database (CALABI_DATA_DIR, CALABI_DATABASE_URL, "
        "CALABI_ARTIFACT_ROOT set as for the server):",
        "    calabi restore <this directory>",
        "    calabi verify-store",
        "",
    ]
    return "\n".join(lines)


def store_key(root_uri: str, location: str) -> str | None:
    """The key (``<model>/<artifact id>``) of ``location`` below a store's ``root_uri``; None if it lies elsewhere.

    Local locations are ``file://`` URIs (percent-encoded), S3 locations are not.
    """
    prefix = root_uri.rstrip("/") + "/"
    if not location.startswith(prefix) or len(location) == len(prefix):
        return None
    rest = location[len(prefix):]
    return unquote(rest) if root_uri.startswith("file:") else rest
