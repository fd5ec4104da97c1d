"""The tracking gateway is an allow-list: the reproduced attack, refused routes, forwarded headers, the audit.

The attack: through ``/mlflow`` an engineer created an experiment whose ``artifact_location`` was a
local directory (the registry's own artifact store) and made the tracking server write there
(``ajax-api/…/upload-artifact``), corrupting the Production copy; MLflow's localhost-only assistant
was reachable; nothing was audited. It runs here against ``calabi serve`` and its embedded tracking
server; the headers are observed on a recording upstream.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from mlflow.exceptions import MlflowException

from tests.e2e.helpers import assert_error, call, ok, random_name, use_mlflow
from tests.e2e.test_tracking_gateway import MODEL_FILES, copy_path, read_tree, register
from tests.fixtures.servers import LiveServer, start_server, stop_server

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

API = "/api/2.0/mlflow"
REFUSED = [  # (method, path under the tracking URI) of routes the real tracking server has
    ("POST", "/ajax-api/2.0/mlflow/upload-artifact?run_uuid=r&path=model.pkl"),
    ("POST", "/ajax-api/3.0/mlflow/assistant/message"),
    ("GET", "/ajax-api/3.0/mlflow/assistant/providers/claude_code/health"),
    ("POST", "/gateway/chat/mlflow/invocations"),
    ("GET", "/api/3.0/mlflow/gateway/secrets/list"),
    ("POST", "/ajax-api/3.0/jobs/search"),
    ("POST", "/api/3.0/mlflow/traces"),
    ("POST", "/api/3.0/mlflow/datasets/create"),
    ("GET", "/api/3.0/mlflow/workspaces"),
    ("POST", "/api/2.0/mlflow/artifacts/presigned-upload-url"),
    ("POST", "/api/2.0/mlflow-artifacts/mpu/create/1/run/artifacts/x.bin"),
    ("GET", "/ajax-api/2.0/mlflow/experiments/search"),
    ("GET", "/"),
    ("GET", "/static-files/index.html"),
    ("GET", "/api/2.0/mlflow/nosuch"),
    ("GET", "/api/2.0/mlflow/experiments/create"),
    ("DELETE", "/api/2.0/mlflow/runs/get"),
]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``calabi serve`` with its own tracking server."""
    live = start_server(tmp_path_factory.mktemp("allow-list"), embedded_tracking=True)
    yield live
    stop_server(live)


@dataclass
class Recorder:
    """A stand-in tracking server that records what reaches it and answers with a cookie."""

    url: str = ""
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    record = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            record.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            payload = json.dumps({"experiment_id": "7"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("set-cookie", "tracking-session=secret")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *_args: Any) -> None:
            pass

    http_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.url = f"http://127.0.0.1:{http_server.server_address[1]}"
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    yield record
    http_server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[LiveServer]:
    """Calabi in front of the recorder."""
    live = start_server(tmp_path_factory.mktemp("recorded"), tracking_url=recorder.url)
    yield live
    stop_server(live)


def tracking_events(server: LiveServer) -> list[dict[str, Any]]:
    """The audit's ``tracking_write`` events, oldest first."""
    with server.client() as http:
        events = ok_list(http.get("/api/v1/audit", params={"limit": 1000}))
    return [e for e in events if e["action"] == "tracking_write"]


def ok_list(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def test_the_attack_local_artifact_locations_are_refused_and_production_still_loads(
    embedded: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    name, view = register(embedded)
    with embedded.client() as http:
        ok(call(http, "POST", "/model-versions/transition-stage", name=name, version="1", stage="Production"))
    target = copy_path(view)
    engineer = embedded.create_user(random_name("engineer"), "engineer")
    tracking = f"http://127.0.0.1:{embedded.tracking_port}"
    refused_locations = [
        {"artifact_location": target.as_uri()}, {"artifactLocation": target.as_uri()},
        {"artifact_location": str(target)}, {"artifact_location": "s3://bucket/x"},
        {"artifact_location": "mlflow-artifacts://127.0.0.1:1/x"},
        {"artifact_location": "mlflow-artifacts:/../../registry"},
        {"artifact_location": "mlflow-artifacts:/calabi-registry/x"},
    ]
    with embedded.client(engineer) as http:
        for fields in refused_locations:
            experiment = random_name("attack")
            body = assert_error(http.post(f"/mlflow{API}/experiments/create", json={"name": experiment, **fields}),
                                400, "INVALID_PARAMETER_VALUE")
            assert "mlflow-artifacts:/" in body["message"], body
            direct = httpx.get(f"{tracking}{API}/experiments/get-by-name", params={"experiment_name": experiment})
            assert direct.status_code == 404, f"{fields} reached the tracking server"
        # The server-side upload that wrote the attacker's bytes is not forwarded either.
        run = ok(http.post(f"/mlflow{API}/runs/create", json={"experiment_id": "0"}))["run"]["info"]["run_id"]
        assert_error(http.post(f"/mlflow/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run}&path=model.pkl",
                               content=b"poisoned"), 404, "ENDPOINT_NOT_FOUND")

    tracking_uri = f"{embedded.url}/mlflow"
    use_mlflow(monkeypatch, tracking_uri, engineer)
    client = MlflowClient(tracking_uri=tracking_uri)
    with pytest.raises(MlflowException) as raised:
        client.create_experiment(random_name("attack"), artifact_location=target.as_uri())
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    # An mlflow-artifacts path of the proxy is fine, and its artifacts land in the tracking server's root.
    experiment_id = client.create_experiment(random_name("team"), artifact_location="mlflow-artifacts:/team-a")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_text(run_id, "fine", "notes.txt")
    tracking_root = embedded.data_dir / "mlflow" / "artifacts"
    assert (tracking_root / "team-a" / run_id / "artifacts" / "notes.txt").read_text() == "fine"

    use_mlflow(monkeypatch, tracking_uri, embedded.admin_token)
    import mlflow.artifacts

    loaded = mlflow.artifacts.download_artifacts(f"models:/{name}/Production", dst_path=str(tmp_path))
    assert read_tree(Path(loaded)) == MODEL_FILES


@pytest.mark.parametrize(("method", "path"), REFUSED, ids=[f"{m} {p}" for m, p in REFUSED])
def test_routes_off_the_list_are_404_with_mlflow_json_and_never_forwarded(
    recorded: LiveServer, recorder: Recorder, method: str, path: str
) -> None:
    before = len(recorder.seen)
    with recorded.client() as http:
        for prefix in ("/mlflow", ""):
            if not prefix and not path.startswith(("/api/2.0/mlflow", "/api/3.0/mlflow")):
                continue  # at the root only the MLflow API paths belong to the gateway
            body = assert_error(http.request(method, prefix + path, json={}), 404, "ENDPOINT_NOT_FOUND")
            assert "forwards only" in body["message"], body
    assert recorder.seen[before:] == []


def test_forwarded_headers_name_the_caller_and_cookies_never_cross(recorded: LiveServer, recorder: Recorder) -> None:
    before = len(recorder.seen)
    spoofed = {"Forwarded": "for=127.0.0.1", "X-Real-IP": "127.0.0.1", "X-Forwarded-Host": "evil",
               "Cookie": "calabi_session=abc"}
    with recorded.client() as http:
        answer = http.get(f"/mlflow{API}/experiments/search", params={"max_results": 1}, headers=spoofed)
        written = http.post(f"{API}/experiments/create", json={"name": "x", "artifactLocation": ""},
                            headers=spoofed)
    for response in (answer, written):  # the recorder sets a cookie each time: not for the caller, nor kept
        assert response.status_code == 200 and "set-cookie" not in response.headers, response.headers
    assert written.json() == {"experiment_id": "7"}
    [(_, read_path, read_headers, _), (_, _, write_headers, write_body)] = recorder.seen[before:]
    assert read_path == f"{API}/experiments/search?max_results=1"
    for headers in (read_headers, write_headers):
        assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-proto"] == "http", headers
        assert not {"cookie", "forwarded", "x-real-ip", "x-forwarded-host", "authorization"} & headers.keys()
    assert json.loads(write_body) == {"name": "x", "artifactLocation": ""}


def raw_post(server: LiveServer, path: str, head: str, body: bytes) -> bytes:
    """One HTTP/1.1 POST written on a socket (``head``: the body's framing headers); the answer's bytes."""
    host, port = urlsplit(server.url).hostname or "", urlsplit(server.url).port or 0
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.admin_token}\r\n"
                     f"Content-Type: application/json\r\nConnection: close\r\n{head}\r\n".encode() + body)
        chunks = [sock.recv(65536)]
        while chunks[-1] and len(chunks) < 1000:
            chunks.append(sock.recv(65536))
    return b"".join(chunks)


def test_json_writes_are_bounded_and_must_be_objects(recorded: LiveServer, recorder: Recorder) -> None:
    before = len(recorder.seen)
    limit = 4 * 1024 * 1024
    declared = raw_post(recorded, f"{API}/runs/log-batch", f"Content-Length: {limit + 1}\r\n", b"")
    oversized = b"{" + b" " * limit
    chunked = raw_post(recorded, f"{API}/runs/log-batch", "Transfer-Encoding: chunked\r\n",
                       f"{len(oversized):x}\r\n".encode() + oversized + b"\r\n0\r\n\r\n")
    for answer in (declared, chunked):
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b'"error_code":"INVALID_PARAMETER_VALUE"' in answer, answer[-300:]
    double_encoded = json.dumps(json.dumps({"name": "x", "artifact_location": "file:///tmp"})).encode()
    with recorded.client() as http:  # MLflow would decode a JSON string body a second time
        for content in (b"[1]", b"not json", double_encoded):
            assert_error(http.post(f"{API}/experiments/create", content=content), 400, "INVALID_PARAMETER_VALUE")
    assert recorder.seen[before:] == []


def test_every_tracking_write_is_audited_with_the_actor_route_and_ids(
    embedded: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    engineer_name = random_name("engineer")
    engineer = embedded.create_user(engineer_name, "engineer")
    tracking_uri = f"{embedded.url}/mlflow"
    use_mlflow(monkeypatch, tracking_uri, engineer)
    client = MlflowClient(tracking_uri=tracking_uri)
    before = len(tracking_events(embedded))
    experiment_id = client.create_experiment(random_name("audited"))
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "auc", 0.9)
    client.set_tag(run_id, "team", "churn")
    client.search_runs([experiment_id])  # reads are not audited
    with embedded.client(engineer) as http:  # nor refused writes
        assert_error(http.post(f"{API}/runs/log-metric", json={"run_id": "nosuch", "key": "k", "value": 1,
                                                               "timestamp": 1}), 404, "RESOURCE_DOES_NOT_EXIST")
    events = tracking_events(embedded)[before:]
    assert [(e["actor"], e["after"]["route"], e["subject"]) for e in events] == [
        (engineer_name, f"POST {API}/experiments/create", f"experiment:{experiment_id}"),
        (engineer_name, f"POST {API}/runs/create", f"run:{run_id}"),
        (engineer_name, f"POST {API}/runs/log-metric", f"run:{run_id}"),
        (engineer_name, f"POST {API}/runs/set-tag", f"run:{run_id}"),
    ]
    assert events[1]["after"]["experiment_id"] == experiment_id
    with embedded.client() as http:
        assert ok(http.get("/api/v1/audit/verify"))["ok"] is True
