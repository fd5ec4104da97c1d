"""Webhooks end to end: the stock mlflow client subscribes, a real receiver verifies MLflow's signature,
a receiver that is down gets every event once back (in order per model, same delivery id on retries),
the delivery log shows every attempt, and SIGKILL of ``calabi serve`` mid-delivery loses nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from calabi.cli.main import app
from tests.e2e.helpers import mlflow_client, ok, random_name, use_mlflow
from tests.fixtures.servers import LiveServer, start_server, stop_server
from tests.integration.page_session import signed_in

SECRET = "receiver-secret"
FAST = {
    "CALABI_WEBHOOK_ALLOW_PRIVATE": "true", "CALABI_WEBHOOK_DISPATCH_INTERVAL_S": "0.1",
    "CALABI_WEBHOOK_RETRY_BASE_S": "0.2", "CALABI_WEBHOOK_RETRY_CAP_S": "0.5", "CALABI_WEBHOOK_TIMEOUT_S": "1",
    "CALABI_WEBHOOK_LEASE_S": "2",
}


@dataclass
class Received:
    """One request the receiver got and how it answered."""

    delivery_id: str
    timestamp: str
    signature: str
    body: bytes
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1: answers 503 to the first ``failures`` requests, can hold one request."""

    url: str = ""
    failures: int = 0
    hold: threading.Event | None = None
    held: threading.Event = field(default_factory=threading.Event)
    log: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self) -> list[Received]:
        with self.lock:
            return [r for r in self.log if r.answered == 200]

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 30) -> None:
        """Poll ``condition`` until it holds (bounded)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, self.log
            time.sleep(0.05)  # polling a condition with a deadline

    def wait_for(self, count: int, timeout_s: float = 60) -> list[Received]:
        """The first ``count`` distinct deliveries answered 200 (bounded wait)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            unique = list({r.delivery_id: r for r in reversed(self.delivered())}.values())[::-1]
            if len(unique) >= count:
                return unique
            time.sleep(0.05)  # polling a condition with a deadline
        raise AssertionError(f"only {len(self.delivered())} deliveries arrived: {self.log}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hold = state.hold
            if hold is not None:
                state.hold = None
                state.held.set()
                hold.wait(timeout=30)
            with state.lock:
                status = 503 if state.failures > 0 else 200
                state.failures -= 1
                state.log.append(Received(self.headers.get("X-MLflow-Delivery-Id", ""),
                                          self.headers.get("X-MLflow-Timestamp", ""),
                                          self.headers.get("X-MLflow-Signature", ""), body, status))
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b"down" if status == 503 else b"ok")

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    if state.hold is not None:
        state.hold.set()
    server.shutdown()
    server.server_close()


def listed(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON list of a 200 reply."""
    assert response.status_code == 200, response.text
    return list(response.json())


def mlflow_signature_valid(secret: str, received: Received) -> bool:
    """MLflow's documented check: v1,base64(HMAC-SHA256(secret, "<id>.<timestamp>.<payload>"))."""
    content = f"{received.delivery_id}.{received.timestamp}.{received.body.decode()}"
    expected = base64.b64encode(hmac.new(secret.encode(), content.encode(), hashlib.sha256).digest()).decode()
    return hmac.compare_digest(received.signature, f"v1,{expected}")


def test_webhooks_end_to_end(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """One server: killed mid-delivery and restarted, then driven by the stock mlflow client."""
    server = killed_mid_delivery_loses_nothing(tmp_path, receiver)
    try:
        receiver.log.clear()
        mlflow_client_receives_every_event_in_order_through_an_outage(server, receiver, monkeypatch)
    finally:
        stop_server(server)


def mlflow_client_receives_every_event_in_order_through_an_outage(
    server: LiveServer, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.entities.webhook import WebhookEvent, WebhookStatus

    for root in (server.url, f"{server.url}/mlflow"):
        use_mlflow(monkeypatch, root, server.admin_token)
        client = mlflow_client(root)
        probe = client.create_webhook(name="probe", url=receiver.url, events=[WebhookEvent.from_str(
            "registered_model.created")], secret="x", status=WebhookStatus.DISABLED)
        assert client.get_webhook(probe.webhook_id).status == WebhookStatus.DISABLED
        client.delete_webhook(probe.webhook_id)
    events = ["registered_model.created", "model_version.created", "model_version_tag.set",
              "model_version_tag.deleted", "model_version_alias.created", "model_version_alias.deleted"]
    hook = client.create_webhook(name="ci", url=receiver.url, events=[WebhookEvent.from_str(e) for e in events],
                                 secret=SECRET, description="stock client")
    assert [str(e) for e in client.get_webhook(hook.webhook_id).events] == events
    assert hook.webhook_id in [h.webhook_id for h in client.list_webhooks()]
    assert client.update_webhook(hook.webhook_id, description="renamed").description == "renamed"
    with server.client() as http:
        raw = http.get(f"/api/2.0/mlflow/webhooks/{hook.webhook_id}").text + \
            http.get(f"/api/v1/webhooks/{hook.webhook_id}").text
        assert SECRET not in raw and '"secret"' not in raw
        bad = http.post("/api/2.0/mlflow/webhooks", json={"name": "x", "url": "ftp://nowhere", "events": []})
        assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"

    tested = client.test_webhook(hook.webhook_id)
    assert tested.success and tested.response_status == 200
    assert mlflow_signature_valid(SECRET, receiver.wait_for(1)[0])
    receiver.log.clear()

    receiver.failures = 4  # the receiver is down for the first four requests
    models = [random_name("hooked"), random_name("hooked")]
    for model in models:
        client.create_registered_model(model)
        client.create_model_version(model, str(server.artifact()))
        client.set_model_version_tag(model, "1", "team", "risk")
        client.set_registered_model_alias(model, "candidate", "1")
        client.delete_model_version_tag(model, "1", "team")
        client.delete_registered_model_alias(model, "candidate")
    expected = ["registered_model.created", "model_version.created", "model_version_tag.set",
                "model_version_alias.created", "model_version_tag.deleted", "model_version_alias.deleted"]

    arrived = receiver.wait_for(len(expected) * len(models))
    assert all(mlflow_signature_valid(SECRET, r) for r in receiver.log)
    for model in models:
        mine = [r.payload for r in arrived if r.payload["data"]["name"] == model]
        assert [f"{p['entity']}.{p['action']}" for p in mine] == expected
    version_created = next(r.payload for r in arrived if r.payload["action"] == "created"
                           and r.payload["entity"] == "model_version")
    assert set(version_created["data"]) >= {"name", "version", "source", "run_id", "tags", "description"}
    failed = [r for r in receiver.log if r.answered == 503]
    assert len(failed) == 4
    assert {r.delivery_id for r in failed} <= {r.delivery_id for r in arrived}, "retries keep the delivery id"
    by_id = {r.delivery_id: r.body for r in arrived}
    assert all(by_id[r.delivery_id] == r.body for r in failed), "a retry sends the same payload"

    with server.client() as http:
        log = listed(http.get(f"/api/v1/webhooks/{hook.webhook_id}/deliveries"))
        assert len(log) == len(expected) * len(models) and {d["status"] for d in log} == {"delivered"}
        for delivery in log:
            codes = [a["status_code"] for a in delivery["attempt_log"]]
            assert codes == [503] * (len(codes) - 1) + [200] and len(codes) == delivery["attempts"]
            assert all(a["response_excerpt"] in ("ok", "down") for a in delivery["attempt_log"])
        retried = next(d for d in log if d["attempts"] > 1)
        queued = ok(http.post(f"/api/v1/webhooks/{hook.webhook_id}/redeliver",
                              json={"delivery_id": retried["id"]}))
        assert queued == {"queued": 1}
        receiver.wait_until(lambda: len([r for r in receiver.delivered() if r.delivery_id == retried["id"]]) == 2)
        assert len(receiver.wait_for(len(expected) * len(models))) == len(expected) * len(models)
        cli = ["--url", server.url, "--token", server.admin_token, "webhooks"]
        listed_hooks = CliRunner().invoke(app, [*cli, "list"])
        assert listed_hooks.exit_code == 0 and "1 webhook(s)" in listed_hooks.output
        shown = CliRunner().invoke(app, [*cli, "deliveries", hook.webhook_id, "--json"])
        assert shown.exit_code == 0 and len(json.loads(shown.output)) == len(log)
        since = CliRunner().invoke(app, [*cli, "redeliver", hook.webhook_id, "--since", "2000-01-01T00:00:00Z"])
        assert since.exit_code == 0 and f"Queued {len(log)} " in since.output
        receiver.wait_until(lambda: len(receiver.delivered()) >= 2 * len(log) + 1)
        missing = CliRunner().invoke(app, [*cli, "redeliver", "nosuch", "--delivery", "x"])
        assert missing.exit_code != 0 and "RESOURCE_DOES_NOT_EXIST" in missing.output
        browser = signed_in(server, server.admin_token)
        assert "ci" in browser.text("/ui/webhooks")
        page = browser.text(f"/ui/webhooks/{hook.webhook_id}")
        assert retried["id"] in page and "HTTP 503" in page and "HTTP 200" in page
        redelivered = browser.post(f"/ui/webhooks/{hook.webhook_id}/redeliver", {"delivery_id": retried["id"]})
        assert redelivered.status_code == 303
        receiver.wait_until(lambda: len([r for r in receiver.delivered() if r.delivery_id == retried["id"]]) >= 4)
        viewer = server.create_user(random_name("viewer"), "engineer")
        denied = http.get("/api/v1/webhooks", headers={"Authorization": f"Bearer {viewer}"})
        assert denied.status_code == 403


def killed_mid_delivery_loses_nothing(tmp_path: Path, receiver: Receiver) -> LiveServer:
    """SIGKILL serve while the receiver holds a delivery; the restarted serve (returned) sends everything."""
    server = start_server(tmp_path, extra_env=FAST)
    model = random_name("killed")
    try:
        with server.client() as http:
            created = http.post("/api/v1/webhooks", json={
                "name": "kill", "url": receiver.url, "secret": SECRET,
                "events": ["registered_model.created", "model_version.created", "model_version_stage.transitioned"]})
            assert created.status_code == 201, created.text
            receiver.hold = threading.Event()
            release = receiver.hold
            assert http.post("/api/v1/models", json={"name": model}).status_code == 201
            assert receiver.held.wait(timeout=30), "the first delivery reached the receiver"
            for _ in range(2):  # two more events queue behind the held one (same model: in order)
                source = str(server.artifact())
                assert http.post(f"/api/v1/models/{model}/versions", json={"source": source}).status_code == 201
            assert http.post(f"/api/v1/models/{model}/versions/1/stage", json={"stage": "Staging"}).status_code == 200
    finally:
        server.process.kill()
        server.process.wait(timeout=10)
    release.set()  # the held request is answered after serve died: its delivery was never recorded
    restarted = start_server(tmp_path, extra_env=FAST)
    try:
        arrived = receiver.wait_for(4)
        assert [f"{r.payload['entity']}.{r.payload['action']}" for r in arrived] == [
            "registered_model.created", "model_version.created", "model_version.created",
            "model_version_stage.transitioned"]
        assert [r.payload["data"].get("version") for r in arrived[1:3]] == ["1", "2"]
        assert all(mlflow_signature_valid(SECRET, r) for r in receiver.log)
        first = [r for r in receiver.log if r.payload["entity"] == "registered_model"]
        assert len(first) == 2 and first[0].delivery_id == first[1].delivery_id, "resent with the same id"
        with restarted.client() as http:
            hook = ok(http.get("/api/v1/webhooks"))["items"][0]
            log = listed(http.get(f"/api/v1/webhooks/{hook['id']}/deliveries"))
            interrupted = next(d for d in log if d["event"] == "registered_model.created")
            assert [a["error"].split(":")[0] for a in interrupted["attempt_log"]] == ["interrupted", ""]
            assert http.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    except BaseException:
        stop_server(restarted)
        raise
    return restarted
