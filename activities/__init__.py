"""Temporal activities: thin adapters over RegistryService, the artifact store and the policies.

``PromotionActivities`` holds ``snapshot_evidence``, ``evaluate_check``, ``record_state``,
``record_sign_off``, ``apply_promotion`` and ``notify``; ``TestRunner`` holds ``run_tests``;
``ModelEvidenceActivities`` holds ``compute_model_evidence`` (through a ``LoaderPool``);
``ReviewActivities`` holds ``remind_review`` and ``escalate_review``. The worker
(``worker.build_activities``) binds them to the services, the heavy two on a queue of their own.
"""

from __future__ import annotations

from activities.errors import domain_errors, to_application_error
from activities.loader_pool import LoaderPool
from activities.model_evidence import ModelEvidenceActivities
from activities.notify import Notifier
from activities.promotion import PromotionActivities
from activities.reviews import ReviewActivities
from activities.test_runner import TestRunner

__all__ = [
    "LoaderPool",
    "ModelEvidenceActivities",
    "Notifier",
    "PromotionActivities",
    "ReviewActivities",
    "TestRunner",
    "domain_errors",
    "to_application_error",
]
