"""Notifications: rendered messages go to the outbox and, signed, to webhooks.

Webhook deliveries are ``POST`` requests with a JSON body
``{"kind", "promotion_id", "model", "text", "state"}`` and the headers
``X-Calabi-Delivery-Id`` (a UUID), ``X-Calabi-Timestamp`` (unix seconds) and, when a
secret is configured, ``X-Calabi-Signature: v1,<base64(HMAC-SHA256(secret,
"<delivery id>.<timestamp>.<body>"))>``. Receivers check it with ``verify_signature``.
A webhook that fails is recorded in the outbox row and logged, never raised.
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

__all__ = ["Notifier", "sign", "verify_signature"]

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT_S = 5.0


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-Calabi-Signature`` value for one delivery."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """True when the delivery's signature header matches ``secret``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    expected = sign(secret, lowered.get("x-calabi-delivery-id", ""), lowered.get("x-calabi-timestamp", ""), body)
    return hmac.compare_digest(expected, lowered.get("x-calabi-signature", ""))


class Notifier:
    """Delivers rendered notifications to the outbox and the configured webhooks."""

    def __init__(
        self,
        registry: RegistryService,
        *,
        webhook_urls: Sequence[str] = (),
        secret: str | None = None,
        recipients: Sequence[str] = (),
        http: Callable[[], httpx.Client] | None = None,
    ) -> None:
        self._registry = registry
        self._webhook_urls = list(webhook_urls)
        self._secret = secret
        self._recipients = list(recipients)
        self._http = http or (lambda: httpx.Client(timeout=WEBHOOK_TIMEOUT_S))

    def deliver(self, *, kind: str, promotion_id: str, model_name: str, text: str, state: dict[str, Any]) -> int:
        """Post to every webhook, then write the outbox row with the delivery results; its id."""
        body = json.dumps(
            {"kind": kind, "promotion_id": promotion_id, "model": model_name, "text": text, "state": state},
            sort_keys=True, default=str,
        ).encode()
        delivery = {url: self._post(url, body) for url in self._webhook_urls}
        return self._registry.append_notification(
            kind=kind, promotion_id=promotion_id, model_name=model_name, recipients=self._recipients, body=text,
            delivery=delivery,
        )

    def _post(self, url: str, body: bytes) -> dict[str, Any]:
        delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Calabi-Delivery-Id": delivery_id,
                   "X-Calabi-Timestamp": timestamp}
        if self._secret:
            headers["X-Calabi-Signature"] = sign(self._secret, delivery_id, timestamp, body)
        try:
            with self._http() as client:
                response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed: %s", url, exc)
            return {"ok": False, "error": str(exc), "delivery_id": delivery_id}
        return {"ok": response.is_success, "status": response.status_code, "delivery_id": delivery_id}
