"""``calabi backup``: a consistent snapshot of a registry that keeps serving.

The database is saved first, as one snapshot: SQLite through its online-backup API (writers are
not blocked: WAL), PostgreSQL through ``pg_dump`` inside a snapshot this process exports and keeps
open, so the manifest, the audit head and the counts are read from exactly what was dumped. Then
the artifacts the snapshot records are copied (a local store; each file hashed while copied, never
hard-linked) or, for S3, only listed in the manifest with the advice to version the bucket. A
version deleted between the snapshot and its copy restarts the backup (at most ``ATTEMPTS`` times).
Everything is written into ``<out>.tmp`` and renamed to ``<out>`` when complete (files and
directories fsynced first), so a crash never leaves something that looks like a backup.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, text

from registry_store.artifact_manifest import RecordedTree, is_recorded, recorded_trees, snapshot_facts
from registry_store.artifacts import ArtifactStore, LocalArtifactStore, S3ArtifactStore, manifest_digest, stream_sha256
from registry_store.artifacts._tree import safe_relpath
from registry_store.audit_anchor import ANCHOR_FILE
from registry_store.backup_format import (
    ARTIFACTS_DIR,
    BACKUP_FILE,
    MANIFEST_FILE,
    PG_DUMP_FILE,
    README_FILE,
    S3_ADVICE,
    SECRETS_DIR,
    SQLITE_FILE,
    ArtifactCopy,
    AuditHead,
    BackupCounts,
    BackupDatabase,
    BackupInfo,
    IntegrityProblem,
    readme,
    store_key,
)
from registry_store.db import Database, database_errors
from registry_store.errors import InvalidParameterError, NotFoundError, UnavailableError
from registry_store.pg_tools import find_tool, run_tool, server_major
from registry_store.server_key import KEY_FILE

__all__ = ["ATTEMPTS", "SECRET_FILES", "take_backup"]

log = logging.getLogger("calabi.backup")

ATTEMPTS = 3
SECRET_FILES = (KEY_FILE, "admin-token", ANCHOR_FILE)
"""Data-dir files a restore needs: tokens and the audit anchor are keyed by the server key."""


class _TreeGone(Exception):
    """A version in the snapshot was deleted (with its files) before its files were copied."""


@dataclass(frozen=True)
class _Snapshot:
    database: BackupDatabase
    revision: str
    audit: AuditHead
    models: int
    versions: int
    files: int


@dataclass
class _Copied:
    files: int = 0
    bytes: int = 0


def take_backup(db: Database, store: ArtifactStore, data_dir: Path, out: Path) -> BackupInfo:
    """Back up the registry (database, manifest, artifact copies, secrets) into the new directory ``out``."""
    out = out.absolute()
    if os.path.lexists(out):
        raise InvalidParameterError(f"'{out}' exists: a backup never overwrites anything")
    staging = out.with_name(f"{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.mkdir(mode=0o700)
    except FileExistsError:
        raise InvalidParameterError(
            f"'{staging}' exists: a backup into '{out}' was interrupted (remove it) or is running now") from None
    try:
        with database_errors():
            info = _take(db, store, data_dir, staging)
        _write_synced(staging / README_FILE, readme(info))
        _write_synced(staging / BACKUP_FILE, info.model_dump_json(indent=2) + "\n")
        _sync_directory(staging)
        os.rename(staging, out)
        _sync_directory(out.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def _take(db: Database, store: ArtifactStore, data_dir: Path, staging: Path) -> BackupInfo:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _attempt(db, store, data_dir, staging)
        except _TreeGone as gone:
            log.warning("backup attempt %d: %s; starting again", attempt, gone)
            for entry in staging.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    raise UnavailableError(f"versions were deleted while each of {ATTEMPTS} backup attempts copied their files; "
                           "run the backup again")


def _attempt(db: Database, store: ArtifactStore, data_dir: Path, staging: Path) -> BackupInfo:
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = staging / MANIFEST_FILE
    snapshot = _dump_postgres(db, staging, manifest) if db.is_postgres else _copy_sqlite(db, staging, manifest)
    problems: list[IntegrityProblem] = []
    if isinstance(store, S3ArtifactStore):
        artifacts = ArtifactCopy(kind="s3", root=store.root_uri, copied=False, advice=S3_ADVICE)
        copied = _Copied(files=snapshot.files)
    elif isinstance(store, LocalArtifactStore):
        artifacts = ArtifactCopy(kind="local", root=store.root_uri, copied=True)
        copied = _copy_artifacts(db, store, manifest, staging / ARTIFACTS_DIR, problems)
    else:
        raise InvalidParameterError(f"cannot back up an artifact store of type {type(store).__name__}")
    return BackupInfo(
        created_at=created_at, schema_revision=snapshot.revision, database=snapshot.database,
        audit_head=snapshot.audit, artifacts=artifacts,
        counts=BackupCounts(models=snapshot.models, versions=snapshot.versions, files=copied.files,
                            bytes_copied=copied.bytes, audit_events=snapshot.audit.seq),
        secrets=_copy_secrets(data_dir, staging / SECRETS_DIR), integrity_problems=problems,
    )


def _read_snapshot(connection: Connection, database: BackupDatabase, manifest: Path) -> _Snapshot:
    """The facts of the snapshot ``connection`` sees, and its manifest written to ``manifest``."""
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None:
        raise InvalidParameterError("the database was never migrated: there is nothing to back up")
    facts = snapshot_facts(connection)
    versions = files = 0
    with manifest.open("x") as handle:
        for tree in recorded_trees(connection):
            handle.write(tree.to_json() + "\n")
            versions += 1
            files += len(tree.files or {})
        os.fsync(handle.fileno())
    return _Snapshot(database, revision, AuditHead(seq=facts.audit_seq, hash=facts.audit_hash), facts.models,
                     versions, files)


def _dump_postgres(db: Database, staging: Path, manifest: Path) -> _Snapshot:
    """pg_dump (custom format) of the snapshot this transaction exports; the manifest read in the same snapshot."""
    with db.snapshot() as session:
        connection = session.connection()
        snapshot_id = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        tool = find_tool("pg_dump", server_major(connection))
        run_tool(tool, ["--format=custom", f"--snapshot={snapshot_id}", f"--file={staging / PG_DUMP_FILE}"],
                 db.engine.url)
        database = BackupDatabase(backend="postgresql", file=PG_DUMP_FILE, tool=tool.version, tool_major=tool.major)
        return _read_snapshot(connection, database, manifest)


def _copy_sqlite(db: Database, staging: Path, manifest: Path) -> _Snapshot:
    """SQLite's online backup of the live file (one step: one consistent snapshot); the manifest read from the copy."""
    path = db.engine.url.database
    if not path or path == ":memory:" or not Path(path).is_file():
        raise InvalidParameterError(f"there is no SQLite database at '{path}'")
    target = staging / SQLITE_FILE
    with closing(sqlite3.connect(path, timeout=60)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    with target.open("rb") as handle:
        os.fsync(handle.fileno())
    engine = create_engine(f"sqlite:///{target}")
    database = BackupDatabase(backend="sqlite", file=SQLITE_FILE,
                              tool=f"sqlite3 {sqlite3.sqlite_version} online backup")
    try:
        with engine.connect() as connection:
            return _read_snapshot(connection, database, manifest)
    finally:
        engine.dispose()


def _copy_artifacts(
    db: Database, store: LocalArtifactStore, manifest: Path, target_root: Path, problems: list[IntegrityProblem]
) -> _Copied:
    """Copy every recorded tree to ``target_root/<key>``, each file hashed on the way; mismatches go to ``problems``."""
    copied = _Copied()
    with manifest.open() as lines:
        for line in lines:
            tree = RecordedTree.from_json(line)
            key = store_key(store.root_uri, tree.location)
            if key is None:
                problems.append(_problem(tree, f"its location {tree.location} is outside the store"))
                continue
            found = _copy_tree(db, store, tree, target_root.joinpath(*safe_relpath(key, "artifact key").parts),
                               problems, copied)
            if tree.files is None and found is not None and manifest_digest(found) != tree.digest:
                problems.append(_problem(tree, "its tree digest differs from the recorded one"))
    return copied


def _copy_tree(
    db: Database, store: LocalArtifactStore, tree: RecordedTree, target: Path, problems: list[IntegrityProblem],
    copied: _Copied,
) -> dict[str, str] | None:
    """Copy one tree, file by file; the digests of the files found (None when it is missing as a whole)."""
    try:
        names = sorted(tree.files) if tree.files is not None else [rel for rel, _ in store.list_files(tree.location)]
    except NotFoundError:
        _missing(db, tree, problems, "its files are missing from the store")
        return None
    found: dict[str, str] = {}
    for rel in names:
        out = target.joinpath(*safe_relpath(rel, "artifact path").parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            source = store.open_file(tree.location, rel)
        except NotFoundError:
            _missing(db, tree, problems, f"file '{rel}' is missing from the store")
            continue
        with source, out.open("xb") as handle:
            found[rel], size = stream_sha256(source, handle)
            handle.flush()
            os.fsync(handle.fileno())
        copied.files += 1
        copied.bytes += size
        expected = (tree.files or {}).get(rel)
        if expected is not None and found[rel] != expected:
            problems.append(_problem(tree, f"file '{rel}' does not match its recorded digest"))
    return found


def _missing(db: Database, tree: RecordedTree, problems: list[IntegrityProblem], text: str) -> None:
    """A recorded file is not in the store: the version was deleted after the snapshot (start again), or it is lost."""
    with db.read_connection() as connection:
        if not is_recorded(connection, tree.artifact_id):
            raise _TreeGone(f"{tree.model} version {tree.version} was deleted during the backup")
    problems.append(_problem(tree, text))


def _problem(tree: RecordedTree, text: str) -> IntegrityProblem:
    return IntegrityProblem(model=tree.model, version=tree.version, problem=text)


def _copy_secrets(data_dir: Path, target: Path) -> list[str]:
    """Copy the data dir's secret files that exist (mode 0600); their names."""
    target.mkdir(mode=0o700)
    names = []
    for name in SECRET_FILES:
        source = data_dir / name
        if not source.is_file():
            continue
        fd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(source.read_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        names.append(name)
    return names


def _write_synced(path: Path, content: str) -> None:
    with path.open("x") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
