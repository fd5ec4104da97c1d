"""The webhook dispatcher ``calabi serve`` runs periodically: claim due deliveries, send, record.

All its state is in the database (``registry_store/webhook_queue.py``), so any number of serve
processes may run it and a killed one loses nothing: its leases expire and another (or it, restarted)
sends again with the same delivery ids. Outbound requests never reach private, loopback or link-local
addresses unless ``CALABI_WEBHOOK_ALLOW_PRIVATE`` says so: every address the host resolves to is checked,
and the connection goes to a checked address (``PinnedBackend``), so DNS rebinding between the check and
the connection cannot redirect it. Delivered deliveries older than ``CALABI_WEBHOOK_RETENTION_DAYS`` are
pruned; undelivered ones are kept.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from calabi.settings import Settings
from policies.webhooks import RetryPolicy, envelope, retry_after_s, signed_headers, webhook_body
from registry_store.service import RegistryService
from registry_store.webhook_queue import AttemptResult, DeliveryClaim
from registry_store.webhook_service import WebhookTarget

__all__ = [
    "PinnedBackend", "RefusedAddress", "WebhookDispatcher", "checked_addresses", "dispatcher_for", "may_reach_private",
    "post", "send_test", "webhook_client",
]

log = logging.getLogger("calabi.webhooks")
BATCH = 20
MAX_BATCHES = 50
EXCERPT_BYTES = 1024
PRUNE_EVERY_S = 3600.0


class RefusedAddress(Exception):
    """An outbound request would reach an address webhooks must not reach (the message says why)."""


Resolver = Callable[..., list[tuple[Any, ...]]]
"""``socket.getaddrinfo``'s signature: tests substitute one that answers differently on each call."""


def checked_addresses(host: str, *, allow_private: bool, resolve: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses ``host`` resolves to, each checked: RefusedAddress when one is not public (final),
    httpcore.ConnectError when it does not resolve (retried, like any connection error)."""
    try:
        infos = resolve(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise httpcore.ConnectError(f"{host} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if not addresses:
        raise httpcore.ConnectError(f"{host} does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text)
        if not allow_private and (not address.is_global or address.is_multicast):
            raise RefusedAddress(f"refused: {host} resolves to the non-public address {address} "
                                 "(set CALABI_WEBHOOK_ALLOW_PRIVATE=true to allow private addresses)")
    return addresses


class PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the addresses it resolved and checked for this connection.

    httpcore asks the backend for a TCP connection to the URL's host; this one resolves the host once,
    checks every address and connects to a checked address itself, so a second DNS answer (rebinding)
    is never used. TLS is started by httpcore over this stream with the URL's host name, so SNI and
    certificate verification, like the Host header, stay those of the host name.
    """

    def __init__(self, *, allow_private: bool, resolve: Resolver = socket.getaddrinfo,
                 tcp: httpcore.NetworkBackend | None = None) -> None:
        self._allow_private = allow_private
        self._resolve = resolve
        self._tcp = tcp or httpcore.SyncBackend()
        """Opens the TCP connection to an address (the standard backend)."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        """A connection to the first reachable checked address of ``host``."""
        addresses = checked_addresses(host, allow_private=self._allow_private, resolve=self._resolve)
        for address in addresses[:-1]:
            try:
                return self._tcp.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError:
                continue
        return self._tcp.connect_tcp(addresses[-1], port, timeout, local_address, socket_options)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        """Never: webhooks reach hosts by address."""
        raise RefusedAddress("refused: webhooks do not use unix sockets")

    def sleep(self, seconds: float) -> None:
        """As the standard backend does."""
        self._tcp.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over a ``PinnedBackend`` (no proxies from the environment: they would resolve again)."""

    def __init__(self, backend: PinnedBackend) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(trust_env=False),
                                             network_backend=backend)


def webhook_client(backend: PinnedBackend, *, timeout_s: float) -> httpx.Client:
    """An httpx client whose every connection goes to an address ``backend`` checked when it resolved it."""
    transport = PinnedTransport(backend)
    return httpx.Client(transport=transport, timeout=timeout_s, follow_redirects=False)


def post(client: httpx.Client, url: str, delivery_id: str, secret: str, body: bytes, *,
         payload_format: str = "mlflow") -> AttemptResult:
    """One signed POST of ``body`` to ``url`` (the headers of ``payload_format``); how it went. Never raises.

    ``client`` is a ``webhook_client``: it refuses a forbidden address when it connects (a final failure).
    """
    if not urlsplit(url).hostname:
        return AttemptResult(latency_ms=0, error=f"refused: {url} has no host", final=True)
    headers = signed_headers(payload_format, delivery_id, str(int(time.time())), secret, body)
    started = time.monotonic()
    try:
        response = client.post(url, content=body, headers=headers)
    except RefusedAddress as exc:
        return AttemptResult(latency_ms=_ms_since(started), error=str(exc), final=True)
    except httpx.HTTPError as exc:
        return AttemptResult(latency_ms=_ms_since(started), error=f"{type(exc).__name__}: {exc}")
    return AttemptResult(latency_ms=_ms_since(started), status_code=response.status_code,
                         response_excerpt=response.content[:EXCERPT_BYTES].decode(errors="replace"),
                         retry_after_s=retry_after_s(response.headers.get("Retry-After"), time.time()))


def send_test(target: WebhookTarget, event: str, data: dict[str, object], *, allow_private: bool,
              timeout_s: float) -> AttemptResult:
    """Send one example event to ``target`` now, outside the outbox (MLflow's ``test_webhook``)."""
    payload = json.dumps(envelope(event, data, time.time_ns() // 1_000_000), sort_keys=True)
    with webhook_client(PinnedBackend(allow_private=allow_private), timeout_s=timeout_s) as client:
        return post(client, target.url, str(uuid.uuid4()), target.secret,
                    webhook_body(target.payload_format, target.template, payload),
                    payload_format=target.payload_format)


def may_reach_private(settings: Settings, url: str) -> bool:
    """Whether requests to ``url`` may reach private addresses: the setting allows it, or the operator named
    the URL in ``CALABI_WEBHOOK_URLS`` (receivers that always got notifications, often on internal hosts)."""
    return settings.webhook_allow_private or url in settings.webhook_urls


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class WebhookDispatcher:
    """Sends what the outbox holds, in order per webhook and model, as ``owner`` (unique per process).

    ``trusted_urls`` may reach private addresses even when ``allow_private`` is off (``may_reach_private``).
    Every ``PRUNE_EVERY_S`` a run also deletes deliveries delivered more than ``retention_days`` ago.
    """

    def __init__(self, registry: RegistryService, policy: RetryPolicy, *, allow_private: bool, timeout_s: float,
                 lease_s: float, trusted_urls: frozenset[str] = frozenset(), retention_days: float = 30.0) -> None:
        self._registry = registry
        self._policy = policy
        self._allow_private = allow_private
        self._trusted_urls = trusted_urls
        self._timeout_s = timeout_s
        self._lease_ms = int(max(lease_s, timeout_s * 2) * 1000)
        self._batch = max(1, min(BATCH, int(lease_s // (timeout_s * 2))))
        """Claims are sent one after the other: a batch must fit in its lease even if every receiver times out."""
        self._retention_ms = int(retention_days * 86_400_000)
        self._pruned_at: float | None = None
        self.owner = f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"[:64]

    def run_once(self) -> int:
        """Claim and send until nothing is due (bounded), pruning old deliveries now and then; attempts made."""
        self._prune_when_due()
        sent = 0
        with webhook_client(PinnedBackend(allow_private=self._allow_private), timeout_s=self._timeout_s) as strict, \
                webhook_client(PinnedBackend(allow_private=True), timeout_s=self._timeout_s) as trusted:
            for _ in range(MAX_BATCHES):
                claims = self._registry.webhook_queue.claim(self.owner, limit=self._batch, lease_ms=self._lease_ms)
                if not claims:
                    break
                for claim in claims:
                    self._send(trusted if claim.url in self._trusted_urls else strict, claim)
                    sent += 1
        return sent

    def _prune_when_due(self) -> None:
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        pruned = self._registry.webhook_queue.prune_delivered(older_than_ms=self._retention_ms)
        if pruned:
            log.info("pruned %d webhook deliveries delivered over the retention period", pruned)

    def _send(self, client: httpx.Client, claim: DeliveryClaim) -> None:
        try:
            body = webhook_body(claim.payload_format, claim.template, claim.payload)
        except Exception as exc:  # a template that fails on this event's data: the delivery cannot be sent
            result = AttemptResult(latency_ms=0, error=f"the template failed: {exc}", final=True)
        else:
            result = post(client, claim.url, claim.delivery_id, claim.secret, body,
                          payload_format=claim.payload_format)
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
                             timeout_s=settings.webhook_timeout_s, lease_s=settings.webhook_lease_s,
                             trusted_urls=frozenset(settings.webhook_urls),
                             retention_days=settings.webhook_retention_days)
