"""WebhookService: webhook subscriptions, their delivery log and redelivery.

Managing and reading webhooks needs **admin**: a subscription sends registry events (model names,
sources, run ids, promotion details) to any URL it names and makes the server call out, and its URL
is often itself a credential (Slack incoming webhooks). Every change is audited.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlmodel import Session, col, select, update

from policies.webhooks import CALABI_EVENTS, MLFLOW_EVENTS, validate_template
from registry_store.audit import Actor, append_event
from registry_store.context import ServiceBase
from registry_store.entities import Page, Webhook, WebhookAttempt, WebhookDelivery
from registry_store.errors import InvalidParameterError, NotFoundError
from registry_store.tables import WebhookAttemptRow, WebhookDeliveryRow, WebhookEventRow, WebhookRow
from registry_store.users import require_role
from registry_store.webhook_outbox import ACTIVE, DEAD, DELIVERED, DISABLED, FAILED, PAUSED, PENDING

__all__ = ["WebhookService", "WebhookTarget", "audited_fields", "validated_fields", "webhook_view"]

STATUSES = (ACTIVE, DISABLED, PAUSED)
FORMATS = ("mlflow", "slack", "calabi")
"""``calabi``: the event's data alone under ``X-Calabi-*`` signature headers (``policies/webhooks.py``)."""
_EDITABLE = ("name", "url", "events", "description", "secret", "status", "payload_format", "template")


@dataclass(frozen=True)
class WebhookTarget:
    """What sending to a webhook needs: its URL, its secret in clear and its format."""

    id: str
    url: str
    secret: str
    payload_format: str
    template: str
    events: tuple[str, ...]


class WebhookService(ServiceBase):
    """Create, read, change and delete webhooks; read their deliveries; redeliver."""

    def create_webhook(self, actor: Actor, *, name: object, url: object, events: object, description: object = "",
                       secret: object = "", status: object = ACTIVE, payload_format: object = "mlflow",
                       template: object = "") -> Webhook:
        """Create a subscription (``events``: MLflow's and Calabi's event names)."""
        require_role(actor, "admin", "manage webhooks")
        fields = validated_fields({"name": name, "url": url, "events": events, "description": description or "",
                             "secret": secret or "", "status": status or ACTIVE,
                             "payload_format": payload_format or "mlflow", "template": template or ""})
        now = self._clock()
        row = WebhookRow(id=uuid.uuid4().hex, owner=actor.name, creation_timestamp=now, last_updated_timestamp=now,
                         name=str(fields["name"]), url=str(fields["url"]), events=str(fields["events"]),
                         status=str(fields["status"]), description=str(fields["description"]),
                         secret=self._seal(str(fields["secret"])), payload_format=str(fields["payload_format"]),
                         template=str(fields["template"]))
        with self._db.write() as session:
            session.add(row)
            append_event(session, actor=actor, action="create_webhook", timestamp=now, subject=f"webhook:{row.id}",
                         after=audited_fields(row))
        return webhook_view(row)

    def get_webhook(self, actor: Actor, webhook_id: object) -> Webhook:
        """One webhook."""
        require_role(actor, "admin", "read webhooks")
        with self._db.read() as session:
            return webhook_view(_webhook(session, webhook_id))

    def list_webhooks(self, actor: Actor, *, max_results: object = 100, page_token: object = None) -> Page[Webhook]:
        """Webhooks, oldest first, a page at a time (``page_token`` is the offset the last page handed out)."""
        require_role(actor, "admin", "read webhooks")
        limit = _bounded_int(max_results, "max_results", 1, 1000, 100)
        offset = _bounded_int(page_token, "page_token", 0, 1 << 31, 0)
        with self._db.read() as session:
            rows = session.exec(select(WebhookRow).order_by(col(WebhookRow.creation_timestamp), col(WebhookRow.id))
                                .offset(offset).limit(limit + 1)).all()
        more = len(rows) > limit
        token = str(offset + limit) if more else None
        return Page(items=[webhook_view(r) for r in rows[:limit]], next_page_token=token)

    def update_webhook(self, actor: Actor, webhook_id: object, **changes: object) -> Webhook:
        """Change the given fields (None keeps one); resuming (``ACTIVE``) sends what waited at once."""
        require_role(actor, "admin", "manage webhooks")
        given = {k: v for k, v in changes.items() if k in _EDITABLE and v is not None}
        fields = validated_fields(given, partial=True)
        with self._db.write() as session:
            row = _webhook(session, webhook_id, lock=True)
            before = audited_fields(row)
            now = self._clock()
            for key, value in fields.items():
                setattr(row, key, self._seal(str(value)) if key == "secret" else value)
            if fields.get("status") == ACTIVE:
                row.consecutive_failures, row.failing_since = 0, None
                session.exec(update(WebhookDeliveryRow).where(
                    col(WebhookDeliveryRow.webhook_id) == row.id, col(WebhookDeliveryRow.status) == PENDING)
                    .values(next_attempt_at=now))
            row.last_updated_timestamp = now
            session.add(row)
            append_event(session, actor=actor, action="update_webhook", timestamp=now, subject=f"webhook:{row.id}",
                         before=before, after=audited_fields(row))
            return webhook_view(row)

    def delete_webhook(self, actor: Actor, webhook_id: object) -> None:
        """Delete a webhook with its deliveries and their attempts."""
        require_role(actor, "admin", "manage webhooks")
        with self._db.write() as session:
            row = _webhook(session, webhook_id, lock=True)
            append_event(session, actor=actor, action="delete_webhook", timestamp=self._clock(),
                         subject=f"webhook:{row.id}", before=audited_fields(row))
            session.delete(row)

    def target(self, actor: Actor, webhook_id: object) -> WebhookTarget:
        """What a test send to the webhook needs (its secret in clear: for the sender only, never a response)."""
        require_role(actor, "admin", "test webhooks")
        with self._db.read() as session:
            row = _webhook(session, webhook_id)
        return WebhookTarget(row.id, row.url, self._open(row.secret), row.payload_format, row.template,
                             tuple(json.loads(row.events)))

    def list_deliveries(self, actor: Actor, webhook_id: object, *, limit: object = 100,
                        delivery_id: object = None) -> list[WebhookDelivery]:
        """A webhook's deliveries, newest first, each with its attempts (one delivery with ``delivery_id``)."""
        require_role(actor, "admin", "read webhook deliveries")
        count = _bounded_int(limit, "limit", 1, 1000, 100)
        with self._db.read() as session:
            hook = _webhook(session, webhook_id)
            query = select(WebhookDeliveryRow, WebhookEventRow.event).join(
                WebhookEventRow, col(WebhookEventRow.id) == col(WebhookDeliveryRow.event_id)
            ).where(col(WebhookDeliveryRow.webhook_id) == hook.id)
            if delivery_id is not None:
                query = query.where(col(WebhookDeliveryRow.id) == str(delivery_id))
            found = session.exec(query.order_by(col(WebhookDeliveryRow.event_id).desc()).limit(count)).all()
            ids = [row.id for row, _ in found]
            attempts: dict[str, list[WebhookAttempt]] = {}
            for attempt in session.exec(select(WebhookAttemptRow).where(col(WebhookAttemptRow.delivery_id).in_(ids))
                                        .order_by(col(WebhookAttemptRow.attempt))).all():
                attempts.setdefault(attempt.delivery_id, []).append(_attempt_view(attempt))
        return [WebhookDelivery(id=row.id, webhook_id=row.webhook_id, event=event, model_name=row.model_name,
                                status=row.status, attempts=row.attempts, next_attempt_at=row.next_attempt_at,
                                created_at=row.created_at, attempt_log=attempts.get(row.id, []))
                for row, event in found]

    def redeliver(self, actor: Actor, webhook_id: object, *, delivery_id: object = None, since: object = None,
                  until: object = None) -> int:
        """Send one delivery (``delivery_id``) or every delivery of events in [``since``, ``until``] (epoch ms)
        again, with the same delivery ids; returns how many were queued."""
        require_role(actor, "admin", "redeliver webhook events")
        if (delivery_id is None) == (since is None and until is None):
            raise InvalidParameterError("Give either 'delivery_id' or a time range ('since' and/or 'until').")
        with self._db.write() as session:
            hook = _webhook(session, webhook_id, lock=True)
            query = update(WebhookDeliveryRow).where(col(WebhookDeliveryRow.webhook_id) == hook.id)
            if delivery_id is not None:
                query = query.where(col(WebhookDeliveryRow.id) == str(delivery_id))
            else:
                low = _bounded_int(since, "since", 0, 1 << 62, 0)
                high = _bounded_int(until, "until", 0, 1 << 62, 1 << 62)
                query = query.where(col(WebhookDeliveryRow.event_id).in_(
                    select(WebhookEventRow.id).where(col(WebhookEventRow.created_at) >= low,
                                                     col(WebhookEventRow.created_at) <= high)))
            now = self._clock()
            count = session.exec(query.where(col(WebhookDeliveryRow.status).in_((DELIVERED, FAILED, DEAD)))
                                 .values(status=PENDING, next_attempt_at=now, last_updated_timestamp=now)).rowcount
            if delivery_id is not None and count == 0:
                _delivery_exists(session, hook.id, str(delivery_id))
            append_event(session, actor=actor, action="redeliver_webhook", timestamp=now, subject=f"webhook:{hook.id}",
                         after={"delivery_id": delivery_id, "since": since, "until": until, "queued": count})
            return int(count)

    def _seal(self, secret: str) -> str:
        if not secret:
            return ""
        if self.context.secrets is None:
            raise InvalidParameterError("This server has no key to store webhook secrets with.")
        return self.context.secrets.seal(secret)

    def _open(self, sealed: str) -> str:
        if not sealed or self.context.secrets is None:
            return ""
        return self.context.secrets.open(sealed)


def webhook_view(row: WebhookRow) -> Webhook:
    """The public view of a webhook row (no secret)."""
    return Webhook(id=row.id, name=row.name, url=row.url, events=json.loads(row.events), status=row.status,
                   description=row.description, has_secret=bool(row.secret), payload_format=row.payload_format,
                   template=row.template, owner=row.owner, consecutive_failures=row.consecutive_failures,
                   creation_timestamp=row.creation_timestamp, last_updated_timestamp=row.last_updated_timestamp)


def _attempt_view(row: WebhookAttemptRow) -> WebhookAttempt:
    return WebhookAttempt(attempt=row.attempt, started_at=row.started_at, status_code=row.status_code, error=row.error,
                          latency_ms=row.latency_ms, response_excerpt=row.response_excerpt)


def audited_fields(row: WebhookRow) -> dict[str, Any]:
    """What an audit event records of a webhook (never its secret)."""
    return {"name": row.name, "url": row.url, "events": json.loads(row.events), "status": row.status,
            "payload_format": row.payload_format, "has_secret": bool(row.secret)}


def _webhook(session: Session, webhook_id: object, *, lock: bool = False) -> WebhookRow:
    query = select(WebhookRow).where(col(WebhookRow.id) == str(webhook_id))
    row = session.exec(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFoundError(f"Webhook with ID {webhook_id} not found.")
    return row


def _delivery_exists(session: Session, webhook_id: str, delivery_id: str) -> None:
    status = session.exec(select(WebhookDeliveryRow.status).where(col(WebhookDeliveryRow.webhook_id) == webhook_id,
                                                                  col(WebhookDeliveryRow.id) == delivery_id)).first()
    if status is None:
        raise NotFoundError(f"Delivery {delivery_id} of webhook {webhook_id} not found.")


def _bounded_int(value: object, name: str, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidParameterError(f"Parameter '{name}' must be an integer.") from None
    if not low <= number <= high:
        raise InvalidParameterError(f"Parameter '{name}' must be between {low} and {high}.")
    return number


def validated_fields(fields: dict[str, object], *, partial: bool = False) -> dict[str, object]:
    """The webhook fields, checked; InvalidParameterError names the first bad one."""
    out: dict[str, object] = {}
    for key, value in fields.items():
        if key in ("name", "url", "description", "secret", "status", "payload_format", "template") \
                and not isinstance(value, str):
            raise InvalidParameterError(f"Parameter '{key}' must be a string.")
        out[key] = value
    if not partial or "name" in out:
        name = str(out.get("name") or "").strip()
        if not name or len(name) > 256:
            raise InvalidParameterError("Missing value for required parameter 'name' (1 to 256 characters).")
        out["name"] = name
    if not partial or "url" in out:
        url = str(out.get("url") or "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2048:
            raise InvalidParameterError(f"Invalid webhook URL '{url}': an http(s) URL with a host is required.")
    if not partial or "events" in out:
        events = out.get("events")
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise InvalidParameterError("Parameter 'events' must be a non-empty list of event names.")
        unknown = sorted(set(events) - set(MLFLOW_EVENTS) - set(CALABI_EVENTS))
        if unknown:
            raise InvalidParameterError(f"Unknown webhook event(s) {', '.join(unknown)}; known: "
                                        f"{', '.join((*MLFLOW_EVENTS, *CALABI_EVENTS))}.")
        out["events"] = json.dumps(list(dict.fromkeys(events)))
    if "status" in out and str(out["status"]).upper() not in STATUSES:
        raise InvalidParameterError(f"Invalid webhook status '{out['status']}'; one of {', '.join(STATUSES)}.")
    if "status" in out:
        out["status"] = str(out["status"]).upper()
    if "payload_format" in out and out["payload_format"] not in FORMATS:
        raise InvalidParameterError(f"Invalid payload_format '{out['payload_format']}'; one of {', '.join(FORMATS)}.")
    if out.get("template") and (why := validate_template(str(out["template"]))):
        raise InvalidParameterError(why)
    return out
