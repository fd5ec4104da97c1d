"""Shared helpers for the MLflow end-to-end tests: names, raw MLflow calls, the real client, models."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.servers import LiveServer

API = "/api/2.0/mlflow"


def random_name(prefix: str = "m") -> str:
    """A model (or user) name no other test uses."""
    return f"{prefix}-{secrets.token_hex(6)}"


def call(http: httpx.Client, method: str, path: str, body: Any = None, **params: Any) -> httpx.Response:
    """One MLflow registry request: the fields (``body`` or keywords) as a JSON body, or for GET a query string."""
    fields = body if body is not None else params
    if method == "GET":
        return http.request(method, API + path, params=fields or None)
    return http.request(method, API + path, json=fields)


def ok(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 200 reply (any other status fails with the server's message)."""
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    body = response.json()
    assert isinstance(body, dict), body
    return body


def assert_error(response: httpx.Response, status: int, error_code: str) -> dict[str, Any]:
    """An MLflow-shaped error: the HTTP status, a JSON object with ``error_code`` and a ``message``."""
    assert response.status_code == status, (
        f"expected {status} {error_code}, got {response.status_code}: {response.text}"
    )
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("error_code") == error_code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def create_model(http: httpx.Client, name: str | None = None, **fields: Any) -> str:
    """Create a registered model through raw HTTP; return its name."""
    name = name or random_name()
    ok(call(http, "POST", "/registered-models/create", {"name": name, **fields}))
    return name


def create_version(http: httpx.Client, server: LiveServer, name: str, **fields: Any) -> dict[str, Any]:
    """Register a fresh artifact as a new version through raw HTTP; return the version JSON."""
    body = {"name": name, "source": str(server.artifact()), **fields}
    version: dict[str, Any] = ok(call(http, "POST", "/model-versions/create", body))["model_version"]
    return version


def model_with_versions(http: httpx.Client, server: LiveServer, count: int, name: str | None = None) -> str:
    """A new model with ``count`` versions (1..count)."""
    name = create_model(http, name)
    for _ in range(count):
        create_version(http, server, name)
    return name


def stages(http: httpx.Client, name: str) -> dict[str, str]:
    """``{version: stage}`` of every live version of a model."""
    found = ok(call(http, "GET", "/model-versions/search", filter=f"name = '{name}'"))["model_versions"]
    return {v["version"]: v["current_stage"] for v in found}


def audit_events(server: LiveServer, name: str) -> list[dict[str, Any]]:
    """The audit trail of one model, oldest first."""
    with server.client() as http:
        response = http.get("/api/v1/audit", params={"model": name, "limit": 1000})
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()
    return events


def use_mlflow(
    monkeypatch: pytest.MonkeyPatch, tracking_uri: str, token: str | None, *, basic_user: str | None = None
) -> None:
    """Point the process-wide mlflow client at Calabi with ``token`` (undone by ``monkeypatch``).

    With ``basic_user`` the token is sent as the basic-auth password instead of a bearer token.
    Retries are off so error paths answer at once.
    """
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    for var in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    if basic_user is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", basic_user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", token or "")
    elif token is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tracking_uri)
    # mlflow.set_tracking_uri()/set_registry_uri() would leak into other tests; patch the globals instead.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", tracking_uri)


def mlflow_client(tracking_uri: str) -> Any:
    """The stock ``MlflowClient`` for Calabi at ``tracking_uri`` (call ``use_mlflow`` first)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def train_sklearn_model(target: Path, seed: int = 0) -> tuple[Any, Any]:
    """A small LogisticRegression on synthetic data, saved in the MLflow format at ``target``.

    Returns the in-memory model and a feature frame to predict on.
    """
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    features = pd.DataFrame({"tenure": rng.normal(30, 10, 80), "charges": rng.normal(70, 20, 80)})
    labels = ((features.tenure * -0.1 + features.charges * 0.05 + rng.normal(0, 1, 80)) > 0).astype(int)
    model = LogisticRegression(max_iter=200).fit(features, labels)
    # Explicit requirements: inferring them spawns a subprocess and takes ~10 s per model.
    mlflow.sklearn.save_model(model, str(target), pip_requirements=["scikit-learn"])
    return model, features
