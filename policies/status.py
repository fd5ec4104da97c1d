"""The life cycle of a promotion request, shared by the workflow, the registry and the API."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TERMINAL_STATUSES", "PromotionStatus"]


class PromotionStatus(StrEnum):
    """Where a promotion stands."""

    RUNNING_CHECKS = "running_checks"
    CHECKS_FAILED = "checks_failed"
    """A check judged the model and it failed."""
    CHECK_ERROR = "check_error"
    """A check could not be evaluated (infrastructure, not a verdict); waits for a re-check like checks_failed."""
    AWAITING_SIGN_OFF = "awaiting_sign_off"
    APPLYING = "applying"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset(
    {
        PromotionStatus.PROMOTED,
        PromotionStatus.REJECTED,
        PromotionStatus.EXPIRED,
        PromotionStatus.CANCELLED,
        PromotionStatus.FAILED,
    }
)
