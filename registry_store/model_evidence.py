"""ModelEvidenceService: what the checks need from a model's files, computed once per artifact digest.

Loading a model (in the sandbox) is the costly part of a promotion's evidence, and its answer
depends only on the artifact's bytes: it is stored by digest, so every check, re-check and
later promotion of the same artifact (any version with that digest) reuses it. Only answers are
stored (importances, or "the model exposes none"); a model that could not be loaded, or a load
that ran out of time, leaves nothing, so the next request computes again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError

from registry_store.audit import Actor
from registry_store.context import ServiceBase
from registry_store.entities import ModelEvidence
from registry_store.errors import InvalidParameterError
from registry_store.model_access import READ
from registry_store.tables import ModelEvidenceRow
from registry_store.users import require_role
from registry_store.validation import parse_version

__all__ = ["IMPORTANCE_SOURCES", "ModelEvidenceService"]

IMPORTANCE_SOURCES = ("recorded", "model", "none")


class ModelEvidenceService(ServiceBase):
    """Read and store model evidence by artifact digest."""

    def get_model_evidence(self, actor: Actor, digest: str, *, loader_version: int) -> ModelEvidence | None:
        """The evidence stored for ``digest`` by ``loader_version`` or later, or None (compute it)."""
        require_role(actor, "viewer", "read the registry")
        with self._db.read() as session:
            row = session.get(ModelEvidenceRow, digest)
            return _view(row) if row is not None and row.loader_version >= loader_version else None

    def record_model_evidence(
        self, actor: Actor, *, model: str, version: int, importances_source: str, importances: Mapping[str, float],
        scale_dependent: bool, note: str, flavors: Sequence[str], loader_version: int,
    ) -> ModelEvidence:
        """Store what ``model`` version ``version``'s artifact exposes, audited in the same transaction.

        The evidence is keyed by the version's own recorded digest (read here, never taken from the
        caller). Evidence already stored for the digest by this loader version (another worker
        computed it meanwhile) is kept and returned: one row and one audit event per digest and loader version.
        """
        require_role(actor, "engineer", "record model evidence")
        source = importances_source
        if source not in IMPORTANCE_SOURCES:
            known = ", ".join(IMPORTANCE_SOURCES)
            raise InvalidParameterError(f"Unknown importance source '{source}'; one of {known}.")
        digest = ""
        try:
            with self._db.write() as session:
                model_row = self._model(session, model, actor=actor, need=READ)
                digest = self._version(session, model_row, parse_version(version)).digest
                row = session.get(ModelEvidenceRow, digest, with_for_update=True)
                if row is not None and row.loader_version >= loader_version:
                    return _view(row)
                before = _view(row).model_dump(exclude={"importances"}) if row is not None else None
                values: dict[str, Any] = {
                    "source": source, "importances": json.dumps(dict(importances)),  # in the features' order
                    "scale_dependent": scale_dependent, "note": note, "flavors": json.dumps(list(flavors)),
                    "loader_version": loader_version, "computed_at": self._clock(),
                }
                if row is None:  # an INSERT: a concurrent first insert of the digest makes it fail, never overwrites
                    row = ModelEvidenceRow(digest=digest, **values)
                    session.add(row)
                else:
                    for name, value in values.items():
                        setattr(row, name, value)
                session.flush()
                stored = _view(row)
                self._audit(session, actor, "record_model_evidence", model, version, before=before,
                            after=stored.model_dump(exclude={"importances"}) | {"features": len(importances)})
                return stored
        except IntegrityError:  # PostgreSQL: a concurrent first insert of the same digest won; it is the answer
            found = self.get_model_evidence(actor, digest, loader_version=loader_version)
            if found is None:
                raise
            return found


def _view(row: ModelEvidenceRow) -> ModelEvidence:
    return ModelEvidence(
        digest=row.digest, source=row.source, importances=json.loads(row.importances),
        scale_dependent=row.scale_dependent, note=row.note, flavors=json.loads(row.flavors),
        loader_version=row.loader_version, computed_at=row.computed_at,
    )
