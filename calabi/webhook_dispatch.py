"""The webhook dispatcher ``calabi serve`` runs periodically: claim due deliveries, send, record.

All its state is in the database (``registry_store/webhook_queue.py``), so any number of serve
processes may run it and a killed one loses nothing: its leases expire and another (or it, restarted)
sends again with the same delivery ids. Outbound requests never reach private, loopback or link-local
addresses unless ``CALABI_WEBHOOK_ALLOW_PRIVATE`` says so (every address the host resolves to is checked).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
import uuid
from urllib.parse import urlsplit

import httpx

from calabi.settings import Settings
from policies.webhooks import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RetryPolicy,
    envelope,
    render_slack,
    retry_after_s,
    sign,
)
from registry_store.service import RegistryService
from registry_store.webhook_queue import AttemptResult, DeliveryClaim
from registry_store.webhook_service import WebhookTarget

__all__ = ["WebhookDispatcher", "dispatcher_for", "post", "refused_address", "send_test"]

log = logging.getLogger("calabi.webhooks")
BATCH = 20
MAX_BATCHES = 50
EXCERPT_BYTES = 1024


def refused_address(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` must not be called (its host resolves to a non-public address, or not at all); None: go ahead."""
    host = urlsplit(url).hostname
    if not host:
        return f"refused: {url} has no host"
    if allow_private:
        return None
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        return f"refused: {host} does not resolve ({exc})"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            return (f"refused: {host} resolves to the non-public address {address} "
                    "(set CALABI_WEBHOOK_ALLOW_PRIVATE=true to allow private addresses)")
    return None


def _body(payload_format: str, template: str, payload: str) -> bytes:
    return render_slack(template, json.loads(payload)) if payload_format == "slack" else payload.encode()


def post(client: httpx.Client, url: str, delivery_id: str, secret: str, body: bytes, *,
         allow_private: bool) -> AttemptResult:
    """One signed POST of ``body`` to ``url`` (MLflow's headers); how it went. Never raises."""
    if why := refused_address(url, allow_private=allow_private):
        return AttemptResult(latency_ms=0, error=why, final=True)
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", DELIVERY_ID_HEADER: delivery_id, TIMESTAMP_HEADER: timestamp}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, delivery_id, timestamp, body)
    started = time.monotonic()
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return AttemptResult(latency_ms=_ms_since(started), error=f"{type(exc).__name__}: {exc}")
    return AttemptResult(latency_ms=_ms_since(started), status_code=response.status_code,
                         response_excerpt=response.content[:EXCERPT_BYTES].decode(errors="replace"),
                         retry_after_s=retry_after_s(response.headers.get("Retry-After"), time.time()))


def send_test(target: WebhookTarget, event: str, data: dict[str, object], *, allow_private: bool,
              timeout_s: float) -> AttemptResult:
    """Send one example event to ``target`` now, outside the outbox (MLflow's ``test_webhook``)."""
    payload = json.dumps(envelope(event, data, time.time_ns() // 1_000_000), sort_keys=True)
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        return post(client, target.url, str(uuid.uuid4()), target.secret,
                    _body(target.payload_format, target.template, payload), allow_private=allow_private)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class WebhookDispatcher:
    """Sends what the outbox holds, in order per webhook and model, as ``owner`` (unique per process)."""

    def __init__(self, registry: RegistryService, policy: RetryPolicy, *, allow_private: bool, timeout_s: float,
                 lease_s: float) -> None:
        self._registry = registry
        self._policy = policy
        self._allow_private = allow_private
        self._timeout_s = timeout_s
        self._lease_ms = int(max(lease_s, timeout_s * 2) * 1000)
        self._batch = max(1, min(BATCH, int(lease_s // (timeout_s * 2))))
        """Claims are sent one after the other: a batch must fit in its lease even if every receiver times out."""
        self.owner = f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"[:64]

    def run_once(self) -> int:
        """Claim and send until nothing is due (bounded); how many attempts were made."""
        sent = 0
        with httpx.Client(timeout=self._timeout_s, follow_redirects=False) as client:
            for _ in range(MAX_BATCHES):
                claims = self._registry.webhook_queue.claim(self.owner, limit=self._batch, lease_ms=self._lease_ms)
                if not claims:
                    break
                for claim in claims:
                    self._send(client, claim)
                    sent += 1
        return sent

    def _send(self, client: httpx.Client, claim: DeliveryClaim) -> None:
        try:
            body = _body(claim.payload_format, claim.template, claim.payload)
        except Exception as exc:  # a template that fails on this event's data: the delivery cannot be sent
            result = AttemptResult(latency_ms=0, error=f"the template failed: {exc}", final=True)
        else:
            result = post(client, claim.url, claim.delivery_id, claim.secret, body, allow_private=self._allow_private)
        status = self._registry.webhook_queue.record_attempt(self.owner, claim, result, self._policy)
        if status != "delivered":
            log.warning("webhook delivery %s (%s) attempt %d: %s -> %s", claim.delivery_id, claim.event,
                        claim.attempt, result.status_code or result.error, status)


def dispatcher_for(registry: RegistryService, settings: Settings) -> WebhookDispatcher:
    """A dispatcher configured by ``CALABI_WEBHOOK_*``."""
    policy = RetryPolicy(base_s=settings.webhook_retry_base_s, cap_s=settings.webhook_retry_cap_s,
                         max_attempts=settings.webhook_max_attempts, pause_after=settings.webhook_pause_after,
                         pause_period_s=settings.webhook_pause_period_s)
    return WebhookDispatcher(registry, policy, allow_private=settings.webhook_allow_private,
                             timeout_s=settings.webhook_timeout_s, lease_s=settings.webhook_lease_s)
