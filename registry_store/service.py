"""RegistryService: every rule of the registry, each mutation in one audited transaction."""

from __future__ import annotations

from sqlmodel import col, select

from registry_store.audit import Actor, event_view, verify_chain
from registry_store.entities import AuditEvent, AuditVerification, ModelVersion
from registry_store.errors import (
    AlreadyExistsError,
    InvalidParameterError,
    NotFoundError,
    RegistryError,
)
from registry_store.service_aliases import AliasOperations
from registry_store.service_artifacts import ArtifactOperations
from registry_store.service_models import ModelOperations
from registry_store.service_promotions import PromotionOperations
from registry_store.service_versions import VersionOperations
from registry_store.tables import (
    AuditEventRow,
)
from registry_store.users import require_role

__all__ = ["RegistryService"]


class RegistryService(ModelOperations, AliasOperations, VersionOperations, PromotionOperations, ArtifactOperations):
    """The registry's single service layer, shared by the API, the CLI and the activities."""

    def list_audit_events(
        self,
        actor: Actor,
        *,
        model_name: str | None = None,
        after_seq: int = 0,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[AuditEvent]:
        """Audit events after ``after_seq`` in sequence order (or newest first), optionally for one model."""
        require_role(actor, "viewer", "read the audit log")
        if not 1 <= limit <= 10_000:
            raise InvalidParameterError("Parameter 'limit' must be between 1 and 10000.")
        with self._db.read() as session:
            query = select(AuditEventRow).where(col(AuditEventRow.seq) > after_seq)
            if model_name:
                query = query.where(col(AuditEventRow.model_name) == model_name)
            order = col(AuditEventRow.seq).desc() if newest_first else col(AuditEventRow.seq)
            rows = session.exec(query.order_by(order).limit(limit)).all()
            return [event_view(r) for r in rows]

    def verify_audit_chain(self, actor: Actor) -> AuditVerification:
        """Recompute the audit hash chain; any edited, removed or reordered event is reported."""
        require_role(actor, "viewer", "read the audit log")
        with self._db.read() as session:
            return verify_chain(session)

    def register_version(
        self, actor: Actor, *, name: object, source: object, run_id: object = None, description: object = None
    ) -> tuple[ModelVersion, bool]:
        """Create the model when the name is new (as ``mlflow.register_model`` does), then the version.

        Returns the version and whether the model was created; a failed first registration removes
        the empty model again.
        """
        created = False
        try:
            self.get_registered_model(actor, name)
        except NotFoundError:
            try:
                self.create_registered_model(actor, name=name)
                created = True
            except AlreadyExistsError:  # registered by someone else meanwhile: append to it
                pass
        try:
            version = self.create_model_version(actor, name=name, source=source, run_id=run_id, description=description)
        except RegistryError:
            if created:
                self.delete_registered_model(actor, name)
            raise
        return version, created
