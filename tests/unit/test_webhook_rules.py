"""Webhook rules without I/O: MLflow's signature, envelope, retry decisions, Slack rendering, egress refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
import pytest

from calabi.webhook_dispatch import post, refused_address
from policies.webhooks import (
    RetryPolicy,
    envelope,
    is_final_status,
    next_delay_s,
    render_slack,
    retry_after_s,
    sign,
    validate_template,
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


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/", "http://[::1]/",
                                 "http://169.254.169.254/latest/meta-data", "http://192.168.0.1/", "http://0.0.0.0/"])
def test_private_addresses_are_refused_unless_allowed(url: str) -> None:
    assert (refused_address(url, allow_private=False) or "").startswith("refused")
    assert refused_address(url, allow_private=True) is None


def test_public_addresses_go_ahead() -> None:
    assert refused_address("https://93.184.216.34/hook", allow_private=False) is None


def test_a_refused_address_is_a_final_failure_without_a_request() -> None:
    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request may be sent: {request.url}")

    with httpx.Client(transport=httpx.MockTransport(no_network)) as client:
        result = post(client, "http://10.0.0.7/hook", "d-1", "s", b"{}", allow_private=False)
    assert result.final and result.status_code is None and result.error.startswith("refused")
