"""Notifications: rendered messages go to the outbox and, signed, to webhooks.

Webhook protocol
----------------
Each configured URL receives ``POST`` with ``Content-Type: application/json`` and the body
``{"kind", "promotion_id", "model", "text", "state"}`` (``text`` is the rendered message,
``state`` the promotion's state as JSON), plus the headers

* ``X-Calabi-Delivery-Id``: a fresh UUID4 per delivery (a retried activity sends a new one);
* ``X-Calabi-Timestamp``: unix seconds when it was sent;
* ``X-Calabi-Signature`` (only when a secret is configured):
  ``v1,<base64(HMAC-SHA256(secret, "<delivery id>.<timestamp>.<raw body bytes>"))>``.

A receiver recomputes the signature over the raw body it received with
``verify_signature(secret, headers, body)`` (constant-time comparison) and should refuse
stale timestamps to stop replays. Requests time out after 5 s.

After posting, the outbox row is written (``registry.notifications.append_notification``) with a
``delivery`` mapping ``{url: {"ok", "status" | "error", "delivery_id"}}``. A webhook that
fails (connection refused, timeout, non-2xx answer) is recorded there and logged, never
raised: delivery is best effort and at least once.

Each notification event has an ``event_key`` (the notify activity's run and id, the same for
every retry of one send). The outbox holds one row per event: a retry that finds its event's
row neither posts nor writes again. Only an attempt lost between posting and writing the row
(a worker killed right then) makes its retry post again, with a new delivery id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from registry_store.service import RegistryService

__all__ = ["SIGNATURE_VERSION", "WEBHOOK_TIMEOUT_S", "Notifier", "sign", "verify_signature"]

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_S = 5.0
SIGNATURE_VERSION = "v1"
DELIVERY_ID_HEADER = "X-Calabi-Delivery-Id"
TIMESTAMP_HEADER = "X-Calabi-Timestamp"
SIGNATURE_HEADER = "X-Calabi-Signature"


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-Calabi-Signature`` value for one delivery."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION}," + base64.b64encode(digest).decode()


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """True when the delivery's ``X-Calabi-Signature`` matches ``secret`` (header names in any case)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    delivery_id = lowered.get(DELIVERY_ID_HEADER.lower())
    timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    received = lowered.get(SIGNATURE_HEADER.lower())
    if not secret or delivery_id is None or timestamp is None or received is None:
        return False
    return hmac.compare_digest(sign(secret, delivery_id, timestamp, body).encode(), received.encode())


def _default_client() -> httpx.Client:
    return httpx.Client(timeout=WEBHOOK_TIMEOUT_S)


class Notifier:
    """Delivers rendered notifications to the outbox and the configured webhooks."""

    def __init__(
        self,
        registry: RegistryService,
        *,
        webhook_urls: Sequence[str] = (),
        secret: str | None = None,
        recipients: Sequence[str] = (),
        http: Callable[[], httpx.Client] = _default_client,
    ) -> None:
        self._registry = registry
        self._webhook_urls = list(webhook_urls)
        self._secret = secret or None
        self._recipients = list(recipients)
        self._http = http

    def deliver(self, *, kind: str, promotion_id: str, model_name: str, body: str, payload: dict[str, Any],
                event_key: str | None = None, recipients: Sequence[str] | None = None) -> int:
        """Post ``body`` (and ``payload`` as ``state``) to every webhook, then write the outbox row; its id.

        An event (``event_key``) already in the outbox was delivered by an earlier attempt: its row's id.
        ``recipients`` replaces the configured recipients (e.g. the admins an overdue review escalates to).
        """
        if event_key is not None and (sent := self._registry.notifications.notification_for(event_key)) is not None:
            return sent
        content = json.dumps(
            {"kind": kind, "promotion_id": promotion_id, "model": model_name, "text": body, "state": payload},
            sort_keys=True, default=str,
        ).encode()
        delivery: dict[str, Any] = {}
        if self._webhook_urls:
            with self._http() as client:
                delivery = {url: self._post(client, url, content) for url in self._webhook_urls}
        return self._registry.notifications.append_notification(
            kind=kind, promotion_id=promotion_id, model_name=model_name, body=body,
            recipients=self._recipients if recipients is None else list(recipients),
            delivery=delivery, event_key=event_key,
        )

    def _post(self, client: httpx.Client, url: str, content: bytes) -> dict[str, Any]:
        delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time()))
        headers = {"Content-Type": "application/json", DELIVERY_ID_HEADER: delivery_id, TIMESTAMP_HEADER: timestamp}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, delivery_id, timestamp, content)
        try:
            response = client.post(url, content=content, headers=headers, timeout=WEBHOOK_TIMEOUT_S)
        except Exception as exc:  # any failure (bad URL, refused, timeout) is recorded, never raised
            log.warning("webhook %s failed: %s: %s", url, type(exc).__name__, exc)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "delivery_id": delivery_id}
        if not response.is_success:
            log.warning("webhook %s answered %s", url, response.status_code)
        return {"ok": response.is_success, "status": response.status_code, "delivery_id": delivery_id}
