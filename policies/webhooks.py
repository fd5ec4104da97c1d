"""Webhook rules without I/O: event names, the payload envelope, signing, retries, Slack rendering.

The envelope and signature are MLflow's (3.3+), so receivers written for MLflow verify Calabi's
deliveries unchanged: body ``{"entity", "action", "timestamp", "data"}``, headers
``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp`` (unix seconds) and ``X-MLflow-Signature:
v1,<base64 HMAC-SHA256(secret, "<delivery id>.<timestamp>.<body>")>``.
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
    "DELIVERY_ID_HEADER",
    "MLFLOW_EVENTS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "RetryPolicy",
    "envelope",
    "is_final_status",
    "next_delay_s",
    "render_slack",
    "retry_after_s",
    "sign",
    "validate_template",
]

DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"

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
CALABI_EVENTS = (
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
