"""The tracking gateway and the registry's own artifact namespace, against a real ``mlflow server`` and live Calabi.

Tracking calls under ``/mlflow`` (and the tracking paths at the root) reach the real tracking
server behind Calabi's auth; ``get-download-uri`` answers ``mlflow-artifacts:/calabi-registry/<id>``
and the stock client downloads the verified registry copy through the same tracking URI.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from mlflow.exceptions import MlflowException

from tests.e2e.helpers import assert_error, call, create_model, ok, random_name, use_mlflow
from tests.fixtures.servers import LiveServer, free_port, start_server, stop_server
from tests.fixtures.tracking import TrackingServer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MB = 1024 * 1024
BIG = 64 * MB
MODEL_FILES = {
    "MLmodel": b"artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n",
    "model.pkl": b"\x80\x04original weights",
    "data/features.json": b'["tenure", "plan"]',
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tracking_server: TrackingServer) -> Iterator[LiveServer]:
    """Calabi in front of the session's tracking server."""
    live = start_server(tmp_path_factory.mktemp("gateway"),
                        extra_env={"CALABI_MLFLOW_TRACKING_URL": tracking_server.url})
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def down_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Calabi pointed at a port where nothing listens."""
    live = start_server(tmp_path_factory.mktemp("gateway-down"),
                        extra_env={"CALABI_MLFLOW_TRACKING_URL": f"http://127.0.0.1:{free_port()}"})
    yield live
    stop_server(live)


@pytest.fixture(params=["/mlflow", ""], ids=["mlflow-prefix", "root"])
def prefix(request: pytest.FixtureRequest) -> str:
    """The tracking URI's path: the seed's ``<host>/mlflow`` or the bare host."""
    value: str = request.param
    return value


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` except the client's own ``registered_model_meta``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "registered_model_meta"}


def register(server: LiveServer, files: dict[str, bytes] | None = None) -> tuple[str, dict[str, Any]]:
    """A new model with one version registered from a local source; its name and Calabi's view of version 1."""
    source = write_tree(server.source_root / f"model-{secrets.token_hex(4)}", files or MODEL_FILES)
    with server.client() as http:
        name = create_model(http)
        ok(call(http, "POST", "/model-versions/create", {"name": name, "source": str(source)}))
        view = http.get(f"/api/v1/models/{name}/versions/1")
    assert view.status_code == 200, view.text
    details: dict[str, Any] = view.json()
    return name, details


def copy_path(view: dict[str, Any]) -> Path:
    """The registry copy's directory on the server's disk."""
    location = view["storage_location"]
    assert location.startswith("file://"), location
    return Path(unquote(urlsplit(location).path))


def vm_hwm_bytes(pid: int) -> int:
    """Peak resident set size of a process (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes in 1 MB chunks; return their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for _ in range(size // MB):
            chunk = os.urandom(MB)
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ forwarding


def test_raw_tracking_calls_under_mlflow_reach_the_real_tracking_server(
    server: LiveServer, tracking_server: TrackingServer
) -> None:
    name = random_name("experiment")
    with server.client() as http:
        created = http.post(f"/mlflow{API}/experiments/create", json={"name": name},
                            headers={"X-Request-ID": "gateway-test-1"})
        assert created.headers["x-request-id"] == "gateway-test-1"
        experiment_id = ok(created)["experiment_id"]
        run = ok(http.post(f"/mlflow{API}/runs/create", json={"experiment_id": experiment_id, "start_time": 1}))
        run_id = run["run"]["info"]["run_id"]
        ok(http.post(f"/mlflow{API}/runs/log-metric",
                     json={"run_id": run_id, "key": "auc", "value": 0.87, "timestamp": 2, "step": 0}))
        found = ok(http.post(f"/mlflow{API}/runs/search", json={"experiment_ids": [experiment_id]}))["runs"]
        assert [r["info"]["run_id"] for r in found] == [run_id]
        assert found[0]["data"]["metrics"] == [{"key": "auc", "value": 0.87, "timestamp": 2, "step": 0}]
        by_query = ok(http.get(f"/mlflow{API}/experiments/get-by-name", params={"experiment_name": name}))
        assert by_query["experiment"]["experiment_id"] == experiment_id
        info = ok(http.get("/mlflow/api/3.0/mlflow/server-info"))
        assert info["store_type"] == "SqlStore" and info["multipart_downloads_enabled"] is False
    # The experiment lives in the tracking server itself.
    direct = httpx.get(f"{tracking_server.url}{API}/experiments/get", params={"experiment_id": experiment_id})
    assert direct.status_code == 200 and direct.json()["experiment"]["name"] == name


def test_the_mlflow_client_logs_and_searches_runs_with_only_the_tracking_uri(
    server: LiveServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    tracking_uri = f"{server.url}{prefix}"
    use_mlflow(monkeypatch, tracking_uri, server.admin_token)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment(random_name("churn"))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("max_depth", 3)
        for step, value in enumerate((0.71, 0.79, 0.83)):
            mlflow.log_metric("val_auc", value, step=step)
    runs = client.search_runs([experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    assert runs[0].data.params == {"max_depth": "3"} and runs[0].data.metrics == {"val_auc": 0.83}
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert [m.value for m in history] == [0.71, 0.79, 0.83]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_large_artifact_and_a_large_registry_copy_stream_through_without_growing_the_server(
    tmp_path: Path, tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    live = start_server(tmp_path / "calabi", extra_env={"CALABI_MLFLOW_TRACKING_URL": tracking_server.url})
    try:
        tracking_uri = f"{live.url}/mlflow"
        use_mlflow(monkeypatch, tracking_uri, live.admin_token)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        experiment_id = client.create_experiment(random_name("big"))  # warms up both paths before the baseline
        client.search_registered_models()
        baseline = vm_hwm_bytes(live.process.pid)

        upload = tmp_path / "big.bin"
        expected = write_random(upload, BIG)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_artifact(str(upload))
        downloaded = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="big.bin", dst_path=str(tmp_path / "run-download")
        )
        assert sha256_file(Path(downloaded)) == expected

        source = write_tree(live.source_root / "big-model", {"MLmodel": MODEL_FILES["MLmodel"]})
        model_digest = write_random(source / "model.pkl", BIG)
        name = random_name("big-model")
        client.create_registered_model(name)
        client.create_model_version(name, source=str(source))
        loaded = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "model")))
        assert sha256_file(loaded / "model.pkl") == model_digest

        growth = vm_hwm_bytes(live.process.pid) - baseline
        assert growth < BIG // 3, f"peak RSS grew by {growth / MB:.1f} MB moving {BIG // MB} MB files"
    finally:
        stop_server(live)


# ------------------------------------------------------------------------------------------ auth


def test_tracking_calls_need_a_token_and_writes_need_the_engineer_role(
    server: LiveServer, tracking_server: TrackingServer
) -> None:
    viewer = server.create_user(random_name("viewer"), "viewer")
    engineer = server.create_user(random_name("engineer"), "engineer")
    name = random_name("experiment")
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert_error(anonymous.post(f"/mlflow{API}/experiments/create", json={"name": name}), 401, "UNAUTHENTICATED")
        assert_error(anonymous.get(f"/mlflow{API}/experiments/search", params={"max_results": 1}), 401,
                     "UNAUTHENTICATED")
        assert_error(anonymous.get(f"{API}/experiments/search", params={"max_results": 1}), 401, "UNAUTHENTICATED")
    with server.client(viewer) as http:
        body = assert_error(http.post(f"/mlflow{API}/experiments/create", json={"name": name}), 403,
                            "PERMISSION_DENIED")
        assert "engineer" in body["message"]
        assert_error(http.post(f"{API}/runs/create", json={"experiment_id": "0"}), 403, "PERMISSION_DENIED")
        ok(http.get(f"/mlflow{API}/experiments/search", params={"max_results": 1}))
        ok(http.post(f"/mlflow{API}/runs/search", json={"experiment_ids": ["0"], "max_results": 1}))
    refused = httpx.get(f"{tracking_server.url}{API}/experiments/get-by-name", params={"experiment_name": name})
    assert refused.status_code == 404, "a refused request reached the tracking server"
    with server.client(engineer) as http:
        ok(http.post(f"/mlflow{API}/experiments/create", json={"name": name}))


def test_the_mlflow_client_as_a_viewer_reads_but_cannot_write(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    viewer = server.create_user(random_name("viewer"), "viewer")
    tracking_uri = f"{server.url}/mlflow"
    use_mlflow(monkeypatch, tracking_uri, viewer)
    client = MlflowClient(tracking_uri=tracking_uri)
    assert client.get_experiment("0").name == "Default"
    with pytest.raises(MlflowException) as raised:
        client.create_experiment(random_name("nope"))
    assert raised.value.error_code == "PERMISSION_DENIED"


# ------------------------------------------------------------------------------------------ no / down tracking


def test_when_the_tracking_server_is_down_tracking_calls_are_503_and_the_registry_keeps_working(
    down_server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    tracking_url = down_server.env["CALABI_MLFLOW_TRACKING_URL"]
    with down_server.client() as http:
        for response in (http.get(f"/mlflow{API}/experiments/search", params={"max_results": 1}),
                         http.post(f"{API}/runs/create", json={"experiment_id": "0"}),
                         http.put(f"/mlflow{ARTIFACTS}/1/run/artifacts/x.bin", content=b"x")):
            body = assert_error(response, 503, "TEMPORARILY_UNAVAILABLE")
            assert body["message"].startswith(f"MLflow tracking server at {tracking_url} is unavailable: "), body
        for path in (f"{API}/registered-models/search", f"/mlflow{API}/registered-models/search"):
            ok(http.get(path))
        scrape = http.get("/metrics")
        assert scrape.status_code == 200, scrape.text
        errors = [line for line in scrape.text.splitlines()
                  if line.startswith('calabi_tracking_gateway_upstream_errors_total{kind="unreachable"}')]
        assert errors and float(errors[0].split()[-1]) >= 3, errors
    name, _view = register(down_server)

    tracking_uri = f"{down_server.url}/mlflow"
    use_mlflow(monkeypatch, tracking_uri, down_server.admin_token)
    started = time.monotonic()
    with pytest.raises(MlflowException) as raised:
        MlflowClient(tracking_uri=tracking_uri).create_experiment(random_name("down"))
    # With retries exhausted urllib3 reports "too many 503 error responses" (the client does not parse the body).
    assert "503" in str(raised.value) and time.monotonic() - started < 30, str(raised.value)
    loaded = mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path))
    assert read_tree(Path(loaded)) == MODEL_FILES


def test_without_a_tracking_server_tracking_calls_say_none_is_configured(live_server: LiveServer) -> None:
    with live_server.client() as http:
        for response in (http.get(f"/mlflow{API}/experiments/search"), http.post(f"{API}/runs/create", json={})):
            body = assert_error(response, 501, "NOT_IMPLEMENTED")
            assert "No MLflow tracking server is configured (CALABI_MLFLOW_TRACKING_URL)" in body["message"]


# ------------------------------------------------------------------------------------------ registry copies


def test_the_download_uri_names_the_registry_copy_and_loads_identical_bytes(
    server: LiveServer, prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    name, view = register(server)
    tracking_uri = f"{server.url}{prefix}"
    use_mlflow(monkeypatch, tracking_uri, server.admin_token)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert view["artifact_id"] and copy_path(view).name == view["artifact_id"]
    download_uri = client.get_model_version_download_uri(name, "1")
    assert download_uri == f"mlflow-artifacts:/calabi-registry/{view['artifact_id']}"
    loaded = mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path))
    assert read_tree(Path(loaded)) == MODEL_FILES
    with server.client() as http:
        listing = ok(http.get(f"{prefix}{ARTIFACTS}", params={"path": f"calabi-registry/{view['artifact_id']}"}))
        file = http.get(f"{prefix}{ARTIFACTS}/calabi-registry/{view['artifact_id']}/data/features.json")
    assert listing["files"] == [
        {"path": "MLmodel", "is_dir": False, "file_size": len(MODEL_FILES["MLmodel"])},
        {"path": "data", "is_dir": True},
        {"path": "model.pkl", "is_dir": False, "file_size": len(MODEL_FILES["model.pkl"])},
    ]
    assert file.status_code == 200 and file.content == MODEL_FILES["data/features.json"]
    assert file.headers["content-length"] == str(len(MODEL_FILES["data/features.json"]))


def test_a_tampered_copy_fails_the_download_fast_with_data_loss(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow.artifacts

    name, view = register(server)
    (copy_path(view) / "model.pkl").write_bytes(b"\x80\x04poisoned weights")
    use_mlflow(monkeypatch, f"{server.url}/mlflow", server.admin_token)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")  # the client's default retries stay on
    started = time.monotonic()
    with pytest.raises(MlflowException) as raised:
        mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path))
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert "DATA_LOSS" in message and "model.pkl" in message, message
    assert f"Model '{name}' version 1: the registry's copy does not match the digest recorded" in message, message
    assert elapsed < 20, f"the refused download took {elapsed:.1f} s (retries?)"
    with server.client() as http:
        file = http.get(f"/mlflow{ARTIFACTS}/calabi-registry/{view['artifact_id']}/model.pkl")
        assert_error(file, 409, "DATA_LOSS")
        (copy_path(view) / "extra.py").write_bytes(b"import os")
        listing = http.get(f"{ARTIFACTS}", params={"path": f"calabi-registry/{view['artifact_id']}"})
        assert "not recorded ['extra.py']" in assert_error(listing, 409, "DATA_LOSS")["message"]


def test_the_registry_namespace_is_read_only(
    server: LiveServer, tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow.artifacts
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    name, view = register(server)
    base = f"calabi-registry/{view['artifact_id']}"
    with server.client() as http:
        for prefix_path in ("", "/mlflow"):
            for response in (
                http.put(f"{prefix_path}{ARTIFACTS}/{base}/model.pkl", content=b"evil"),
                http.put(f"{prefix_path}{ARTIFACTS}/{base}/new.bin", content=b"evil"),
                http.delete(f"{prefix_path}{ARTIFACTS}/{base}/model.pkl"),
                http.delete(f"{prefix_path}{ARTIFACTS}", params={"path": base}),
                http.post(f"{prefix_path}/api/2.0/mlflow-artifacts/mpu/create/{base}",
                          json={"path": "x", "num_parts": 1}),
                http.post(f"{prefix_path}/api/2.0/mlflow-artifacts/mpu/complete/{base}", json={}),
            ):
                assert_error(response, 403, "PERMISSION_DENIED")
            assert_error(http.get(f"{prefix_path}/api/2.0/mlflow-artifacts/presigned/{base}/model.pkl"), 501,
                         "NOT_IMPLEMENTED")

    tracking_uri = f"{server.url}/mlflow"
    use_mlflow(monkeypatch, tracking_uri, server.admin_token)
    evil = write_tree(tmp_path / "evil", {"model.pkl": b"evil"}) / "model.pkl"
    with pytest.raises(Exception, match="403") as raised:
        MlflowArtifactsRepository(f"mlflow-artifacts:/{base}", tracking_uri=tracking_uri).log_artifact(str(evil))
    assert "read-only" in str(raised.value)
    loaded = mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "loaded"))
    assert read_tree(Path(loaded)) == MODEL_FILES
    assert not (tracking_server.artifacts_dir / "calabi-registry").exists()


def test_registry_routes_are_answered_by_calabi_and_never_forwarded(
    server: LiveServer, tracking_server: TrackingServer
) -> None:
    with server.client() as http:
        name = create_model(http)
        ok(http.post(f"/mlflow{API}/registered-models/set-tag", json={"name": name, "key": "k", "value": "v"}))
        assert http.get(f"/api/v1/models/{name}").status_code == 200
        assert_error(http.post(f"/mlflow{API}/registered-models/nosuch", json={"name": name}), 404,
                     "ENDPOINT_NOT_FOUND")
        assert_error(http.get(f"{API}/registered-models/nosuch"), 404, "ENDPOINT_NOT_FOUND")
        assert_error(http.delete(f"/mlflow{API}/registered-models/get", params={"name": name}), 404,
                     "ENDPOINT_NOT_FOUND")
        shadow = random_name("shadow")
        assert_error(http.post("/mlflow/ajax-api/2.0/mlflow/registered-models/create", json={"name": shadow}), 404,
                     "ENDPOINT_NOT_FOUND")
        for path in (f"/mlflow{API}/webhooks", f"{API}/webhooks"):  # Calabi's own webhooks API, never forwarded
            assert_error(http.post(path, json={"name": shadow}), 400, "INVALID_PARAMETER_VALUE")
        assert ok(call(http, "GET", "/registered-models/get", name=name))["registered_model"]["tags"] == [
            {"key": "k", "value": "v"}
        ]
        assert_error(http.get(f"/mlflow{API}/../{API}/experiments/search"), 400, "INVALID_PARAMETER_VALUE")
    for missing in (name, shadow):
        direct = httpx.get(f"{tracking_server.url}{API}/registered-models/get", params={"name": missing})
        assert direct.status_code == 404, f"{missing} reached the tracking server's own registry"
