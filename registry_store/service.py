"""RegistryService: the registry's services, composed over one explicit context.

Every rule of the registry lives in one of them, and each mutation runs in one audited
transaction. The API, the CLI and the activities call them as ``registry.<service>.<method>``.
"""

from __future__ import annotations

from registry_store.alias_service import AliasService
from registry_store.artifact_service import ArtifactService
from registry_store.audit_service import AuditService
from registry_store.context import RegistryContext
from registry_store.evidence_pack import EvidencePacks
from registry_store.model_evidence import ModelEvidenceService
from registry_store.model_grants import ModelGrantService
from registry_store.model_service import ModelService
from registry_store.notification_outbox import NotificationOutbox
from registry_store.production_history import ProductionHistoryService
from registry_store.promotion_records import PromotionRecords
from registry_store.registration_service import RegistrationService
from registry_store.reviews import ReviewService
from registry_store.serving_schemas import ServingSchemaService
from registry_store.stage_service import StageService
from registry_store.system_webhooks import SystemWebhooks
from registry_store.version_service import VersionService
from registry_store.webhook_queue import WebhookQueue
from registry_store.webhook_service import WebhookService

__all__ = ["RegistryService"]


class RegistryService:
    """The registry's services, shared by the API, the CLI and the activities."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context
        self.models = ModelService(context)
        self.grants = ModelGrantService(context)
        self.registration = RegistrationService(context, self.models)
        self.versions = VersionService(context)
        self.stages = StageService(context)
        self.aliases = AliasService(context)
        self.reviews = ReviewService(context)
        self.production = ProductionHistoryService(context, self.reviews)
        self.promotions = PromotionRecords(context)
        self.model_evidence = ModelEvidenceService(context)
        self.schemas = ServingSchemaService(context)
        self.notifications = NotificationOutbox(context)
        self.evidence_packs = EvidencePacks(context)
        self.artifacts = ArtifactService(context)
        self.audit = AuditService(context)
        self.webhooks = WebhookService(context)
        self.webhook_queue = WebhookQueue(context)
        self.system_webhooks = SystemWebhooks(context)
