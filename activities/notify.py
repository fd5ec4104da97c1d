"""Notifications: rendered messages go to the notification outbox, and from there to webhooks.

``Notifier.deliver`` writes one outbox row per notification event (``event_key``: the notify activity's
run and id, the same for every retry of one send) and, in the same transaction, the event's
``notification.created`` webhook event (``registry.notifications.append_notification``). It sends
nothing itself, so the activity is quick: ``calabi serve``'s dispatcher delivers the event to every
subscription that wants it, with retries, a delivery log and redelivery. The URLs in
``CALABI_WEBHOOK_URLS`` are such subscriptions (owned by ``system``, ``payload_format`` ``calabi``):
they receive the body ``{"kind", "promotion_id", "model", "text", "state"}`` signed with
``CALABI_WEBHOOK_SECRET`` under the ``X-Calabi-*`` headers (``policies/webhooks.py``), one delivery id
per event on every attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from registry_store.service import RegistryService

__all__ = ["Notifier"]


class Notifier:
    """Puts rendered notifications in the outbox, addressed to the configured recipients by default."""

    def __init__(self, registry: RegistryService, *, recipients: Sequence[str] = ()) -> None:
        self._registry = registry
        self._recipients = list(recipients)

    def deliver(self, *, kind: str, promotion_id: str, model_name: str, body: str, payload: dict[str, Any],
                event_key: str | None = None, recipients: Sequence[str] | None = None) -> int:
        """Record ``body`` (and ``payload`` as the event's ``state``) once per ``event_key``; the outbox row's id.

        ``recipients`` replaces the configured recipients (e.g. the admins an overdue review escalates to).
        """
        return self._registry.notifications.append_notification(
            kind=kind, promotion_id=promotion_id, model_name=model_name, body=body,
            recipients=self._recipients if recipients is None else list(recipients),
            state=payload, event_key=event_key,
        )
