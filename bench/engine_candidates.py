"""Candidates that pass every check of the default policy, and their registration (not timed).

Each candidate is its own small scikit-learn pipeline (StandardScaler + LogisticRegression)
trained on its own synthetic churn data, so every artifact has its own digest (no evidence is
shared between candidates), saved in the MLflow format with its signature and ``metrics.json``.
Registered as a new model's version 1 with the ``ci.tests_passed`` attestation, a description
naming the training-data range and the key metrics, the model's serving schema set to the
candidate's signature, and moved to Staging: all five checks (tests, metrics against the
first-Production thresholds, signature, leakage, description) run and pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Candidate", "register", "train_candidates"]

FEATURES = ("tenure_months", "monthly_charges", "contract_months", "support_calls")
"""Equal standardized effects: each feature holds about a quarter of |coef_| (the leakage limit is half)."""
ROWS = 400


@dataclass(frozen=True)
class Candidate:
    """A saved model directory and the holdout metrics written next to it."""

    path: Path
    metrics: dict[str, float]

    def description(self) -> str:
        """A description with the training-data date range and the key metrics (the description check)."""
        return (
            "Churn classifier (StandardScaler + LogisticRegression) trained on customer snapshots from "
            f"2024-01-01 to 2025-06-30. Holdout auc: {self.metrics['auc']}, log_loss {self.metrics['log_loss']}."
        )


def _train(seed: int, target: Path) -> Candidate:
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    spread = {"tenure_months": (30, 10), "monthly_charges": (70, 20), "contract_months": (12, 8),
              "support_calls": (2, 1.5)}
    frame = pd.DataFrame({name: rng.normal(mean, sd, ROWS * 2) for name, (mean, sd) in spread.items()})
    z = (frame - frame.mean()) / frame.std()
    logit = 1.2 * (-z.tenure_months + z.monthly_charges - z.contract_months + z.support_calls)
    labels = (rng.random(ROWS * 2) < 1 / (1 + np.exp(-logit))).astype(int)
    train, test = slice(0, ROWS), slice(ROWS, None)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(frame[train], labels[train])
    scores = model.predict_proba(frame[test])[:, 1]
    metrics = {"auc": round(float(roc_auc_score(labels[test], scores)), 4),
               "log_loss": round(float(log_loss(labels[test], scores)), 4)}
    mlflow.sklearn.save_model(
        model, str(target), signature=infer_signature(frame[train], model.predict(frame[train])),
        pip_requirements=["scikit-learn"],  # inferring requirements would spawn a slow subprocess
    )
    (target / "metrics.json").write_text(json.dumps(metrics))
    return Candidate(target, metrics)


def train_candidates(root: Path, count: int) -> list[Candidate]:
    """``count`` distinct candidates saved below ``root`` (a directory the server may read sources from)."""
    root.mkdir(parents=True, exist_ok=True)
    return [_train(seed, root / f"candidate-{seed}") for seed in range(count)]


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def register(engineer: httpx.Client, admin: httpx.Client, model: str, candidate: Candidate) -> None:
    """Register ``candidate`` as ``model`` version 1, ready for promotion to Production (see the module doc)."""
    _ok(engineer.post("/api/v1/models", json={"name": model}))
    created = _ok(engineer.post(f"/api/v1/models/{model}/versions", json={
        "source": str(candidate.path), "description": candidate.description(), "tags": {"ci.tests_passed": "true"},
    }))
    _ok(admin.put(f"/api/v1/models/{model}/serving-schema", json={"signature": created["signature"]}))
    _ok(engineer.post(f"/api/v1/models/{model}/versions/1/stage", json={"stage": "Staging"}))
