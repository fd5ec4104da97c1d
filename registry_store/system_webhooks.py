"""SystemWebhooks: the subscriptions ``CALABI_WEBHOOK_URLS`` stands for, kept as the setting says.

Each configured URL is a webhook owned by ``system`` with the id ``system_webhook_id(url)``, subscribed
to ``notification.created`` in the ``calabi`` payload format (the body and ``X-Calabi-*`` signature its
receivers always had) and signed with ``CALABI_WEBHOOK_SECRET``. ``prepare`` ensures them at every
start: missing ones are created, changed ones put back (a paused one stays paused: its receiver was
failing), and system webhooks whose URL left the setting are disabled, not deleted, so their delivery
log stays. A start that changes nothing writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from policies.webhooks import NOTIFICATION_EVENT
from registry_store.audit import append_event
from registry_store.context import ServiceBase
from registry_store.errors import InvalidParameterError
from registry_store.tables import WebhookRow
from registry_store.users import SYSTEM_ACTOR
from registry_store.webhook_outbox import ACTIVE, DISABLED
from registry_store.webhook_service import audited_fields, validated_fields

__all__ = ["SYSTEM_EVENTS", "SystemWebhooks", "system_webhook_id"]

SYSTEM_EVENTS = (NOTIFICATION_EVENT,)
_DESCRIPTION = "Kept from CALABI_WEBHOOK_URLS at start-up; removing the URL there disables it."


def system_webhook_id(url: str) -> str:
    """The id of the system webhook for ``url`` (the same on every replica, so two starts cannot both add it)."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


class SystemWebhooks(ServiceBase):
    """Ensure the system webhooks for the configured URLs."""

    def ensure(self, urls: Sequence[str], secret: str) -> list[str]:
        """Make the system webhooks match ``urls`` and ``secret`` (one audited transaction); their ids.

        InvalidParameterError: a URL is not an http(s) URL with a host.
        """
        wanted = {system_webhook_id(url): url for url in dict.fromkeys(urls)}
        for url in wanted.values():
            validated_fields({"url": url}, partial=True)
        if wanted and secret and self.context.secrets is None:
            raise InvalidParameterError("This server has no key to store webhook secrets with.")
        try:
            self._ensure(wanted, secret)
        except IntegrityError:  # another replica's start added one concurrently: its transaction has committed
            self._ensure(wanted, secret)
        return list(wanted)

    def _ensure(self, wanted: dict[str, str], secret: str) -> None:
        now = self._clock()
        with self._db.write() as session:
            rows = session.exec(select(WebhookRow).where(or_(col(WebhookRow.owner) == SYSTEM_ACTOR.name,
                                                             col(WebhookRow.id).in_(list(wanted))))
                                .with_for_update()).all()
            present = {row.id: row for row in rows}
            for webhook_id, url in wanted.items():
                row = present.get(webhook_id)
                if row is None:
                    self._create(session, webhook_id, url, secret, now)
                else:
                    self._keep(session, row, url, secret, now)
            for row in rows:
                if row.owner == SYSTEM_ACTOR.name and row.id not in wanted and row.status != DISABLED:
                    before = audited_fields(row)
                    row.status, row.last_updated_timestamp = DISABLED, now
                    session.add(row)
                    append_event(session, actor=SYSTEM_ACTOR, action="update_webhook", timestamp=now,
                                 subject=f"webhook:{row.id}", before=before, after=audited_fields(row))

    def _create(self, session: Session, webhook_id: str, url: str, secret: str, now: int) -> None:
        row = WebhookRow(id=webhook_id, owner=SYSTEM_ACTOR.name, creation_timestamp=now, last_updated_timestamp=now,
                         name=_name(url), url=url, events=json.dumps(list(SYSTEM_EVENTS)), status=ACTIVE,
                         description=_DESCRIPTION, secret=self._seal(secret), payload_format="calabi", template="")
        session.add(row)
        append_event(session, actor=SYSTEM_ACTOR, action="create_webhook", timestamp=now,
                     subject=f"webhook:{row.id}", after=audited_fields(row))

    def _keep(self, session: Session, row: WebhookRow, url: str, secret: str, now: int) -> None:
        """Put ``row`` back to what the setting says; audited only when something changed."""
        before = audited_fields(row)
        wanted = {"owner": SYSTEM_ACTOR.name, "name": _name(url), "url": url, "description": _DESCRIPTION,
                  "events": json.dumps(list(SYSTEM_EVENTS)), "payload_format": "calabi", "template": "",
                  "status": ACTIVE if row.status == DISABLED else row.status}
        changed = {key: value for key, value in wanted.items() if getattr(row, key) != value}
        if self._open(row.secret) != secret:
            changed["secret"] = self._seal(secret)
        if not changed:
            return
        for key, value in changed.items():
            setattr(row, key, value)
        row.last_updated_timestamp = now
        session.add(row)
        append_event(session, actor=SYSTEM_ACTOR, action="update_webhook", timestamp=now,
                     subject=f"webhook:{row.id}", before=before, after=audited_fields(row))

    def _seal(self, secret: str) -> str:
        return self.context.secrets.seal(secret) if secret and self.context.secrets is not None else ""

    def _open(self, sealed: str) -> str | None:
        """The stored secret in clear (None: sealed under another server key, so it is sealed again)."""
        if not sealed or self.context.secrets is None:
            return ""
        try:
            return self.context.secrets.open(sealed)
        except ValueError:
            return None


def _name(url: str) -> str:
    return f"CALABI_WEBHOOK_URLS: {url}"[:256]
