"""Webhook rules without I/O: MLflow's and Calabi's signatures, envelope, retry decisions, Slack rendering,
egress refusal and connections pinned to the checked address (a rebinding resolver)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpcore
import pytest

from calabi.webhook_dispatch import PinnedBackend, RefusedAddress, checked_addresses, post, webhook_client
from policies.webhooks import (
    NOTIFICATION_EVENT,
    RetryPolicy,
    envelope,
    is_final_status,
    next_delay_s,
    render_slack,
    retry_after_s,
    sign,
    signed_headers,
    validate_template,
    verify_calabi_signature,
    webhook_body,
)


def test_signature_is_mlflows() -> None:
    body = json.dumps(envelope("model_version.created", {"name": "m", "version": "1"}, 0)).encode()
    expected = base64.b64encode(hmac.new(b"k", b"id-1.17." + body, hashlib.sha256).digest()).decode()
    assert sign("k", "id-1", "17", body) == f"v1,{expected}"
    assert json.loads(body) == {"entity": "model_version", "action": "created",
                                "timestamp": "1970-01-01T00:00:00+00:00", "data": {"name": "m", "version": "1"}}
    assert envelope("promotion.awaiting_sign_off", {}, 0)["action"] == "awaiting_sign_off"


@pytest.mark.parametrize(("status", "final"), [(400, True), (404, True), (410, True), (408, False), (429, False),
                                                (500, False), (503, False)])
def test_only_lasting_client_errors_are_final(status: int, final: bool) -> None:
    assert is_final_status(status) is final


def test_backoff_doubles_caps_honours_retry_after_and_gives_up() -> None:
    policy = RetryPolicy(base_s=1, cap_s=5, max_attempts=4)
    assert [next_delay_s(policy, n, None) for n in (1, 2, 3)] == [1, 2, 4]
    assert next_delay_s(policy, 3, 30) == 30 and next_delay_s(policy, 1, 10**6) == 3600
    assert next_delay_s(policy, 4, None) is None
    assert next_delay_s(RetryPolicy(base_s=1, cap_s=5, max_attempts=99), 10, None) == 5
    assert retry_after_s("7", 0) == 7 and retry_after_s("soon", 0) is None and retry_after_s(None, 0) is None
    assert retry_after_s("Thu, 01 Jan 1970 00:01:40 GMT", 40) == 60


def test_slack_rendering_and_template_checks() -> None:
    payload = envelope("promotion.promoted", {"name": "churn", "version": "3", "status": "promoted",
                                              "promotion_url": "https://c/ui/promotions/p1"}, 0)
    assert json.loads(render_slack("", payload)) == {
        "text": "*promotion.promoted* `churn` v3: promoted <https://c/ui/promotions/p1|promotion>"}
    assert json.loads(render_slack("{{ data.name }} by {{ entity }}", payload)) == {"text": "churn by promotion"}
    assert validate_template("{{ oops") is not None and validate_template("{{ data }}") is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "::1", "169.254.169.254", "192.168.0.1",
                                  "0.0.0.0"])
def test_private_addresses_are_refused_unless_allowed(host: str) -> None:
    with pytest.raises(RefusedAddress, match="^refused"):
        checked_addresses(host, allow_private=False)
    assert checked_addresses(host, allow_private=True)


def test_public_addresses_go_ahead() -> None:
    assert checked_addresses("93.184.216.34", allow_private=False) == ["93.184.216.34"]


def test_a_name_with_one_private_address_is_refused() -> None:
    both = lambda *_a, **_k: [answer("93.184.216.34"), answer("10.0.0.7")]  # noqa: E731
    with pytest.raises(RefusedAddress, match="10.0.0.7"):
        checked_addresses("mixed.test", allow_private=False, resolve=both)


def test_a_name_that_does_not_resolve_is_a_connection_error_retried() -> None:
    def no_dns(*_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with webhook_client(PinnedBackend(allow_private=False, resolve=no_dns), timeout_s=1) as client:
        result = post(client, "https://hooks.example/x", "d-1", "s", b"{}")
    assert not result.final and result.error.startswith("ConnectError: hooks.example does not resolve"), result


def answer(address: str) -> tuple[object, ...]:
    """One ``getaddrinfo`` answer for ``address``."""
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, 0))


class Rebinding:
    """A DNS that answers ``first`` once and ``later`` afterwards (the rebinding attack)."""

    def __init__(self, first: str, later: str) -> None:
        self.answers = [first, later]
        self.lookups: list[str] = []

    def __call__(self, host: str, *_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
        self.lookups.append(host)
        return [answer(self.answers[min(len(self.lookups), 2) - 1])]


@dataclass
class RecordingTcp(httpcore.NetworkBackend):
    """Records where connections go; each stream records the TLS server name asked for, then fails."""

    connected: list[tuple[str, int]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        self.connected.append((host, port))
        recorder = self

        class Stream(httpcore.NetworkStream):
            def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                          timeout: float | None = None) -> httpcore.NetworkStream:
                recorder.server_names.append(server_hostname)
                raise httpcore.ConnectError("no TLS in a unit test")

            def write(self, buffer: bytes, timeout: float | None = None) -> None:
                raise httpcore.WriteError("no network in a unit test")

            def close(self) -> None:
                pass

        return Stream()


def test_the_connection_goes_to_the_checked_address_not_a_second_answer() -> None:
    dns, tcp = Rebinding(first="93.184.216.34", later="127.0.0.1"), RecordingTcp()
    backend = PinnedBackend(allow_private=False, resolve=dns, tcp=tcp)
    with webhook_client(backend, timeout_s=1) as client:
        first = post(client, "https://hooks.rebind.test:8443/x", "d-1", "s", b"{}")
        second = post(client, "https://hooks.rebind.test:8443/x", "d-1", "s", b"{}")
    assert not first.final and "ConnectError" in first.error, first
    assert second.final and "127.0.0.1" in second.error, second
    assert dns.lookups == ["hooks.rebind.test", "hooks.rebind.test"], "one lookup per connection, none by httpx"
    assert tcp.connected == [("93.184.216.34", 8443)], "the second answer (loopback) was refused, never connected"
    assert tcp.server_names == ["hooks.rebind.test"], "TLS names the host, not the pinned address"


def test_the_host_header_names_the_host_while_the_pinned_address_is_called() -> None:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dns = Rebinding(first="127.0.0.1", later="10.9.9.9")
        with webhook_client(PinnedBackend(allow_private=True, resolve=dns), timeout_s=5) as client:
            url = f"http://hooks.rebind.test:{server.server_address[1]}/x"
            assert post(client, url, "d-1", "", b"{}").status_code == 204
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [f"hooks.rebind.test:{server.server_address[1]}"] and dns.lookups == ["hooks.rebind.test"]


def test_a_refused_address_is_a_final_failure_without_a_connection() -> None:
    tcp = RecordingTcp()
    with webhook_client(PinnedBackend(allow_private=False, tcp=tcp), timeout_s=1) as client:
        result = post(client, "http://10.0.0.7/hook", "d-1", "s", b"{}")
    assert result.final and result.status_code is None and result.error.startswith("refused")
    assert tcp.connected == []


def test_the_calabi_format_keeps_the_notifier_body_and_headers() -> None:
    data = {"kind": "promoted", "promotion_id": "p-1", "model": "churn", "text": "done\n", "state": {"v": 2}}
    payload = json.dumps(envelope(NOTIFICATION_EVENT, data, 0), sort_keys=True)
    body = webhook_body("calabi", "", payload)
    assert body == json.dumps(data, sort_keys=True).encode()
    headers = signed_headers("calabi", "d-1", "17", "k", body)
    assert headers["X-Calabi-Signature"] == sign("k", "d-1", "17", body) and "X-MLflow-Signature" not in headers
    assert verify_calabi_signature("k", {k.lower(): v for k, v in headers.items()}, body)
    assert not verify_calabi_signature("k", headers, body.replace(b"promoted", b"rejected"))
    assert not verify_calabi_signature("other", headers, body)
    assert "X-Calabi-Signature" not in signed_headers("calabi", "d-1", "17", "", body)
