"""Webhook rules without I/O: event names, the payload envelope, signing, retries, Slack rendering.

The envelope and signature are MLflow's (3.3+), so receivers written for MLflow verify Calabi's
deliveries unchanged: body ``{"entity", "action", "timestamp", "data"}``, headers
``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp`` (unix seconds) and ``X-MLflow-Signature:
v1,<base64 HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>``.

The ``calabi`` payload format is the protocol ``CALABI_WEBHOOK_URLS`` receivers have always had: the
body is the event's ``data`` alone (for ``notification.created``: ``{"kind", "promotion_id", "model",
"text", "state"}``), signed the same way under the ``X-Calabi-Delivery-Id``, ``X-Calabi-Timestamp``
and ``X-Calabi-Signature`` headers (``verify_calabi_signature``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

__all__ = [
    "CALABI_EVENTS",
    "CALABI_HEADERS",
    "DELIVERY_ID_HEADER",
    "MLFLOW_EVENTS",
    "MLFLOW_HEADERS",
    "NOTIFICATION_EVENT",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "RetryPolicy",
    "envelope",
    "is_final_status",
    "next_delay_s",
    "render_slack",
    "retry_after_s",
    "sign",
    "signed_headers",
    "validate_template",
    "verify_calabi_signature",
    "webhook_body",
]

DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"
MLFLOW_HEADERS = (DELIVERY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
CALABI_HEADERS = ("X-Calabi-Delivery-Id", "X-Calabi-Timestamp", "X-Calabi-Signature")
"""The delivery id, timestamp and signature headers of the ``calabi`` payload format."""

MLFLOW_EVENTS = (
    "registered_model.created",
    "model_version.created",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version_alias.created",
    "model_version_alias.deleted",
)
PROMOTION_STATUSES = (
    "requested", "checks_failed", "check_error", "awaiting_sign_off", "signed_off", "rejected", "expired",
    "cancelled", "failed", "promoted", "rolled_back",
)
NOTIFICATION_EVENT = "notification.created"
"""A rendered promotion or review notification entered the notification outbox."""
CALABI_EVENTS = (
    NOTIFICATION_EVENT,
    "model_version_stage.transitioned",
    "break_glass.used",
    "webhook.paused",
    *(f"promotion.{status}" for status in PROMOTION_STATUSES),
)
"""Calabi's own events (MLflow has none for stages, approvals or break-glass)."""
DEFAULT_SLACK_TEMPLATE = (
    "*{{ entity }}.{{ action }}*{% if data.name %} `{{ data.name }}`{% endif %}"
    "{% if data.version %} v{{ data.version }}{% endif %}"
    "{% if data.status %}: {{ data.status }}{% endif %}"
    "{% if data.promotion_url %} <{{ data.promotion_url }}|promotion>{% endif %}"
)
_TEMPLATES = SandboxedEnvironment(autoescape=False)


def envelope(event: str, data: Mapping[str, Any], at_ms: int) -> dict[str, Any]:
    """MLflow's payload envelope for ``event`` (``entity.action``) at epoch-ms ``at_ms``."""
    entity, _, action = event.rpartition(".")
    timestamp = datetime.fromtimestamp(at_ms / 1000, tz=UTC).isoformat()
    return {"entity": entity, "action": action, "timestamp": timestamp, "data": dict(data)}


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def webhook_body(payload_format: str, template: str, payload: str) -> bytes:
    """What a delivery of the stored envelope ``payload`` sends in ``payload_format``."""
    if payload_format == "slack":
        return render_slack(template, json.loads(payload))
    if payload_format == "calabi":
        return json.dumps(json.loads(payload)["data"], sort_keys=True).encode()
    return payload.encode()


def signed_headers(payload_format: str, delivery_id: str, timestamp: str, secret: str, body: bytes) -> dict[str, str]:
    """A delivery's headers: its id and timestamp, and its signature when there is a secret."""
    id_header, timestamp_header, signature_header = CALABI_HEADERS if payload_format == "calabi" else MLFLOW_HEADERS
    headers = {"Content-Type": "application/json", id_header: delivery_id, timestamp_header: timestamp}
    if secret:
        headers[signature_header] = sign(secret, delivery_id, timestamp, body)
    return headers


def verify_calabi_signature(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """True when a ``calabi`` delivery's signature matches ``secret`` (header names in any case; for receivers)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    delivery_id, timestamp, received = (lowered.get(name.lower()) for name in CALABI_HEADERS)
    if not secret or delivery_id is None or timestamp is None or received is None:
        return False
    return hmac.compare_digest(sign(secret, delivery_id, timestamp, body).encode(), received.encode())


def validate_template(template: str) -> str | None:
    """Why a Slack template cannot be used (None: it compiles)."""
    try:
        _TEMPLATES.from_string(template)
    except TemplateError as exc:
        return f"the template does not compile: {exc}"
    return None


def render_slack(template: str, payload: Mapping[str, Any]) -> bytes:
    """A Slack incoming-webhook body (``{"text": …}``) rendered from the MLflow envelope ``payload``."""
    text = _TEMPLATES.from_string(template or DEFAULT_SLACK_TEMPLATE).render(**payload)
    return json.dumps({"text": text}).encode()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a delivery is retried, and when a subscription is paused."""

    base_s: float = 2.0
    cap_s: float = 300.0
    max_attempts: int = 12
    pause_after: int = 10
    """Consecutive failed attempts of a subscription …"""
    pause_period_s: float = 600.0
    """… spread over at least this long pause it."""


def is_final_status(status_code: int) -> bool:
    """A 4xx other than 408 (timeout) and 429 (rate limit) will not change on a retry."""
    return 400 <= status_code < 500 and status_code not in (408, 429)


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from now (None: absent or unreadable)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when: datetime = parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now_s)
    except (TypeError, ValueError):
        return None


def next_delay_s(policy: RetryPolicy, attempts: int, retry_after: float | None) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones (None: give up, the delivery is dead).

    Exponential from ``base_s`` capped at ``cap_s``; a ``Retry-After`` is honoured (up to an hour).
    """
    if attempts >= policy.max_attempts:
        return None
    delay: float = min(policy.cap_s, policy.base_s * 2.0 ** (attempts - 1))
    return max(delay, min(retry_after, 3600.0)) if retry_after is not None else delay
