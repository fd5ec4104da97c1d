"""Temporal activities: thin adapters over RegistryService, the artifact store and the policies.

``build_activities(services)`` returns the bound activity methods a worker registers:
``snapshot_evidence``, ``evaluate_check``, ``record_state``, ``record_sign_off``,
``apply_promotion``, ``notify`` (``PromotionActivities``) and ``run_tests`` (``TestRunner``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from activities.errors import domain_errors, to_application_error
from activities.notify import Notifier, verify_signature
from activities.promotion import PromotionActivities
from activities.test_runner import TestRunner

if TYPE_CHECKING:
    from calabi.bootstrap import Services

__all__ = [
    "Notifier",
    "PromotionActivities",
    "TestRunner",
    "build_activities",
    "domain_errors",
    "to_application_error",
    "verify_signature",
]


def build_activities(services: Services) -> list[Callable[..., Any]]:
    """The bound activity methods a worker registers, wired to ``services`` and its settings."""
    settings = services.settings
    notifier = Notifier(
        services.registry,
        webhook_urls=settings.webhook_urls,
        secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        recipients=settings.notify_recipients,
    )
    promotion = PromotionActivities(services.registry, services.artifacts, settings.resolved_policy_dir(), notifier)
    return [
        promotion.snapshot_evidence,
        promotion.evaluate_check,
        promotion.record_state,
        promotion.record_sign_off,
        promotion.apply_promotion,
        promotion.notify,
        TestRunner(services.artifacts).run_tests,
    ]
