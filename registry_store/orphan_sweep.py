"""Removing what killed registrations left in the artifact store, never a recorded version's files.

Registration copies a tree into ``<root>/:staging/<id>``, renames it to ``<root>/<model>/<artifact id>``
and only then records the version in a transaction. A process killed in between leaves a staging
directory or a tree no version row names. The sweep removes:

* staging entries in which nothing was written for ``min_age_s``;
* version trees no ``model_versions`` row names (by ``artifact_id``), untouched for ``min_age_s``.

A tree is judged against the database inside a write transaction that holds the lock a
registration of that model takes (the model row on PostgreSQL, the database on SQLite), and is
moved out of its location (one rename) before that transaction ends. A registration checks, in
its own transaction, that its tree is still there (``ArtifactStore.swept_away``) before it records
the version: whichever commits first, a recorded version always has its files. ``min_age_s`` also
keeps a tree that another replica is about to record. Each removal is logged with its path and
size (not audited: no registry record changes).

An S3 store is swept the same way, prefix by prefix (``<prefix>/<model>/<artifact id>/``, the objects
deleted inside the transaction since S3 has no rename; a registration's check is one listing);
its staging directories are in the host's temporary directory, shared with other processes, and
are not swept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlmodel import col

from registry_store.artifacts import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from registry_store.artifacts.store import RemovedTree
from registry_store.db import Database
from registry_store.tables import ModelVersionRow, RegisteredModelRow

__all__ = ["SweepReport", "sweep_orphans"]

log = logging.getLogger("calabi.orphan_sweep")

_KNOWN_IDS = select(col(ModelVersionRow.artifact_id))
_LOCK_MODEL = (  # the lock a registration into the model takes (PostgreSQL; SQLite's BEGIN IMMEDIATE covers all)
    select(col(RegisteredModelRow.id)).where(col(RegisteredModelRow.name) == bindparam("model")).with_for_update()
)
_RECORDED = select(col(ModelVersionRow.id)).where(col(ModelVersionRow.artifact_id) == bindparam("artifact_id")).limit(1)


@dataclass(frozen=True)
class SweepReport:
    """What one sweep removed."""

    staging: list[RemovedTree]
    orphans: list[RemovedTree]


def sweep_orphans(db: Database, store: ArtifactStore, *, min_age_s: float) -> SweepReport:
    """Remove stale staging entries and unrecorded version trees untouched for ``min_age_s``."""
    if not isinstance(store, LocalArtifactStore | S3ArtifactStore):
        return SweepReport([], [])
    staging = store.sweep_staging(older_than_s=min_age_s)
    for removed in staging:
        log.warning("removed staging leftover %s (%d bytes)", removed.location, removed.size)
    with db.read_connection() as connection:
        known = set(connection.execute(_KNOWN_IDS).scalars())
    cutoff = time.time() - min_age_s
    orphans: list[RemovedTree] = []
    for tree in store.stored_trees():
        if tree.artifact_id in known or store.last_written(tree) >= cutoff:
            continue
        with db.write_connection() as connection:
            connection.execute(_LOCK_MODEL, {"model": tree.model})
            recorded = connection.execute(_RECORDED, {"artifact_id": tree.artifact_id}).first()
            finish = None if recorded is not None else store.retire(tree)
        if finish is not None:
            removed = RemovedTree(tree.location, finish())
            log.warning("removed orphaned artifact tree %s (%d bytes): no version records it", removed.location,
                        removed.size)
            orphans.append(removed)
    return SweepReport(staging, orphans)
