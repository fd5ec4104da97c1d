"""NotificationOutbox: rendered promotion and review notifications, one row per notification event.

Writing a row also publishes its ``notification.created`` webhook event in the same transaction, so the
receivers of ``CALABI_WEBHOOK_URLS`` (system subscriptions) and any other subscriber get each notification
exactly once, through the dispatcher (retries, delivery log, redelivery).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from policies.webhooks import NOTIFICATION_EVENT
from registry_store.audit import Actor
from registry_store.context import ServiceBase
from registry_store.entities import Notification
from registry_store.errors import InvalidParameterError
from registry_store.model_access import visible_model_name
from registry_store.tables import NotificationRow
from registry_store.users import require_role

__all__ = ["NotificationOutbox", "notification_view"]


class NotificationOutbox(ServiceBase):
    """Append to and read the notification outbox."""

    def append_notification(
        self, *, kind: str, promotion_id: str, model_name: str, recipients: Sequence[str], body: str,
        state: Mapping[str, Any], event_key: str | None = None,
    ) -> int:
        """Put a rendered notification in the outbox and its ``notification.created`` event in the webhook
        outbox, in one transaction; returns the row's id.

        The event's data is ``{"kind", "promotion_id", "model", "text", "state"}`` (``state``: the promotion's
        or review's state as JSON); the row's ``delivery`` names the event (``{"webhook_event": id}``; empty
        when no webhook subscribes). ``event_key`` names the notification event (e.g. the activity that sends
        it): appending the same event again adds nothing and returns the first row's id, so a retried send is
        recorded and delivered once.
        """
        try:
            with self._db.write() as session:
                if event_key is not None and (sent := _row_id(session, event_key)) is not None:
                    return sent
                event_id = self.context.publish(session, NOTIFICATION_EVENT, model_name, {
                    "kind": kind, "promotion_id": promotion_id, "model": model_name, "text": body, "state": state})
                row = NotificationRow(timestamp=self._clock(), kind=kind, promotion_id=promotion_id,
                                      model_name=model_name, recipients=json.dumps(list(recipients)), body=body,
                                      delivery=json.dumps({} if event_id is None else {"webhook_event": event_id}),
                                      event_key=event_key)
                session.add(row)
                session.flush()
                assert row.id is not None
                return row.id
        except IntegrityError:  # the same event appended concurrently (two attempts of one send): it is recorded
            if event_key is None or (sent := self.notification_for(event_key)) is None:
                raise
            return sent

    def notification_for(self, event_key: str) -> int | None:
        """The id of the outbox row of notification event ``event_key`` (None: not recorded yet)."""
        with self._db.read() as session:
            return _row_id(session, event_key)

    def list_notifications(
        self, actor: Actor, *, promotion_id: str | None = None, limit: int = 100
    ) -> list[Notification]:
        """The outbox, newest first, optionally for one promotion."""
        require_role(actor, "viewer", "read notifications")
        if not 1 <= limit <= 1000:
            raise InvalidParameterError("Parameter 'limit' must be between 1 and 1000.")
        query = select(NotificationRow).where(visible_model_name(actor, NotificationRow.model_name))
        if promotion_id:
            query = query.where(col(NotificationRow.promotion_id) == promotion_id)
        with self._db.read() as session:
            rows = session.exec(query.order_by(col(NotificationRow.id).desc()).limit(limit)).all()
        return [notification_view(r) for r in rows]


def notification_view(row: NotificationRow) -> Notification:
    """The public view of an outbox row."""
    return Notification(id=row.id or 0, timestamp=row.timestamp, kind=row.kind, promotion_id=row.promotion_id,
                        model_name=row.model_name, recipients=json.loads(row.recipients), body=row.body,
                        delivery=json.loads(row.delivery))


def _row_id(session: Session, event_key: str) -> int | None:
    return session.exec(select(NotificationRow.id).where(col(NotificationRow.event_key) == event_key)).first()
