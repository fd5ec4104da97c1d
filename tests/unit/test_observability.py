"""Metrics labels stay bounded (route templates), the dashboard uses only exported names, JSON log lines,
the committed-event counters and check outcomes."""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from calabi.activity_metrics import check_outcome, serve_worker_metrics
from calabi.api.observability import RequestObservation
from calabi.logs import JsonFormatter
from calabi.metrics import PromotionsByStatus, exported_names, exposition, observe_committed
from calabi.request_context import ROUTE_KEY, end_request, start_request
from policies.results import CheckResult
from registry_store.committed_events import CommittedEvent, status_since_ms
from registry_store.errors import UnavailableError

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def observed_app() -> FastAPI:
    app = FastAPI()

    @app.get("/unit/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/unit/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    async def fixed_route(scope: Scope, receive: Receive, send: Send) -> None:  # like the MLflow routes
        if scope["path"] == "/unit/fixed":
            scope[ROUTE_KEY] = scope["path"]
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await inner(scope, receive, send)

    inner = app.build_middleware_stack()
    app.middleware_stack = RequestObservation(fixed_route)  # type: ignore[assignment]
    return app


async def test_requests_are_labelled_by_route_template_never_by_path(caplog: pytest.LogCaptureFixture) -> None:
    requests = "calabi_http_requests_total"
    before = {
        "template": sample(requests, route="/unit/things/{name}", method="GET", status="200"),
        "unmatched": sample(requests, route="<unmatched>", method="GET", status="404"),
        "fixed": sample(requests, route="/unit/fixed", method="GET", status="204"),
        "error": sample(requests, route="/unit/boom", method="GET", status="500"),
    }
    caplog.set_level(logging.INFO, logger="calabi.access")
    transport = httpx.ASGITransport(app=observed_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for name in ("secret-model-a", "secret-model-b"):
            response = await client.get(f"/unit/things/{name}", headers={"X-Request-ID": f"req-{name}"})
            assert response.status_code == 200
        assert (await client.get("/unit/nowhere/secret-model-c")).status_code == 404
        assert (await client.get("/unit/fixed")).status_code == 204
        assert (await client.get("/unit/boom")).status_code == 500

    assert sample(requests, route="/unit/things/{name}", method="GET", status="200") == before["template"] + 2
    assert sample(requests, route="<unmatched>", method="GET", status="404") == before["unmatched"] + 1
    assert sample(requests, route="/unit/fixed", method="GET", status="204") == before["fixed"] + 1
    assert sample(requests, route="/unit/boom", method="GET", status="500") == before["error"] + 1
    assert sample("calabi_http_request_duration_seconds_count", route="/unit/things/{name}", method="GET") >= 2
    labels = {value for metric in REGISTRY.collect() for s in metric.samples for value in s.labels.values()}
    assert not [value for value in labels if "secret-model" in value]
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "calabi.access"]
    assert any('"message": "GET /unit/things/{name} 200' in line for line in lines), lines


def test_a_json_log_line_carries_the_request_it_was_written_for() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("calabi.api", logging.WARNING, __file__, 1, "moved %s", ("v2",), None)
    context, token = start_request("req-1")
    context.actor, context.route = "alice", "/api/v1/models/{name}"
    try:
        inside = json.loads(formatter.format(record))
    finally:
        end_request(token)
    outside = json.loads(formatter.format(record))

    assert inside["message"] == "moved v2" and inside["level"] == "WARNING" and inside["logger"] == "calabi.api"
    assert (inside["request_id"], inside["actor"], inside["route"]) == ("req-1", "alice", "/api/v1/models/{name}")
    assert inside["timestamp"].endswith("+00:00")
    assert "request_id" not in outside
    try:
        raise ValueError("bad\nline")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = formatter.format(failed)
    assert "\n" not in line and "ValueError: bad" in json.loads(line)["exception"]


def test_committed_writes_are_counted_by_kind() -> None:
    names = {"registrations": ("calabi_registrations_total", {}),
             "staging": ("calabi_stage_moves_total", {"stage": "Staging"}),
             "alias": ("calabi_alias_moves_total", {"operation": "delete"}),
             "promoted": ("calabi_promotion_transitions_total", {"status": "promoted"}),
             "waited": ("calabi_promotion_time_in_status_seconds_sum", {"status": "applying"})}
    before = {key: sample(name, **labels) for key, (name, labels) in names.items()}
    for event in (
        CommittedEvent("create_model_version", "m", 1, 0),
        CommittedEvent("transition_stage", "m", 1, 0, {"stage": "None"}, {"stage": "Staging"}),
        CommittedEvent("delete_alias", "m", 1, 0),
        CommittedEvent("promotion_state", "m", 1, 90_000, {"status": "applying"}, {"status": "promoted"},
                       status_since_ms=60_000),
        CommittedEvent("set_model_version_tag", "m", 1, 0),
    ):
        observe_committed(event)
    after = {key: sample(name, **labels) for key, (name, labels) in names.items()}

    assert {key: after[key] - before[key] for key in names} == {
        "registrations": 1, "staging": 1, "alias": 1, "promoted": 1, "waited": 30.0}


def test_time_in_status_starts_at_the_last_recorded_change() -> None:
    history = json.dumps([{"at": "2026-01-01T00:00:00Z", "status": "running_checks"},
                          {"at": "2026-01-01T00:00:05+00:00", "status": "awaiting_sign_off"}])
    assert status_since_ms(history, 1) == 1_767_225_605_000
    assert status_since_ms("[]", 42) == 42


def test_a_busy_worker_metrics_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UnavailableError, match=f"cannot export the Temporal SDK's metrics on 127.0.0.1:{port}"):
            serve_worker_metrics("127.0.0.1", port)


def test_the_promotions_gauge_is_read_at_scrape_and_left_out_when_the_database_fails() -> None:
    def unreachable() -> dict[str, int]:
        raise OSError("database down")

    assert 'calabi_promotions{status="running_checks"} 3.0' in exposition(
        PromotionsByStatus(lambda: {"running_checks": 3})).decode()
    assert "calabi_promotions" not in exposition(PromotionsByStatus(unreachable)).decode()


def test_check_outcomes() -> None:
    assert check_outcome(CheckResult(name="metrics", passed=True)) == "passed"
    assert check_outcome(CheckResult(name="metrics", passed=False)) == "failed"
    assert check_outcome(None) == "error"


def dashboard_metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, ranges, strings and grouping removed)."""
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)', " ", expression)
    return {m.group(1) for m in re.finditer(r"\b([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare)
            if not m.group(1)[0].isdigit()}


def test_the_dashboard_uses_exactly_the_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = set().union(*(dashboard_metric_names(e) for e in expressions))
    exported = exported_names()

    assert expressions and used <= exported, used - exported
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported if not name.endswith("_total")}
    families |= {name for name in exported if name.endswith("_total")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) if not name.endswith("_total") else name for name in used}
    assert families <= shown, families - shown  # every metric has a panel


def test_the_dashboard_check_catches_an_unknown_name() -> None:
    assert dashboard_metric_names('sum by (le) (rate(calabi_http_request_duration_seconds_bucket{x="a"}[5m]))') == {
        "calabi_http_request_duration_seconds_bucket"}
    assert dashboard_metric_names("histogram_quantile(0.9, calabi_typo_total)") == {"calabi_typo_total"}
