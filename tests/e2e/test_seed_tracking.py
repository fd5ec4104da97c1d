"""The seed's whole story through the tracking gateway, with only the tracking URI set.

The real ``mlflow`` client (full package, sklearn flavor) logs runs into the real MLflow
tracking server behind Calabi's ``/mlflow``, registers with ``registered_model_name`` and
from ``runs:/``, transitions, describes, aliases, loads by stage, number and alias, scores
a batch and deletes. Runs on SQLite with local artifacts, with an S3 artifact root (moto)
and on PostgreSQL; on S3 the client has no AWS credentials at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest

from tests.e2e.helpers import random_name, use_mlflow
from tests.fixtures.servers import LiveServer, start_server, stop_server
from tests.fixtures.tracking import TrackingServer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION", "AWS_PROFILE")


@pytest.fixture(params=["sqlite", "s3", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path, tracking_server: TrackingServer) -> Iterator[LiveServer]:
    """A Calabi server in front of the session's tracking server, on one storage backend."""
    env = {"CALABI_MLFLOW_TRACKING_URL": tracking_server.url}
    database_url = None
    if request.param == "s3":
        endpoint: str = request.getfixturevalue("s3_endpoint")
        bucket: str = request.getfixturevalue("s3_bucket")
        env |= {"CALABI_ARTIFACT_ROOT": f"s3://{bucket}/registry", "CALABI_S3_ENDPOINT_URL": endpoint}
    elif request.param == "postgres":
        database_url = request.getfixturevalue("postgres_url")
    server = start_server(tmp_path, database_url=database_url, extra_env=env)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def seed_client(monkeypatch: pytest.MonkeyPatch, backend: LiveServer) -> str:
    """The process-wide mlflow client pointed at ``<calabi>/mlflow`` only; returns that URI.

    AWS variables are removed from the client's side: loading must not need S3 access.
    """
    tracking_uri = f"{backend.url}/mlflow"
    use_mlflow(monkeypatch, tracking_uri, backend.admin_token)
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    return tracking_uri


def churn_data(seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Synthetic churn features and labels."""
    rng = np.random.default_rng(seed)
    features = pd.DataFrame({
        "tenure_months": rng.integers(1, 72, 200).astype(float),
        "monthly_charges": rng.normal(70, 20, 200),
        "support_calls": rng.poisson(2, 200).astype(float),
    })
    score = -0.05 * features.tenure_months + 0.03 * features.monthly_charges + 0.4 * features.support_calls
    labels = (score + rng.normal(0, 1, 200) > score.median()).astype(int)
    return features, labels


def train_pipeline(seed: int) -> tuple[Any, pd.DataFrame]:
    """The seed's ``pipeline``: scaling plus a linear classifier, trained on synthetic data.

    (Tree models would need ``skops_trusted_types`` at logging time to load under MLflow 3's
    default skops serialization; the seed's snippet passes none.)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = churn_data(seed)
    pipeline = Pipeline([
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(C=0.5 + seed, max_iter=500)),
    ]).fit(features, labels)
    return pipeline, features


def log_run(
    experiment: str, run_name: str, seed: int, model_name: str, *, exact: bool = False
) -> tuple[str, Any, pd.DataFrame]:
    """The seed's "From a Run" snippet; returns the run id, the in-memory model and its features.

    Only with ``exact`` is the snippet's ``log_model`` call left exactly as written (MLflow then
    infers pip requirements in a subprocess, about 10 s); otherwise the requirements are given.
    """
    import mlflow
    import mlflow.sklearn

    mlflow.set_experiment(experiment)
    pipeline, features = train_pipeline(seed)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({"C": 0.5 + seed, "max_iter": 500})
        mlflow.log_metric("val_auc", 0.80 + seed / 100)
        if exact:
            mlflow.sklearn.log_model(
                sk_model=pipeline,
                artifact_path="model",
                registered_model_name=model_name,  # Register immediately
            )
        else:
            mlflow.sklearn.log_model(
                sk_model=pipeline, artifact_path="model", registered_model_name=model_name,
                pip_requirements=["scikit-learn"],
            )
    return run.info.run_id, pipeline, features


def registry_copy_exists(server: LiveServer, location: str) -> bool:
    """Whether anything is left at a version's storage location (local directory or S3 prefix)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://"):].partition("/")
        s3 = boto3.client("s3", endpoint_url=server.env["CALABI_S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"])
        return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/").get("KeyCount"))
    assert location.startswith("file://"), location
    return Path(location[len("file://"):]).exists()


def registry_view(server: LiveServer, name: str, version: str) -> dict[str, Any]:
    """Calabi's own view of a version (storage location, digest, evidence)."""
    with server.client() as http:
        response = http.get(f"/api/v1/models/{name}/versions/{version}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def test_the_seed_story_runs_unchanged_through_the_gateway(
    request: pytest.FixtureRequest, backend: LiveServer, seed_client: str, tmp_path: Path
) -> None:
    import mlflow
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    name = random_name("churn-predictor")
    experiment = random_name("churn-prediction-v2")

    # From a Run: the model is created automatically, then a version is appended.
    exact = request.node.callspec.params["backend"] == "sqlite"
    run1, _model1, _ = log_run(experiment, "gb_best_v1", 1, name, exact=exact)
    run2, model2, features = log_run(experiment, "gb_best_v2", 2, name)
    client = MlflowClient(tracking_uri=seed_client)
    versions = {v.version: v for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == ["1", "2"]
    assert (versions["1"].run_id, versions["2"].run_id) == (run1, run2)  # filled from the logged model
    assert all(v.status == "READY" for v in versions.values())

    # The version snapshots the run's evidence and the MLmodel's flavors and signature.
    view = registry_view(backend, name, "2")
    assert view["evidence"]["run_metrics"] == {"val_auc": pytest.approx(0.82)}
    assert view["evidence"]["run_params"] == {"C": "2.5", "max_iter": "500"}
    assert view["evidence"]["metrics"]["val_auc"] == pytest.approx(0.82)
    assert "sklearn" in view["evidence"]["flavors"]
    assert view["model_id"].startswith("m-")

    # From an Existing Run (after the fact).
    result = mlflow.register_model(model_uri=f"runs:/{run2}/model", name=name)
    assert result.version == "3"
    assert client.get_model_version(name, "3").run_id == run2

    # Transitions: Production archives the previous Production version.
    client.transition_model_version_stage(name=name, version="1", stage="Production")
    client.transition_model_version_stage(name=name, version="3", stage="Staging", archive_existing_versions=False)
    client.transition_model_version_stage(name=name, version="3", stage="Production", archive_existing_versions=True)
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    assert stages == {"1": "Archived", "2": "None", "3": "Production"}

    # Descriptions, aliases, tags.
    client.update_model_version(name=name, version="3", description="GB pipeline. Val AUC 0.82 vs. 0.81 for v1.")
    client.set_registered_model_alias(name=name, alias="champion", version="3")
    client.set_registered_model_alias(name=name, alias="challenger", version="2")
    client.set_model_version_tag(name, "3", "validated_by", "data-science")
    assert client.get_model_version_by_alias(name, "champion").version == "3"

    # Loading by stage, number and alias gives the same predictions as the in-memory model.
    download_uri = client.get_model_version_download_uri(name, "3")
    assert download_uri.startswith("mlflow-artifacts:/calabi-registry/"), download_uri
    expected = model2.predict_proba(features)[:, 1]
    for uri in (f"models:/{name}/Production", f"models:/{name}/3", f"models:/{name}@champion"):
        loaded = mlflow.sklearn.load_model(uri)
        np.testing.assert_allclose(loaded.predict_proba(features)[:, 1], expected)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/latest")
    assert len(pyfunc.predict(features)) == len(features)

    # Batch scoring with the example DAG's function.
    from examples.airflow.churn_batch_scoring import score_customers

    features.to_parquet(tmp_path / "latest.parquet", index=False)
    scored = pd.read_parquet(score_customers(tmp_path / "latest.parquet", tmp_path / "scores.parquet",
                                             model_uri=f"models:/{name}/Production"))
    np.testing.assert_allclose(scored["churn_probability"].to_numpy(), expected)

    # Deleting a version removes the registry's copy and leaves the run's artifacts alone.
    logged = mlflow.get_logged_model(registry_view(backend, name, "2")["model_id"])  # not on MLflow's REST entity
    tracked_files = mlflow.artifacts.list_artifacts(artifact_uri=logged.artifact_location)
    assert tracked_files
    location = registry_view(backend, name, "2")["storage_location"]
    assert registry_copy_exists(backend, location)
    client.delete_model_version(name, "2")
    assert not registry_copy_exists(backend, location)
    assert mlflow.artifacts.list_artifacts(artifact_uri=logged.artifact_location) == tracked_files

    # Deleting the model removes every remaining copy.
    locations = [registry_view(backend, name, v)["storage_location"] for v in ("1", "3")]
    client.delete_registered_model(name)
    assert not any(registry_copy_exists(backend, loc) for loc in locations)
    assert mlflow.artifacts.list_artifacts(artifact_uri=logged.artifact_location) == tracked_files
