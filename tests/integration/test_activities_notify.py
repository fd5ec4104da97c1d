"""Notifier: signed webhooks to a real HTTP receiver, and the outbox row in a real registry."""

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

from activities.notify import Notifier, sign, verify_signature
from tests.integration.helpers import Registry, build_registry

SECRET = "whsec-test-1"
STATE = {"status": "promoted", "version": 2, "approvals": [{"user": "alice"}]}


@dataclass
class Receiver:
    """Webhooks on 127.0.0.1: ``/ok`` answers 204, ``/broken`` 500; every request is recorded."""

    base: str = ""
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self) -> list[tuple[str, dict[str, str], bytes]]:
        with self.lock:
            return list(self.received)


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


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_webhook_is_signed_and_the_outbox_records_it(registry: Registry, receiver: Receiver) -> None:
    url = f"{receiver.base}/ok"
    notifier = Notifier(registry.svc, webhook_urls=[url], secret=SECRET, recipients=["ml-leads@example.com"])

    row_id = notifier.deliver(kind="promoted", promotion_id="p-1", model_name="churn",
                              body="[Calabi] churn v2 → Production: promoted\n", payload=STATE)

    [(path, headers, raw)] = receiver.requests()
    assert path == "/ok" and headers["Content-Type"] == "application/json"
    assert json.loads(raw) == {"kind": "promoted", "promotion_id": "p-1", "model": "churn",
                               "text": "[Calabi] churn v2 → Production: promoted\n", "state": STATE}
    delivery_id = headers["X-Calabi-Delivery-Id"]
    assert uuid.UUID(delivery_id).version == 4
    assert abs(int(headers["X-Calabi-Timestamp"]) - time.time()) < 300
    assert headers["X-Calabi-Signature"] == sign(SECRET, delivery_id, headers["X-Calabi-Timestamp"], raw)
    assert headers["X-Calabi-Signature"].startswith("v1,")
    assert verify_signature(SECRET, headers, raw)
    assert verify_signature(SECRET, {k.lower(): v for k, v in headers.items()}, raw)
    assert not verify_signature("another-secret", headers, raw)
    assert not verify_signature(SECRET, headers, raw.replace(b"promoted", b"rejected"))
    assert not verify_signature(SECRET, {**headers, "X-Calabi-Timestamp": "1"}, raw)

    [row] = registry.svc.notifications.list_notifications(registry.viewer, promotion_id="p-1")
    assert (row.id, row.kind, row.model_name, row.recipients) == (row_id, "promoted", "churn", ["ml-leads@example.com"])
    assert row.body.startswith("[Calabi] churn v2 → Production: promoted")
    assert row.delivery == {url: {"ok": True, "status": 204, "delivery_id": delivery_id}}


def test_without_a_secret_nothing_is_signed(registry: Registry, receiver: Receiver) -> None:
    Notifier(registry.svc, webhook_urls=[f"{receiver.base}/ok"]).deliver(
        kind="requested", promotion_id="p-2", model_name="churn", body="hello\n", payload={})

    [(_path, headers, raw)] = receiver.requests()
    assert "X-Calabi-Signature" not in headers and "X-Calabi-Delivery-Id" in headers
    assert not verify_signature(SECRET, headers, raw)


def test_failing_webhooks_are_recorded_not_raised(registry: Registry, receiver: Receiver) -> None:
    unreachable, broken, good = closed_port_url(), f"{receiver.base}/broken", f"{receiver.base}/ok"
    notifier = Notifier(registry.svc, webhook_urls=[unreachable, broken, good], secret=SECRET)

    notifier.deliver(kind="expired", promotion_id="p-3", model_name="churn", body="expired\n", payload={})

    assert sorted(path for path, _, _ in receiver.requests()) == ["/broken", "/ok"]
    [row] = registry.svc.notifications.list_notifications(registry.viewer, promotion_id="p-3")
    assert row.delivery[unreachable]["ok"] is False
    assert "ConnectError" in row.delivery[unreachable]["error"]
    assert (row.delivery[broken]["ok"], row.delivery[broken]["status"]) == (False, 500)
    assert (row.delivery[good]["ok"], row.delivery[good]["status"]) == (True, 204)


def test_no_webhooks_still_writes_the_outbox(registry: Registry) -> None:
    Notifier(registry.svc, recipients=["a@example.com", "b@example.com"]).deliver(
        kind="reminder", promotion_id="p-4", model_name="churn", body="still waiting\n", payload={})

    [row] = registry.svc.notifications.list_notifications(registry.viewer, promotion_id="p-4")
    assert (row.kind, row.body, row.recipients, row.delivery) == (
        "reminder", "still waiting\n", ["a@example.com", "b@example.com"], {})


def test_one_event_is_delivered_and_recorded_once(registry: Registry, receiver: Receiver) -> None:
    """A retried send (same event key) finds the earlier attempt's row: no second post, no second row."""
    notifier = Notifier(registry.svc, webhook_urls=[f"{receiver.base}/ok"], secret=SECRET)
    send = {"kind": "awaiting", "promotion_id": "p-5", "model_name": "churn", "body": "sign me off\n", "payload": {}}

    first = notifier.deliver(**send, event_key="run-1/7")
    again = notifier.deliver(**send, event_key="run-1/7")
    appended = registry.svc.notifications.append_notification(
        kind="awaiting", promotion_id="p-5", model_name="churn", recipients=[], body="sign me off\n", delivery={},
        event_key="run-1/7")
    later = notifier.deliver(**send, event_key="run-1/12")  # the same kind again, as a new event

    assert first == again == appended != later
    assert len(receiver.requests()) == 2
    rows = registry.svc.notifications.list_notifications(registry.viewer, promotion_id="p-5")
    assert sorted(row.id for row in rows) == sorted([first, later])
