"""What the database records about every version's files: its location, tree digest and per-file digests.

Read in batches by row id (bounded memory), from any connection: a live database, a snapshot
(``pg_export_snapshot``) or a backup's SQLite copy. One JSON object per line in a backup's
``manifest.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, bindparam, func, select
from sqlmodel import col

from registry_store.tables import AuditHeadRow, ModelVersionRow, RegisteredModelRow

__all__ = ["RecordedTree", "SnapshotFacts", "is_recorded", "recorded_batch", "recorded_trees", "snapshot_facts"]

_BATCH = 500
_TREES = (
    select(
        col(ModelVersionRow.id), col(RegisteredModelRow.name), col(ModelVersionRow.version),
        col(ModelVersionRow.artifact_id), col(ModelVersionRow.storage_location), col(ModelVersionRow.digest),
        col(ModelVersionRow.file_digests),
    )
    .join(RegisteredModelRow, col(RegisteredModelRow.id) == col(ModelVersionRow.model_id))
    .where(col(ModelVersionRow.id) > bindparam("after_id"))
    .order_by(col(ModelVersionRow.id))
    .limit(bindparam("limit"))
)
_RECORDED = select(col(ModelVersionRow.id)).where(col(ModelVersionRow.artifact_id) == bindparam("artifact_id")).limit(1)


@dataclass(frozen=True)
class RecordedTree:
    """One version's files as recorded at registration."""

    model: str
    version: int
    artifact_id: str
    location: str
    digest: str
    files: dict[str, str] | None
    """``{relative path: sha256}``; None for versions registered before per-file digests (only ``digest``)."""

    def to_json(self) -> str:
        """One line of ``manifest.jsonl``."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> RecordedTree:
        """Parse a line written by :meth:`to_json`."""
        return cls(**json.loads(line))


def recorded_batch(connection: Connection, *, after_id: int, limit: int = _BATCH) -> tuple[list[RecordedTree], int]:
    """Up to ``limit`` recorded trees of the version rows after row id ``after_id``, and the last row id read."""
    rows = connection.execute(_TREES, {"after_id": after_id, "limit": limit}).all()
    trees = [RecordedTree(row.name, row.version, row.artifact_id, row.storage_location, row.digest,
                          json.loads(row.file_digests) if row.file_digests else None) for row in rows]
    return trees, (rows[-1].id if rows else after_id)


def recorded_trees(connection: Connection) -> Iterator[RecordedTree]:
    """Every version's recorded tree in row order, read a batch at a time on ``connection``."""
    after_id = 0
    while True:
        trees, after_id = recorded_batch(connection, after_id=after_id)
        yield from trees
        if len(trees) < _BATCH:
            return


def is_recorded(connection: Connection, artifact_id: str) -> bool:
    """Whether a version row still records the tree ``artifact_id``."""
    return connection.execute(_RECORDED, {"artifact_id": artifact_id}).first() is not None


@dataclass(frozen=True)
class SnapshotFacts:
    """The audit chain's head and the number of models in one database snapshot."""

    audit_seq: int
    audit_hash: str
    models: int


def snapshot_facts(connection: Connection) -> SnapshotFacts:
    """Read the audit head and count the models on ``connection``."""
    head = connection.execute(select(col(AuditHeadRow.seq), col(AuditHeadRow.hash))
                              .where(col(AuditHeadRow.id) == 1)).first()
    models = connection.execute(select(func.count()).select_from(RegisteredModelRow)).scalar_one()
    seq, head_hash = (head.seq, head.hash) if head is not None else (0, "")
    return SnapshotFacts(audit_seq=int(seq), audit_hash=str(head_hash), models=int(models))
