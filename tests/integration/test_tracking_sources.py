"""Registering ``runs:/``, ``models:/m-…`` and ``mlflow-artifacts:/`` sources resolved through a real
MLflow tracking server (DESIGN §3 invariant 6): the copy, the run and logged-model ids, the evidence
snapshot, and the refusals. The runs and logged models are made with the real ``mlflow`` client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from calabi.api.tracking_server import START_TIMEOUT_S
from calabi.processes import die_with_parent
from registry_store.artifacts import SourceFetcher, tree_digest
from registry_store.artifacts.tracking_client import TrackingClient
from registry_store.artifacts.tracking_sources import TrackingSourceResolver
from registry_store.errors import InvalidParameterError, NotFoundError, RegistryError, UnavailableError
from tests.fixtures.servers import free_port
from tests.fixtures.tracking import TrackingServer
from tests.integration.helpers import DATABASES, Registry, build_registry, database_url, files_below

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

MODEL = "churn-predictor"
MLMODEL = b"artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
FOLDER = {"MLmodel": MLMODEL, "model.pkl": b"\x80\x04weights", "data/features.json": b'["tenure", "plan"]'}
NOTES = {"notes.txt": b"no model here"}
MISSING_RUN = "0" * 32
MISSING_MODEL = f"m-{'0' * 32}"


@dataclass(frozen=True)
class Tracked:
    """What the module logged into the session's tracking server."""

    server: TrackingServer
    experiment_id: str
    folder: Path
    """The local copy of the MLflow-2-style folder logged as ``model`` of ``folder_run``."""
    folder_run: str
    """Run artifacts ``model/`` (with MLmodel) and ``notes/`` (without); auc=0.91, loss=NaN, C=0.5."""
    model_run: str
    """An MLflow 3 run: ``mlflow.sklearn.log_model(name="model")``, plus a run file ``model/README.txt``;
    auc=0.93, val_auc=0.92 on the model."""
    logged_model: str
    steps_run: str
    """Two logged models named ``clf``: the best at step 3 (created first), another at step 1."""
    best_model: str

    def logged_model_dir(self, model_id: str) -> Path:
        return self.server.artifacts_dir / self.experiment_id / "models" / model_id / "artifacts"


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return root


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def _log_everything(url: str, tmp: Path) -> Tracked:
    """Create the experiment, runs and logged models with the real mlflow client (global URI patched)."""
    import mlflow
    import numpy as np
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from sklearn.linear_model import LogisticRegression

    client = mlflow.MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(f"tracking-sources-{uuid.uuid4().hex[:8]}")

    folder = write_tree(tmp / "model", FOLDER)
    folder_run = client.create_run(experiment_id, run_name="mlflow2-folder").info.run_id
    client.log_metric(folder_run, "auc", 0.91)
    client.log_metric(folder_run, "loss", float("nan"))
    client.log_param(folder_run, "C", "0.5")
    client.log_artifacts(folder_run, str(folder), "model")
    client.log_artifacts(folder_run, str(write_tree(tmp / "notes", NOTES)), "notes")
    client.set_terminated(folder_run)

    with mlflow.start_run(experiment_id=experiment_id, run_name="mlflow3-model") as run:
        mlflow.log_metric("auc", 0.93)
        mlflow.log_param("max_iter", "100")
        fitted = LogisticRegression(max_iter=100).fit(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]))
        info = mlflow.sklearn.log_model(fitted, name="model")
        mlflow.log_text("a note, not the model", "model/README.txt")  # run files at the name, but no MLmodel
        client.log_metric(run.info.run_id, "val_auc", 0.92, model_id=info.model_id)

    steps_run = client.create_run(experiment_id, run_name="two-steps").info.run_id
    ids = {}
    for step in (3, 1):
        logged = client.create_logged_model(experiment_id, name="clf", source_run_id=steps_run)
        files = write_tree(tmp / f"clf-{step}", {"MLmodel": b"step: %d\n" % step})
        client.log_model_artifacts(logged.model_id, str(files))
        client.log_outputs(steps_run, [LoggedModelOutput(logged.model_id, step)])
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        ids[step] = logged.model_id
    client.set_terminated(steps_run)
    return Tracked(
        server=TrackingServer(url, Path()), experiment_id=experiment_id, folder=folder, folder_run=folder_run,
        model_run=run.info.run_id, logged_model=info.model_id, steps_run=steps_run, best_model=ids[3],
    )


@pytest.fixture(scope="module")
def tracked(tracking_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    import mlflow.tracking._tracking_service.utils as tracking_utils

    with pytest.MonkeyPatch.context() as patch:  # mlflow.set_tracking_uri would leak into other tests
        patch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
        patch.setattr(tracking_utils, "_tracking_uri", tracking_server.url)
        patch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
        made = _log_everything(tracking_server.url, tmp_path_factory.mktemp("logged"))
    return replace(made, server=tracking_server)


def registry_with_tracking(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, tracking_url: str, **kwargs: Any
) -> Registry:
    monkeypatch.setenv("CALABI_MLFLOW_TRACKING_URL", tracking_url)
    registry = build_registry(tmp_path, url, **kwargs)
    registry.model(MODEL)
    return registry


@pytest.fixture
def reg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tracked: Tracked) -> Iterator[Registry]:
    registry = registry_with_tracking(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'r.db'}", tracked.server.url)
    yield registry
    registry.services.close()


@pytest.fixture(params=DATABASES)
def reg_db(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tracked: Tracked
) -> Iterator[Registry]:
    registry = registry_with_tracking(monkeypatch, tmp_path, database_url(request, tmp_path), tracked.server.url)
    yield registry
    registry.services.close()


@pytest.fixture
def client(tracked: Tracked) -> Iterator[TrackingClient]:
    with TrackingClient(tracked.server.url, timeout=30) as tracking:
        yield tracking


def copied_files(location: str) -> dict[str, bytes]:
    root = Path(location.removeprefix("file://"))
    return {str(path.relative_to(root)): path.read_bytes() for path in files_below(root)}


def nothing_registered(reg: Registry, audit_before: int) -> None:
    assert reg.scalar("SELECT count(*) FROM model_versions") == 0
    assert files_below(Path(reg.artifact_root)) == []
    assert reg.audit_count() == audit_before


# ------------------------------------------------------------------ registration through the service


def test_a_runs_uri_of_a_run_artifact_folder_copies_the_folder_with_the_run_numbers(
    reg: Registry, tracked: Tracked
) -> None:
    mv = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=f"runs:/{tracked.folder_run}/model")

    assert (mv.source, mv.run_id, mv.model_id) == (f"runs:/{tracked.folder_run}/model", tracked.folder_run, "")
    assert copied_files(mv.storage_location) == FOLDER
    assert mv.digest == tree_digest(tracked.folder)
    assert mv.evidence["run_metrics"] == {"auc": 0.91}  # the NaN loss is left out
    assert mv.evidence["run_params"] == {"C": "0.5"}
    assert mv.evidence["metrics"] == {"auc": 0.91}
    assert mv.evidence["flavors"] == ["python_function"]


def test_a_runs_uri_naming_an_mlflow3_logged_model_registers_that_logged_model(
    reg: Registry, tracked: Tracked
) -> None:
    mv = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=f"runs:/{tracked.model_run}/model")

    assert (mv.run_id, mv.model_id) == (tracked.model_run, tracked.logged_model)
    assert mv.digest == tree_digest(tracked.logged_model_dir(tracked.logged_model))
    assert "MLmodel" in copied_files(mv.storage_location)
    assert "sklearn" in mv.evidence["flavors"]
    assert mv.evidence["model_metrics"]["val_auc"] == 0.92


def test_a_models_uri_fills_the_run_from_the_logged_model_and_snapshots_both_sets_of_numbers(
    reg_db: Registry, tracked: Tracked
) -> None:
    source = f"models:/{tracked.logged_model}"

    mv = reg_db.svc.registration.create_model_version(reg_db.engineer, name=MODEL, source=source)

    assert (mv.source, mv.run_id, mv.model_id) == (source, tracked.model_run, tracked.logged_model)
    assert mv.digest == tree_digest(tracked.logged_model_dir(tracked.logged_model))
    assert mv.evidence["run_metrics"] == {"auc": 0.93, "val_auc": 0.92}
    assert mv.evidence["run_params"] == {"max_iter": "100"}
    assert mv.evidence["model_metrics"]["val_auc"] == 0.92
    assert mv.evidence["metrics"]["val_auc"] == 0.92
    again = reg_db.svc.versions.get_model_version(reg_db.viewer, name=MODEL, version=mv.version)
    assert (again.run_id, again.model_id, again.evidence) == (mv.run_id, mv.model_id, mv.evidence)


def test_a_run_id_contradicting_the_logged_models_run_is_refused_and_nothing_is_kept(
    reg: Registry, tracked: Tracked
) -> None:
    before = reg.audit_count()

    with pytest.raises(InvalidParameterError, match="does not match source"):
        reg.svc.registration.create_model_version(
            reg.engineer, name=MODEL, source=f"models:/{tracked.logged_model}", run_id=tracked.folder_run
        )
    nothing_registered(reg, before)


def test_of_several_logged_models_with_the_name_the_highest_step_wins(reg: Registry, tracked: Tracked) -> None:
    mv = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=f"runs:/{tracked.steps_run}/clf")

    assert (mv.run_id, mv.model_id) == (tracked.steps_run, tracked.best_model)
    assert copied_files(mv.storage_location) == {"MLmodel": b"step: 3\n"}


@pytest.mark.parametrize("host", ["", "//127.0.0.1:{port}"], ids=["no-host", "tracking-host"])
def test_an_mlflow_artifacts_uri_downloads_the_tree_through_the_proxy(
    reg: Registry, tracked: Tracked, host: str
) -> None:
    port = tracked.server.url.rsplit(":", 1)[1]
    source = f"mlflow-artifacts:{host.format(port=port)}/{tracked.experiment_id}/{tracked.folder_run}/artifacts/model"

    mv = reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)

    assert copied_files(mv.storage_location) == FOLDER
    assert (mv.run_id, mv.model_id) == ("", "")


@pytest.mark.parametrize(
    "template",
    ["runs:/{run}/notes", "mlflow-artifacts:/{experiment}/{run}/artifacts/notes"],
    ids=["runs", "mlflow-artifacts"],
)
def test_a_tracking_source_without_mlmodel_is_refused_and_leaves_nothing_behind(
    reg: Registry, tracked: Tracked, template: str
) -> None:
    source = template.format(run=tracked.folder_run, experiment=tracked.experiment_id)
    before = reg.audit_count()

    with pytest.raises(InvalidParameterError, match="is not an MLflow model: it has no MLmodel"):
        reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)
    nothing_registered(reg, before)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (f"runs:/{MISSING_RUN}/model", f"run '{MISSING_RUN}' does not exist on the tracking server"),
        (f"models:/{MISSING_MODEL}", f"logged model '{MISSING_MODEL}' does not exist on the tracking server"),
        ("runs:/{run}/absent", "has no artifacts at 'absent' and no logged model named 'absent'"),
        ("mlflow-artifacts:/{experiment}/{run}/artifacts/absent", "is empty or does not exist"),
    ],
    ids=["run", "logged-model", "run-path", "artifacts-path"],
)
def test_what_the_tracking_server_does_not_have_is_an_invalid_source(
    reg: Registry, tracked: Tracked, template: str, message: str
) -> None:
    source = template.format(run=tracked.folder_run, experiment=tracked.experiment_id)
    before = reg.audit_count()

    with pytest.raises(InvalidParameterError, match=re.escape(message)) as info:
        reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)
    assert source in info.value.message
    nothing_registered(reg, before)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("http://127.0.0.1:1/model", "does not fetch arbitrary URLs"),
        ("https://tracking.example/model", "does not fetch arbitrary URLs"),
        ("models:/churn/1", "names a registered model version"),
        ("models:/churn/Production", "names a registered model version"),
        ("models:/churn/latest", "names a registered model version"),
        ("models:/churn@champion", "names a registered model version"),
        ("models:/churn", "is not a logged-model URI"),
        ("runs:/", "is not a runs:/<run_id>/<path> URI"),
        ("runs:/abc/../model", "has an invalid path"),
        ("mlflow-artifacts:/1/../model", "has an invalid path"),
        ("mlflow-artifacts:/1/%2e%2e/model", "has an invalid path"),
        ("mlflow-artifacts:/1/a%00b", "has an invalid path"),
        ("mlflow-artifacts:/", "must name a path"),
        ("mlflow-artifacts://evil.example:5000/1/model", "names another tracking server"),
    ],
)
def test_sources_refused_before_anything_is_copied(reg: Registry, source: str, message: str) -> None:
    before = reg.audit_count()

    with pytest.raises(InvalidParameterError, match=re.escape(message)) as info:
        reg.svc.registration.create_model_version(reg.engineer, name=MODEL, source=source)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    nothing_registered(reg, before)


def test_an_unreachable_tracking_server_makes_tracking_sources_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    down = closed_port_url()
    registry = registry_with_tracking(monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'r.db'}", down)
    try:
        before = registry.audit_count()
        with pytest.raises(UnavailableError, match=re.escape(f"MLflow tracking server at {down} is unavailable")):
            registry.svc.registration.create_model_version(registry.engineer, name=MODEL,
                                                           source=f"runs:/{MISSING_RUN}/model")
        nothing_registered(registry, before)
    finally:
        registry.services.close()


def test_a_logged_model_lands_in_an_s3_artifact_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tracked: Tracked, s3_endpoint: str, s3_bucket: str
) -> None:
    registry = registry_with_tracking(
        monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'r.db'}", tracked.server.url,
        artifact_root=f"s3://{s3_bucket}/registry", s3_endpoint_url=s3_endpoint,
    )
    try:
        mv = registry.svc.registration.create_model_version(registry.engineer, name=MODEL,
                                                            source=f"runs:/{tracked.model_run}/model")
    finally:
        registry.services.close()

    match = re.fullmatch(rf"s3://{s3_bucket}/(registry/{MODEL}/[0-9a-f]{{32}})", mv.storage_location)
    assert match, mv.storage_location
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix=f"{match[1]}/")
    logged = tracked.logged_model_dir(tracked.logged_model)
    assert sorted(item["Key"].removeprefix(f"{match[1]}/") for item in listed["Contents"]) == sorted(
        str(path.relative_to(logged)) for path in files_below(logged)
    )
    assert (mv.model_id, mv.digest) == (tracked.logged_model, tree_digest(logged))


@pytest.fixture
def s3_tracking(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> Iterator[str]:
    """A second tracking server whose run artifacts live in S3 (moto), not behind its proxy."""
    port = free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--default-artifact-root", f"s3://{s3_bucket}/mlruns", "--no-serve-artifacts",
    ]
    with (tmp_path / "mlflow.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "mlflow.log").read_text()
            time.sleep(0.2)  # readiness poll, bounded by the deadline
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_sources_whose_tracking_artifacts_live_in_s3_are_copied_from_s3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_tracking: str, s3_endpoint: str
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    client = mlflow.MlflowClient(tracking_uri=s3_tracking)
    experiment_id = client.create_experiment("s3-artifacts")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "auc", 0.8)
    client.log_artifacts(run_id, str(write_tree(tmp_path / "folder", FOLDER)), "model")
    logged = client.create_logged_model(experiment_id, name="clf", source_run_id=run_id)
    client.log_model_artifacts(logged.model_id, str(write_tree(tmp_path / "clf", {"MLmodel": MLMODEL})))
    registry = registry_with_tracking(
        monkeypatch, tmp_path, f"sqlite:///{tmp_path / 'r.db'}", s3_tracking, s3_endpoint_url=s3_endpoint
    )
    try:
        folder = registry.svc.registration.create_model_version(registry.engineer, name=MODEL,
                                                                source=f"runs:/{run_id}/model")
        model = registry.svc.registration.create_model_version(registry.engineer, name=MODEL,
                                                               source=f"runs:/{run_id}/clf")
    finally:
        registry.services.close()

    assert client.get_run(run_id).info.artifact_uri.startswith("s3://")
    assert (folder.run_id, copied_files(folder.storage_location)) == (run_id, FOLDER)
    assert (model.run_id, model.model_id) == (run_id, logged.model_id)
    assert copied_files(model.storage_location) == {"MLmodel": MLMODEL}
    assert folder.evidence["run_metrics"] == {"auc": 0.8}


# ------------------------------------------------------------------ the resolver and the client directly


def test_the_resolver_reports_download_progress_in_bytes(
    client: TrackingClient, tracked: Tracked, tmp_path: Path
) -> None:
    resolver = TrackingSourceResolver(client, copy=SourceFetcher([]).fetch)
    increments: list[int] = []

    facts = resolver(f"runs:/{tracked.folder_run}/model", tmp_path / "out", increments.append)

    assert (facts.run_id, facts.model_id, facts.require_mlmodel) == (tracked.folder_run, "", True)
    assert tree_digest(tmp_path / "out") == tree_digest(tracked.folder)
    assert sum(increments) == sum(len(content) for content in FOLDER.values())
    assert all(step > 0 for step in increments)


def test_the_client_reads_a_run_with_its_latest_metrics_params_and_logged_model_outputs(
    client: TrackingClient, tracked: Tracked
) -> None:
    run = client.get_run(tracked.steps_run)
    folder_run = client.get_run(tracked.folder_run)

    assert (run.run_id, run.experiment_id, run.run_name, run.status) == (
        tracked.steps_run, tracked.experiment_id, "two-steps", "FINISHED"
    )
    assert run.model_outputs[tracked.best_model] == 3
    assert folder_run.artifact_uri == f"mlflow-artifacts:/{tracked.experiment_id}/{tracked.folder_run}/artifacts"
    assert (folder_run.metrics, folder_run.params) == ({"auc": 0.91}, {"C": "0.5"})


def test_the_client_reads_and_searches_logged_models(client: TrackingClient, tracked: Tracked) -> None:
    model = client.get_logged_model(tracked.logged_model)
    clfs = client.search_logged_models([tracked.experiment_id], source_run_id=tracked.steps_run, name="clf")
    none = client.search_logged_models([tracked.experiment_id], source_run_id=tracked.folder_run, name="clf")

    assert (model.name, model.source_run_id, model.status) == ("model", tracked.model_run, "LOGGED_MODEL_READY")
    location = f"mlflow-artifacts:/{tracked.experiment_id}/models/{tracked.logged_model}/artifacts"
    assert model.artifact_location == location
    assert model.metrics["val_auc"] == 0.92
    assert len(clfs) == 2 and tracked.best_model in {m.model_id for m in clfs}
    assert none == []


def test_the_client_lists_experiments_and_their_runs_newest_first(client: TrackingClient, tracked: Tracked) -> None:
    experiments = client.search_experiments(max_results=1000)
    runs = client.search_runs([tracked.experiment_id], max_results=10)

    assert tracked.experiment_id in {e.experiment_id for e in experiments}
    assert [r.run_name for r in runs] == ["two-steps", "mlflow3-model", "mlflow2-folder"]
    assert [r.start_time for r in runs] == sorted((r.start_time for r in runs), reverse=True)


def test_the_client_lists_run_and_proxied_artifacts_and_streams_a_file(
    client: TrackingClient, tracked: Tracked, tmp_path: Path
) -> None:
    root = f"{tracked.experiment_id}/{tracked.folder_run}/artifacts/model"
    increments: list[int] = []

    run_listing = client.list_run_artifacts(tracked.folder_run, "model")
    proxied = client.list_artifacts(root)
    size = client.download_file(f"{root}/data/features.json", tmp_path / "f.json", increments.append)

    assert {(e.path, e.is_dir) for e in run_listing} == {
        ("model/MLmodel", False), ("model/model.pkl", False), ("model/data", True)
    }
    assert {(e.path, e.is_dir, e.file_size) for e in proxied if not e.is_dir} == {
        ("MLmodel", False, len(MLMODEL)), ("model.pkl", False, len(FOLDER["model.pkl"]))
    }
    assert (tmp_path / "f.json").read_bytes() == FOLDER["data/features.json"]
    assert size == sum(increments) == len(FOLDER["data/features.json"])
    assert {e.path for e in client.list_run_artifacts(tracked.folder_run)} == {"model", "notes"}


def test_the_client_reports_missing_runs_models_and_artifacts_as_not_found(
    client: TrackingClient, tracked: Tracked, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError, match=f"run '{MISSING_RUN}' does not exist"):
        client.get_run(MISSING_RUN)
    with pytest.raises(NotFoundError, match=f"logged model '{MISSING_MODEL}' does not exist"):
        client.get_logged_model(MISSING_MODEL)
    with pytest.raises(NotFoundError, match="does not exist"):
        client.download_file(f"{tracked.experiment_id}/absent.bin", tmp_path / "absent.bin")
    assert not (tmp_path / "absent.bin").exists()


def test_the_client_reports_a_closed_port_as_unavailable() -> None:
    down = closed_port_url()
    with TrackingClient(down, timeout=5) as tracking, pytest.raises(UnavailableError, match="ConnectError"):
        tracking.get_run(MISSING_RUN)


class _Canned(BaseHTTPRequestHandler):
    """Answers every request with the server's ``answer`` (status, content type, body)."""

    def do_GET(self) -> None:
        self._reply()

    def do_POST(self) -> None:
        self._reply()

    def _reply(self) -> None:
        status, content_type, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[ThreadingHTTPServer]:
    """A plain HTTP server on 127.0.0.1 standing for a tracking server that misbehaves."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        ((401, "application/json", b'{"error_code": "UNAUTHENTICATED"}'), UnavailableError,
         "refused Calabi's credentials (HTTP 401); check CALABI_MLFLOW_TRACKING_TOKEN"),
        ((403, "application/json", b'{"error_code": "PERMISSION_DENIED"}'), UnavailableError,
         "refused Calabi's credentials (HTTP 403)"),
        ((500, "application/json", b'{"error_code": "INTERNAL_ERROR", "message": "db locked"}'), UnavailableError,
         "is unavailable: HTTP 500 from /api/2.0/mlflow/runs/get: db locked"),
        ((404, "text/html", b"<h1>Not Found</h1>"), UnavailableError, "is CALABI_MLFLOW_TRACKING_URL an MLflow"),
        ((200, "text/html", b"<html></html>"), UnavailableError, "did not answer with JSON"),
        ((200, "application/json", b'{"run": {"info": {}}}'), UnavailableError, "unexpected answer to runs/get"),
        ((400, "application/json", b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad id"}'),
         InvalidParameterError, "refused the request for run 'r1': bad id"),
    ],
    ids=["401", "403", "500", "404-html", "not-json", "bad-shape", "400"],
)
def test_the_client_maps_a_misbehaving_server_to_domain_errors(
    canned: ThreadingHTTPServer, answer: tuple[int, str, bytes], error: type[RegistryError], message: str
) -> None:
    canned.answer = answer  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{canned.server_address[1]}"

    with TrackingClient(url, token="secret", timeout=5) as tracking, pytest.raises(error) as info:
        tracking.get_run("r1")
    assert type(info.value) is error
    assert message in info.value.message
