"""``calabi restore DIR``: a backup into an empty data dir, database and artifact store, then proven intact.

Nothing is written unless the data dir, the database (SQLite file or PostgreSQL schema) and a local
artifact root are empty and every copied file in the backup matches its recorded digest. Then the
secrets, the database (a file copy renamed into place, or ``pg_restore`` in one transaction) and the
artifacts (``put_tree`` into the configured store, which may be another path or S3) are restored.
The audit chain must verify, end at the head ``backup.json`` names and still hold the anchor the
backup's data dir had signed. Only then is the schema brought to this code's head and one
``restore_backup`` audit event appended, in the transaction that points the versions at their new
locations; the data dir's anchor is set to that event.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import bindparam, select, text, update
from sqlmodel import col

from registry_store.artifact_manifest import RecordedTree, snapshot_facts
from registry_store.artifacts import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from registry_store.artifacts._tree import safe_relpath
from registry_store.audit import Actor, append_event, verify_chain
from registry_store.audit_anchor import ANCHOR_FILE, AuditAnchor, BadAnchorError
from registry_store.backup_format import (
    ARTIFACTS_DIR,
    BACKUP_FILE,
    MANIFEST_FILE,
    SECRETS_DIR,
    BackupInfo,
    store_key,
)
from registry_store.db import Database, database_errors, upgrade_database
from registry_store.errors import ArtifactIntegrityError, InvalidParameterError
from registry_store.pg_tools import find_tool, run_tool
from registry_store.schema_revision import schema_revision
from registry_store.server_key import KEY_FILE, ServerKey
from registry_store.store_verification import check_tree
from registry_store.tables import AuditEventRow, ModelVersionRow

__all__ = ["RESTORE_ACTOR", "RestoreReport", "read_backup", "restore_backup"]

RESTORE_ACTOR = Actor(name="calabi-restore", roles=frozenset({"admin"}))
_RELOCATE = (
    update(ModelVersionRow)
    .where(col(ModelVersionRow.artifact_id) == bindparam("b_artifact_id"),
           col(ModelVersionRow.storage_location) == bindparam("b_old"))
    .values(storage_location=bindparam("b_new"))
)


@dataclass(frozen=True)
class RestoreReport:
    """What ``restore_backup`` restored and proved."""

    info: BackupInfo
    audit_events_checked: int
    relocated_versions: int
    """Versions whose files now live at another location (another root or store) than at backup time."""
    restore_event_seq: int


def read_backup(source: Path) -> BackupInfo:
    """The ``backup.json`` of ``source``, validated."""
    try:
        document = (source / BACKUP_FILE).read_text()
    except FileNotFoundError:
        raise InvalidParameterError(
            f"'{source}' is not a Calabi backup: it has no {BACKUP_FILE} (an interrupted backup has none)") from None
    try:
        return BackupInfo.model_validate_json(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise InvalidParameterError(f"'{source / BACKUP_FILE}' is not a valid backup description: "
                                    f"{where}: {first['msg']}") from None


def restore_backup(
    source: Path, db: Database, store: ArtifactStore, data_dir: Path, *, clock: Callable[[], int]
) -> RestoreReport:
    """Restore the backup in ``source`` into the empty ``data_dir``, ``db`` and ``store``; verify it."""
    info = read_backup(source)
    revision = schema_revision(info.schema_revision)
    if revision.newer_than_code:
        raise InvalidParameterError(f"the backup is at schema revision {info.schema_revision}, newer than this "
                                    f"Calabi (head {revision.head}): restore it with a newer Calabi")
    with database_errors():
        _refuse_unless_empty(info, db, store, data_dir)
        trees = _checked_trees(source, info)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        _restore_secrets(source / SECRETS_DIR, data_dir, info.secrets)
        _restore_database(source, info, db)
        moves = _restore_artifacts(source, info, store, trees)
        checked = _verify_audit(db, info, source / SECRETS_DIR)
        upgrade_database(db.engine.url.render_as_string(hide_password=False))
        seq = _record_restore(db, info, store, moves, data_dir, clock)
    return RestoreReport(info, checked, len(moves), seq)


def _refuse_unless_empty(info: BackupInfo, db: Database, store: ArtifactStore, data_dir: Path) -> None:
    backend = "postgresql" if db.is_postgres else "sqlite"
    if info.database.backend != backend:
        raise InvalidParameterError(f"this is a backup of a {info.database.backend} database; the configured "
                                    f"database is {backend}")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise InvalidParameterError(f"the data dir '{data_dir}' is not empty: restore only into an empty one")
    if db.is_postgres:
        with db.read_connection() as connection:
            tables = connection.execute(text("SELECT count(*) FROM information_schema.tables "
                                             "WHERE table_schema = current_schema()")).scalar_one()
        db.engine.dispose()
        if tables:
            raise InvalidParameterError("the configured PostgreSQL database is not empty (it has tables): "
                                        "restore only into an empty one")
    elif os.path.lexists(_sqlite_path(db)):
        raise InvalidParameterError(f"the database file '{_sqlite_path(db)}' exists: restore only into a new one")
    if info.artifacts.copied:
        if isinstance(store, LocalArtifactStore) and store.root.exists() and any(store.root.iterdir()):
            raise InvalidParameterError(f"the artifact root '{store.root}' is not empty: restore only into an "
                                        "empty one")
        if isinstance(store, S3ArtifactStore) and store.stored_trees():
            raise InvalidParameterError(f"the artifact store {store.root_uri} holds version trees already: "
                                        "restore only into an empty one")
    elif not isinstance(store, S3ArtifactStore) or store.root_uri != info.artifacts.root:
        raise InvalidParameterError(f"this backup holds no artifact copies: its artifacts stay in "
                                    f"{info.artifacts.root}; set CALABI_ARTIFACT_ROOT to it")


def _sqlite_path(db: Database) -> Path:
    path = db.engine.url.database
    if not path or path == ":memory:":
        raise InvalidParameterError("the configured SQLite database has no file to restore into")
    return Path(path)


def _checked_trees(source: Path, info: BackupInfo) -> list[tuple[RecordedTree, str]]:
    """The recorded trees to restore with their keys, each copy checked against its digests first.

    A version the backup found damaged already (``integrity_problems``) is restored as it was copied, if at all.
    """
    damaged = {(problem.model, problem.version) for problem in info.integrity_problems}
    backup_store = LocalArtifactStore(source / ARTIFACTS_DIR)
    trees = []
    with (source / MANIFEST_FILE).open() as lines:
        for line in lines:
            tree = RecordedTree.from_json(line)
            known_damage = (tree.model, tree.version) in damaged
            key = store_key(info.artifacts.root, tree.location)
            if key is None:
                if known_damage:
                    continue
                raise ArtifactIntegrityError(f"{tree.model} version {tree.version}: its location {tree.location} "
                                             f"is outside the backed-up store {info.artifacts.root}")
            if info.artifacts.copied:
                copy = backup_store.root.joinpath(*safe_relpath(key, "artifact key").parts)
                if known_damage:
                    if copy.is_dir() and any(path.is_file() for path in copy.rglob("*")):
                        trees.append((tree, key))
                    continue
                recorded = RecordedTree(tree.model, tree.version, tree.artifact_id, copy.as_uri(), tree.digest,
                                        tree.files)
                if problems := check_tree(backup_store, recorded).problems:
                    raise ArtifactIntegrityError(f"the backup's copy of {tree.model} version {tree.version} is "
                                                 f"damaged: {problems[0].file or 'tree'}: {problems[0].problem}")
            trees.append((tree, key))
    return trees


def _restore_secrets(secrets: Path, data_dir: Path, names: list[str]) -> None:
    for name in names:
        if name == ANCHOR_FILE:
            continue  # checked against the restored chain, then written anew at its head
        fd = os.open(data_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write((secrets / name).read_bytes())


def _restore_database(source: Path, info: BackupInfo, db: Database) -> None:
    dump = source / info.database.file
    if db.is_postgres:
        tool = find_tool("pg_restore", info.database.tool_major)
        run_tool(tool, ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", str(dump)],
                 db.engine.url)
        return
    target = _sqlite_path(db)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.restoring")
    shutil.copyfile(dump, staged)
    staged.chmod(0o600)
    with staged.open("rb") as handle:
        os.fsync(handle.fileno())
    os.rename(staged, target)


def _restore_artifacts(
    source: Path, info: BackupInfo, store: ArtifactStore, trees: list[tuple[RecordedTree, str]]
) -> list[dict[str, str]]:
    """Put every copied tree into ``store`` under its key; the location changes (old, new) to record."""
    if not info.artifacts.copied:
        return []
    moves = []
    for tree, key in trees:
        location = store.put_tree(source / ARTIFACTS_DIR / key, key)
        if location != tree.location:
            moves.append({"b_artifact_id": tree.artifact_id, "b_old": tree.location, "b_new": location})
    return moves


def _verify_audit(db: Database, info: BackupInfo, secrets: Path) -> int:
    """The restored chain verifies, ends at the backup's head and holds the backup's anchor; events checked."""
    with db.read() as session:
        result = verify_chain(session)
        facts = snapshot_facts(session.connection())
        anchored = _anchor(secrets, info)
        anchored_hash = None
        if anchored is not None and anchored[0] <= facts.audit_seq:
            anchored_hash = session.connection().execute(
                select(col(AuditEventRow.hash)).where(col(AuditEventRow.seq) == anchored[0])).scalar()
    if not result.ok:
        raise ArtifactIntegrityError(f"the restored audit chain does not verify at event {result.first_bad_seq}: "
                                     f"{result.problem}")
    if (facts.audit_seq, facts.audit_hash) != (info.audit_head.seq, info.audit_head.hash):
        raise ArtifactIntegrityError(f"the restored audit head is event {facts.audit_seq}, {BACKUP_FILE} names "
                                     f"event {info.audit_head.seq} (or another hash)")
    if anchored is not None and anchored[0] <= facts.audit_seq and anchored_hash != anchored[1]:
        raise ArtifactIntegrityError(f"the restored audit chain does not hold event {anchored[0]} as the backed-up "
                                     "data dir's signed anchor recorded it")
    return result.events_checked


def _anchor(secrets: Path, info: BackupInfo) -> tuple[int, str] | None:
    """The backed-up data dir's signed anchor, or None when the backup has none."""
    if ANCHOR_FILE not in info.secrets or KEY_FILE not in info.secrets:
        return None
    try:
        return AuditAnchor(secrets / ANCHOR_FILE, ServerKey(secrets / KEY_FILE)).load()
    except BadAnchorError as exc:
        raise ArtifactIntegrityError(f"the backup's audit anchor is not valid: {exc}") from None


def _record_restore(
    db: Database, info: BackupInfo, store: ArtifactStore, moves: list[dict[str, str]], data_dir: Path,
    clock: Callable[[], int],
) -> int:
    """Point moved versions at their new locations and append the ``restore_backup`` event; anchor at it."""
    root = store.root_uri if isinstance(store, LocalArtifactStore | S3ArtifactStore) else ""
    with db.write_connection() as connection:
        if moves:
            connection.execute(_RELOCATE, moves)
        append_event(connection, actor=RESTORE_ACTOR, action="restore_backup", timestamp=clock(), subject="registry",
                     before={"audit_head": info.audit_head.seq, "artifact_root": info.artifacts.root},
                     after={"backup_created_at": info.created_at, "artifact_root": root or info.artifacts.root,
                            "relocated_versions": len(moves)})
        facts = snapshot_facts(connection)
    AuditAnchor(data_dir / ANCHOR_FILE, ServerKey(data_dir / KEY_FILE)).advance(facts.audit_seq, facts.audit_hash)
    return facts.audit_seq
