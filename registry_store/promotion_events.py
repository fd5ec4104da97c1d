"""A promotion's status changes as webhook events (``promotion.<status>``), with a link to its page."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from policies.webhooks import PROMOTION_STATUSES
from registry_store.context import RegistryContext
from registry_store.tables import PromotionRow

__all__ = ["publish_promotion"]


def publish_promotion(context: RegistryContext, session: Session, row: PromotionRow, status: str,
                      **extra: Any) -> None:
    """Publish ``promotion.<status>`` for ``row`` in the caller's transaction (internal statuses are not events)."""
    if status not in PROMOTION_STATUSES:
        return
    context.publish(session, f"promotion.{status}", row.model_name, {
        "promotion_id": row.id, "name": row.model_name, "version": str(row.version), "status": status,
        "target_stage": row.target_stage, "kind": row.kind, "requester": row.requester, "message": row.message,
        "promotion_url": context.promotion_url(row.id), **extra,
    })
