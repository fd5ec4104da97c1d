"""Temporal activities: thin adapters over RegistryService, the artifact store and the policies.

``PromotionActivities`` holds ``snapshot_evidence``, ``evaluate_check``, ``record_state``,
``record_sign_off``, ``apply_promotion`` and ``notify``; ``TestRunner`` holds ``run_tests``.
The worker (``worker.build_activities``) binds them to the services.
"""

from __future__ import annotations

from activities.errors import domain_errors, to_application_error
from activities.notify import Notifier, verify_signature
from activities.promotion import PromotionActivities
from activities.test_runner import TestRunner

__all__ = [
    "Notifier",
    "PromotionActivities",
    "TestRunner",
    "domain_errors",
    "to_application_error",
    "verify_signature",
]
