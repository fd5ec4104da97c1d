"""The Airflow batch-scoring example: the scoring function on a saved MLflow model, the module without Airflow."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.e2e.helpers import call, create_model, ok, random_name, use_mlflow
from tests.fixtures.servers import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def churn_features(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic customers with churn-like features."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "tenure_months": rng.integers(1, 72, rows).astype(float),
        "monthly_charges": rng.normal(70, 20, rows),
        "support_calls": rng.poisson(2, rows).astype(float),
    })


def train(target: Path) -> Any:
    """A small classifier saved in the MLflow format at ``target``; returns the in-memory model."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = churn_features(300, seed=1)
    risk = -0.05 * features.tenure_months + 0.03 * features.monthly_charges + 0.4 * features.support_calls
    labels = (risk + np.random.default_rng(2).normal(0, 1, len(features)) > risk.median()).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(features, labels)
    # Explicit requirements: inferring them spawns a subprocess and takes seconds.
    mlflow.sklearn.save_model(model, str(target), pip_requirements=["scikit-learn"])
    return model


def test_score_customers_adds_the_models_probabilities(tmp_path: Path) -> None:
    from examples.airflow.churn_batch_scoring import score_customers

    model = train(tmp_path / "churn-model")
    features = churn_features(50, seed=7)
    features_path, output_path = tmp_path / "features.parquet", tmp_path / "scores" / "2026-04-06.parquet"
    features.to_parquet(features_path, index=False)

    assert score_customers(features_path, output_path, model_uri=(tmp_path / "churn-model").as_uri()) == output_path

    scored = pd.read_parquet(output_path)
    assert list(scored.columns) == [*features.columns, "churn_probability"]
    pd.testing.assert_frame_equal(scored[features.columns], features)
    expected = model.predict_proba(features)[:, 1]
    np.testing.assert_allclose(scored["churn_probability"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert scored["churn_probability"].between(0, 1).all() and scored["churn_probability"].nunique() > 1


def test_score_customers_loads_the_production_version_from_calabi(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As deployed: only MLFLOW_TRACKING_URI (``…/mlflow``) and a viewer's MLFLOW_TRACKING_TOKEN are set."""
    from examples.airflow.churn_batch_scoring import score_customers

    source = live_server.source_root / f"churn-{random_name()}"
    model = train(source)
    with live_server.client() as http:
        name = create_model(http, random_name("churn"))
        ok(call(http, "POST", "/model-versions/create", {"name": name, "source": str(source)}))
        ok(call(http, "POST", "/model-versions/transition-stage",
                {"name": name, "version": "1", "stage": "Production", "archive_existing_versions": True}))
    use_mlflow(monkeypatch, f"{live_server.url}/mlflow", live_server.create_user(random_name("airflow"), "viewer"))
    features = churn_features(20, seed=9)
    features.to_parquet(tmp_path / "features.parquet", index=False)

    score_customers(tmp_path / "features.parquet", tmp_path / "scores.parquet", model_uri=f"models:/{name}/Production")

    scored = pd.read_parquet(tmp_path / "scores.parquet")
    np.testing.assert_allclose(scored["churn_probability"].to_numpy(), model.predict_proba(features)[:, 1],
                               rtol=0, atol=1e-12)


def test_module_imports_without_airflow() -> None:
    assert importlib.util.find_spec("airflow") is None, "this test checks the module where Airflow is absent"
    module = importlib.import_module("examples.airflow.churn_batch_scoring")
    assert callable(module.score_customers)
    assert module.MODEL_URI == "models:/churn-predictor/Production"
    assert "{{ ds }}" in module.SCORES_PATH and "{{ ds }}" in module.FEATURES_PATH
    assert not hasattr(module, "dag_instance")
    assert not hasattr(module, "churn_batch_scoring")
