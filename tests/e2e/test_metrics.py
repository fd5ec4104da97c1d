"""``/metrics`` of a real ``calabi serve --workers 2`` with JSON logs.

A registration, a stage move, an alias move and a request that 404s, then scrapes: every scrape, whichever
worker process answers it, reports the counts of both processes (multiprocess mode); labels are route
templates, never a model name; the token rule holds; and every log line is one JSON object naming the
request id, actor and route.
"""

from __future__ import annotations

import json
import re
import secrets

import httpx
import pytest

from tests.fixtures.servers import LiveServer, start_server, stop_server

MLFLOW = "/api/2.0/mlflow"
HEALTH_CALLS = 40
SCRAPES = 8


def value(body: str, sample: str) -> float:
    """The value of one exact sample line (name and labels) in a scrape; 0 when absent."""
    for line in body.splitlines():
        name, _, number = line.rpartition(" ")
        if name == sample:
            return float(number)
    return 0.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    started = start_server(tmp_path_factory.mktemp("metrics"), workers=2, extra_env={"CALABI_LOG_FORMAT": "json"})
    yield started  # type: ignore[misc]
    stop_server(started)


def test_metrics_add_up_across_worker_processes_by_route_template(server: LiveServer) -> None:
    name = f"secret-model-{secrets.token_hex(4)}"
    with server.client() as http:
        assert http.post(f"{MLFLOW}/registered-models/create", json={"name": name}).status_code == 200
        created = http.post(f"{MLFLOW}/model-versions/create", json={"name": name, "source": str(server.artifact())})
        assert created.status_code == 200, created.text
        moved = http.post(f"{MLFLOW}/model-versions/transition-stage",
                          json={"name": name, "version": "1", "stage": "Staging", "archive_existing_versions": False})
        assert moved.status_code == 200, moved.text
        assert http.post(f"{MLFLOW}/registered-models/alias",
                         json={"name": name, "alias": "candidate", "version": "1"}).status_code == 200
        missing = http.get(f"/api/v1/models/{name}-missing", headers={"X-Request-ID": "req-missing-model"})
        assert missing.status_code == 404
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    health = 'calabi_http_requests_total{method="GET",route="/health",status="200"}'
    before = value(httpx.get(f"{server.url}/metrics", headers=admin, timeout=10).text, health)  # start-up polls
    for _ in range(HEALTH_CALLS):  # a new connection each: the two processes both take some
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200

    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401  # an admin's token by default
    viewer = server.create_user("metrics-viewer", "viewer")
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
    scrapes = [httpx.get(f"{server.url}/metrics", headers=admin, timeout=10) for _ in range(SCRAPES)]
    assert all(scrape.status_code == 200 for scrape in scrapes)
    for body in (scrape.text for scrape in scrapes):
        assert value(body, health) == before + HEALTH_CALLS
        assert value(body, "calabi_registrations_total") == 1
        assert value(body, 'calabi_stage_moves_total{stage="Staging"}') == 1
        assert value(body, 'calabi_alias_moves_total{operation="set"}') == 1
        assert value(body, 'calabi_http_requests_total{method="GET",route="/api/v1/models/{name}",status="404"}') == 1
        assert value(body, 'calabi_http_request_duration_seconds_count{method="POST",'
                           f'route="{MLFLOW}/model-versions/create"}}') == 1
        assert "calabi_promotions" in body
        assert name not in body

    log = (server.data_dir.parent / "server.log").read_text()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is one JSON object
    missing_line = [r for r in records if r.get("request_id") == "req-missing-model"]
    assert missing_line, log[-2000:]
    assert missing_line[0]["actor"] == "admin" and missing_line[0]["route"] == "/api/v1/models/{name}"
    assert re.match(r"GET /api/v1/models/\{name\} 404 ", missing_line[0]["message"])
    assert {"timestamp", "level", "logger", "message"} <= set(missing_line[0])

