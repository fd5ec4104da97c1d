"""The one writer of the webhook outbox: an event and its deliveries, in the caller's transaction.

Services call ``publish_event`` (through ``RegistryContext.publish``) in the transaction of the change
the event reports, so the event exists exactly when the change committed. An event no subscription
wants is not stored. Paused subscriptions still get their deliveries (sent once resumed); disabled
ones do not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlmodel import Session, col

from policies.webhooks import envelope
from registry_store.tables import WebhookDeliveryRow, WebhookEventRow, WebhookRow

__all__ = ["ACTIVE", "DEAD", "DELIVERED", "DISABLED", "FAILED", "PAUSED", "PENDING", "publish_event"]

PENDING, DELIVERED, FAILED, DEAD = "pending", "delivered", "failed", "dead"
ACTIVE, DISABLED, PAUSED = "ACTIVE", "DISABLED", "PAUSED"
_EVENTS = WebhookEventRow.__table__  # type: ignore[attr-defined]
_SUBSCRIBERS = select(col(WebhookRow.id), col(WebhookRow.events)).where(col(WebhookRow.status) != DISABLED)


def publish_event(session: Session | Connection, event: str, model_name: str, data: Mapping[str, Any],
                  now: int) -> int | None:
    """Write ``event`` and one pending delivery per subscription that wants it; the event's id (None: unwanted)."""
    wanted = [row.id for row in session.execute(_SUBSCRIBERS) if event in json.loads(row.events)]
    if not wanted:
        return None
    payload = json.dumps(envelope(event, data, now), sort_keys=True, default=str)
    event_id = session.execute(
        insert(WebhookEventRow).values(model_name=model_name, event=event, payload=payload, created_at=now)
        .returning(_EVENTS.c.id)
    ).scalar_one()
    session.execute(insert(WebhookDeliveryRow), [
        {"id": str(uuid.uuid4()), "webhook_id": webhook_id, "event_id": event_id, "model_name": model_name,
         "status": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now, "last_updated_timestamp": now}
        for webhook_id in wanted
    ])
    return int(event_id)
