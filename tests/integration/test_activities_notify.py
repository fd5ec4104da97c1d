"""Notifications through the outbox: ``CALABI_WEBHOOK_URLS`` as system subscriptions ensured by ``prepare``,
the notifier's row and its ``notification.created`` event written once per event, and the real dispatcher
delivering them, signed as receivers always verified them, to a real HTTP receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from activities.notify import Notifier
from calabi.bootstrap import prepare
from calabi.webhook_dispatch import WebhookDispatcher, dispatcher_for
from policies.webhooks import sign, verify_calabi_signature
from registry_store.system_webhooks import system_webhook_id
from tests.integration.helpers import Registry, build_registry

SECRET = "whsec-test-1"
STATE = {"status": "promoted", "version": 2, "approvals": [{"user": "alice"}]}


@dataclass
class Receiver:
    """Webhooks on 127.0.0.1: ``/ok`` answers 204, ``/broken`` 500; every request is recorded."""

    base: str = ""
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, path: str | None = None) -> list[tuple[str, dict[str, str], bytes]]:
        with self.lock:
            return [r for r in self.received if path is None or r[0] == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.received.append((self.path, dict(self.headers.items()), body))
            self.send_response(500 if self.path == "/broken" else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = build_registry(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    yield reg
    reg.services.close()


def configure(reg: Registry, urls: list[str], secret: str | None) -> WebhookDispatcher:
    """Start-up with ``CALABI_WEBHOOK_URLS=urls`` (``prepare``), and that server's dispatcher (private
    addresses refused, as by default: the configured URLs are the operator's and may be private)."""
    settings = reg.services.settings.model_copy(update={
        "webhook_urls": urls, "webhook_secret": SecretStr(secret) if secret else None, "admin_token": None,
        "webhook_timeout_s": 2.0, "webhook_allow_private": False})
    prepare(settings)
    return dispatcher_for(reg.svc, settings)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def attempts(reg: Registry, url: str) -> list[tuple[str, int | None, str]]:
    """(delivery status, answer, error) of every attempt to the system webhook of ``url``."""
    deliveries = reg.svc.webhooks.list_deliveries(reg.admin, system_webhook_id(url))
    return [(d.status, a.status_code, a.error) for d in deliveries for a in d.attempt_log]


def test_a_notification_is_delivered_signed_through_the_outbox(registry: Registry, receiver: Receiver) -> None:
    url = f"{receiver.base}/ok"
    dispatcher = configure(registry, [url], SECRET)
    notifier = Notifier(registry.svc, recipients=["ml-leads@example.com"])

    row_id = notifier.deliver(kind="promoted", promotion_id="p-1", model_name="churn",
                              body="[Calabi] churn v2 → Production: promoted\n", payload=STATE)
    assert receiver.requests() == [], "the notifier sends nothing itself"
    assert dispatcher.run_once() == 1

    [(path, headers, raw)] = receiver.requests()
    assert path == "/ok" and headers["Content-Type"] == "application/json"
    assert json.loads(raw) == {"kind": "promoted", "promotion_id": "p-1", "model": "churn",
                               "text": "[Calabi] churn v2 → Production: promoted\n", "state": STATE}
    delivery_id = headers["X-Calabi-Delivery-Id"]
    assert uuid.UUID(delivery_id).version == 4
    assert abs(int(headers["X-Calabi-Timestamp"]) - time.time()) < 300
    assert headers["X-Calabi-Signature"] == sign(SECRET, delivery_id, headers["X-Calabi-Timestamp"], raw)
    assert verify_calabi_signature(SECRET, headers, raw)
    assert not verify_calabi_signature("another-secret", headers, raw)
    assert not any(name.startswith("X-MLflow") for name in headers)

    [row] = registry.svc.notifications.list_notifications(registry.viewer, promotion_id="p-1")
    assert (row.id, row.kind, row.model_name, row.recipients) == (row_id, "promoted", "churn", ["ml-leads@example.com"])
    assert row.body.startswith("[Calabi] churn v2 → Production: promoted")
    assert set(row.delivery) == {"webhook_event"}
    [delivery] = registry.svc.webhooks.list_deliveries(registry.admin, system_webhook_id(url))
    assert (delivery.id, delivery.event, delivery.status) == (delivery_id, "notification.created", "delivered")
    hook = registry.svc.webhooks.get_webhook(registry.admin, system_webhook_id(url))
    assert (hook.owner, hook.payload_format, hook.events, hook.has_secret) == (
        "system", "calabi", ["notification.created"], True)


def test_failing_receivers_are_retried_by_the_dispatcher_without_a_secret_nothing_is_signed(
    registry: Registry, receiver: Receiver
) -> None:
    unreachable, broken, good = closed_port_url(), f"{receiver.base}/broken", f"{receiver.base}/ok"
    dispatcher = configure(registry, [unreachable, broken, good], None)

    Notifier(registry.svc).deliver(kind="expired", promotion_id="p-3", model_name="churn", body="expired\n",
                                   payload={})
    dispatcher.run_once()

    [(_path, headers, raw)] = receiver.requests("/ok")
    assert "X-Calabi-Signature" not in headers and "X-Calabi-Delivery-Id" in headers
    assert not verify_calabi_signature(SECRET, headers, raw)
    assert len(receiver.requests("/broken")) == 1
    assert attempts(registry, good) == [("delivered", 204, "")]
    assert attempts(registry, broken) == [("pending", 500, "")]
    [(status, answer, error)] = attempts(registry, unreachable)
    assert (status, answer) == ("pending", None) and "ConnectError" in error


def test_one_event_is_recorded_and_delivered_once(registry: Registry, receiver: Receiver) -> None:
    """A retried send (same event key) finds the earlier attempt's row: no second row, no second delivery."""
    dispatcher = configure(registry, [f"{receiver.base}/ok"], SECRET)
    notifier = Notifier(registry.svc)
    send = {"kind": "awaiting", "promotion_id": "p-5", "model_name": "churn", "body": "sign me off\n", "payload": {}}

    first = notifier.deliver(**send, event_key="run-1/7")
    again = notifier.deliver(**send, event_key="run-1/7")
    appended = registry.svc.notifications.append_notification(
        kind="awaiting", promotion_id="p-5", model_name="churn", recipients=[], body="sign me off\n", state={},
        event_key="run-1/7")
    later = notifier.deliver(**send, event_key="run-1/12")  # the same kind again, as a new event
    dispatcher.run_once()

    assert first == again == appended != later
    assert len({headers["X-Calabi-Delivery-Id"] for _, headers, _ in receiver.requests()}) == 2
    assert len(receiver.requests()) == 2
    rows = registry.svc.notifications.list_notifications(registry.viewer, promotion_id="p-5")
    assert sorted(row.id for row in rows) == sorted([first, later])


def test_start_up_keeps_the_system_webhooks_as_configured(registry: Registry, receiver: Receiver) -> None:
    """Idempotent at every start; a URL removed from the setting is disabled with its log kept; a
    subscription an admin made to a private address stays refused while the configured one is reached."""
    kept, dropped = f"{receiver.base}/ok", f"{receiver.base}/old"
    configure(registry, [kept, dropped], SECRET)
    Notifier(registry.svc).deliver(kind="requested", promotion_id="p-6", model_name="churn", body="hi\n", payload={})
    audited = registry.scalar("SELECT count(*) FROM audit_events WHERE action LIKE '%_webhook'")
    configure(registry, [kept, dropped], SECRET)
    assert registry.scalar("SELECT count(*) FROM audit_events WHERE action LIKE '%_webhook'") == audited, \
        "a start that changes nothing writes nothing"

    dispatcher = configure(registry, [kept], "rotated")
    admin_made = registry.svc.webhooks.create_webhook(registry.admin, name="mine", url=f"{receiver.base}/mine",
                                                      events=["notification.created"])
    assert registry.svc.webhooks.get_webhook(registry.admin, system_webhook_id(dropped)).status == "DISABLED"
    assert len(registry.svc.webhooks.list_deliveries(registry.admin, system_webhook_id(dropped))) == 1
    Notifier(registry.svc).deliver(kind="promoted", promotion_id="p-6", model_name="churn", body="done\n",
                                   payload={})
    dispatcher.run_once()

    assert [json.loads(raw)["kind"] for _, _, raw in receiver.requests("/ok")] == ["requested", "promoted"]
    _, headers, raw = receiver.requests("/ok")[-1]
    assert verify_calabi_signature("rotated", headers, raw)
    assert receiver.requests("/old") == [] and receiver.requests("/mine") == []
    [mine] = registry.svc.webhooks.list_deliveries(registry.admin, admin_made.id)
    assert mine.status == "failed" and mine.attempt_log[0].error.startswith("refused: 127.0.0.1")

    configure(registry, [kept, dropped], SECRET)  # back in the setting: enabled again
    assert registry.svc.webhooks.get_webhook(registry.admin, system_webhook_id(dropped)).status == "ACTIVE"
