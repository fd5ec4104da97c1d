"""The seed's daily churn batch scoring, as an Airflow DAG against Calabi.

Deploying it:

1. Copy this file into the Airflow DAGs folder (it needs nothing from Calabi itself).
2. On the workers: ``pip install mlflow-skinny scikit-learn pandas pyarrow`` (plus ``s3fs`` for
   ``s3://`` paths), in the versions the model was trained with.
3. Give the workers a read-only token (``calabi users add airflow-scoring --role viewer``) and set
   ``MLFLOW_TRACKING_URI=https://calabi.<domain>/mlflow`` and ``MLFLOW_TRACKING_TOKEN=<token>``.
   The model's files are streamed through Calabi, so the workers need no credentials for its
   artifact store.
4. Optionally set ``CHURN_FEATURES_PATH`` / ``CHURN_SCORES_PATH`` (Jinja templates, ``{{ ds }}`` is
   the run's logical date) to read and write elsewhere.

Each run loads whatever version is in Production when it starts; a governed promotion (or a
rollback) changes what the next run scores with, without touching this file.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import datetime
from pathlib import Path

__all__ = ["FEATURES_PATH", "MODEL_URI", "SCORES_PATH", "score_customers"]

MODEL_URI = "models:/churn-predictor/Production"
FEATURES_PATH = os.environ.get("CHURN_FEATURES_PATH", "s3://my-bucket/scoring/batch_{{ ds }}.parquet")
SCORES_PATH = os.environ.get("CHURN_SCORES_PATH", "s3://my-bucket/scores/churn_scores_{{ ds }}.parquet")


def score_customers(features_path: str | Path, output_path: str | Path, model_uri: str = MODEL_URI) -> str | Path:
    """Score a parquet file of customer features; write it back with a ``churn_probability`` column.

    The model comes from the registry through the tracking URI in the environment
    (``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN``). Returns ``output_path``.
    """
    import mlflow.sklearn
    import pandas as pd

    model = mlflow.sklearn.load_model(model_uri)
    features = pd.read_parquet(features_path)
    scores = model.predict_proba(features)[:, 1]
    features["churn_probability"] = scores
    if "://" not in str(output_path):
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    features.to_parquet(output_path, index=False)
    return output_path


if importlib.util.find_spec("airflow") is not None:  # the DAG only where Airflow runs it
    try:
        from airflow.sdk import dag, task  # Airflow 3
    except ImportError:
        from airflow.decorators import dag, task  # Airflow 2

    @dag(
        dag_id="churn_batch_scoring",
        schedule="@daily",
        start_date=datetime(2024, 1, 1),
        catchup=False,
    )
    def churn_batch_scoring() -> None:
        """Score yesterday's customers with the Production churn model."""

        @task()
        def score(features_path: str, output_path: str) -> str:
            # Airflow renders the task's arguments from the task context, so {{ ds }} is the logical date.
            return str(score_customers(features_path, output_path))

        score(FEATURES_PATH, SCORES_PATH)

    dag_instance = churn_batch_scoring()
