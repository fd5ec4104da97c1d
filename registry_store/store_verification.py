"""``calabi verify-store``: every version's files against the digests recorded at registration, and the orphans.

Each recorded file is read once, in chunks (bounded memory), from the local directory or S3. A tree
is checked file by file when the version recorded per-file digests, else as a whole against its tree
digest (versions registered before migration 0005). A version deleted while the check runs is not a
problem (its row is re-read before anything is reported). Orphans are version trees no row records
(``registry_store/orphan_sweep.py``'s notion): listed, not removed, and not a failure, since a young
one may be a registration in flight; the periodic sweep removes old ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from registry_store.artifact_manifest import RecordedTree, is_recorded, recorded_batch
from registry_store.artifacts import ArtifactStore, LocalArtifactStore, S3ArtifactStore, manifest_digest, stream_sha256
from registry_store.db import Database, database_errors
from registry_store.errors import InvalidParameterError, NotFoundError

__all__ = ["Orphan", "StoreProblem", "StoreReport", "check_tree", "verify_store"]


@dataclass(frozen=True)
class StoreProblem:
    """One way a version's stored files differ from what was recorded (``file`` empty: the whole tree)."""

    model: str
    version: int
    location: str
    file: str
    problem: str


@dataclass(frozen=True)
class Orphan:
    """A version tree in the store that no version row records."""

    model: str
    artifact_id: str
    location: str
    last_written: float
    """Epoch seconds of its newest write (a recent one may be a registration in flight)."""


@dataclass
class TreeCheck:
    """What checking one tree read and found."""

    files: int = 0
    bytes: int = 0
    problems: list[StoreProblem] = field(default_factory=list)


@dataclass
class StoreReport:
    """The outcome of ``verify_store``: ok when no recorded file is missing, extra or different."""

    versions_checked: int = 0
    files_checked: int = 0
    bytes_checked: int = 0
    problems: list[StoreProblem] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found (orphans do not count)."""
        return not self.problems

    def as_json(self) -> dict[str, object]:
        """The ``--json`` document."""
        return {"ok": self.ok, **asdict(self)}


def check_tree(store: ArtifactStore, tree: RecordedTree) -> TreeCheck:
    """Compare the stored files of ``tree`` with its recorded digests, reading each file once."""
    done = TreeCheck()

    def problem(file: str, what: str) -> None:
        done.problems.append(StoreProblem(tree.model, tree.version, tree.location, file, what))

    try:
        stored = dict(store.list_files(tree.location))
    except NotFoundError:
        problem("", "the version's files are missing (nothing at its location)")
        return done
    except InvalidParameterError:
        problem("", "its location is outside the configured artifact store")
        return done
    expected = tree.files
    if expected is not None and manifest_digest(expected) != tree.digest:
        problem("", f"the recorded file digests do not add up to the recorded tree digest {tree.digest}")
    found: dict[str, str] = {}
    for rel in sorted(stored if expected is None else set(stored) & set(expected)):
        try:
            with store.open_file(tree.location, rel) as source:
                found[rel], size = stream_sha256(source)
        except NotFoundError:
            continue  # reported below as missing
        done.files += 1
        done.bytes += size
    if expected is None:
        if manifest_digest(found) != tree.digest:
            problem("", f"its files have tree digest {manifest_digest(found)}, registration recorded {tree.digest}")
        return done
    for rel in sorted(set(expected) - set(found)):
        problem(rel, "missing")
    for rel in sorted(set(stored) - set(expected)):
        problem(rel, "not recorded at registration")
    for rel, digest in sorted(found.items()):
        if digest != expected[rel]:
            problem(rel, f"sha256 {digest}, registration recorded {expected[rel]}")
    return done


def verify_store(db: Database, store: ArtifactStore) -> StoreReport:
    """Check every recorded version's files in ``store`` and list the trees no version records.

    Versions are read a batch at a time in short read transactions; the hashing runs outside them.
    """
    database_file = db.engine.url.database
    if not db.is_postgres and not (database_file and Path(database_file).is_file()):
        raise InvalidParameterError(f"there is no SQLite database at '{database_file}'")
    with database_errors():
        return _verify(db, store)


def _verify(db: Database, store: ArtifactStore) -> StoreReport:
    listed = store.stored_trees() if isinstance(store, LocalArtifactStore | S3ArtifactStore) else []
    report = StoreReport()
    seen: set[str] = set()
    after_id = 0
    while True:
        with db.read_connection() as connection:
            trees, after_id = recorded_batch(connection, after_id=after_id)
        if not trees:
            break
        for tree in trees:
            seen.add(tree.artifact_id)
            checked = check_tree(store, tree)
            if checked.problems and not _still_recorded(db, tree.artifact_id):
                continue  # deleted meanwhile: its files went with it
            report.versions_checked += 1
            report.files_checked += checked.files
            report.bytes_checked += checked.bytes
            report.problems.extend(checked.problems)
    if isinstance(store, LocalArtifactStore | S3ArtifactStore):
        report.orphans = [Orphan(t.model, t.artifact_id, t.location, store.last_written(t)) for t in listed
                          if t.artifact_id not in seen and not _still_recorded(db, t.artifact_id)]
    return report


def _still_recorded(db: Database, artifact_id: str) -> bool:
    with db.read_connection() as connection:
        return is_recorded(connection, artifact_id)
