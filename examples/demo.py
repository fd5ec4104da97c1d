"""The demo: an embedded Calabi server driven by the real mlflow client and the promotion API.

Starts ``calabi serve`` (SQLite, local artifacts and the Temporal dev server in
./calabi-data), trains small scikit-learn churn models on synthetic data, registers and
stages them through the mlflow client, and then walks the governed promotion: a request
whose checks fail, a fixed re-check, sign-off by a data-science lead, the new Production
version with ``champion``, description and tags, and a rollback. It loads
``models:/churn-predictor@champion`` and scores a batch, prints the audit trail, and keeps
serving until Ctrl-C (or exits when ``CI`` is set).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

MODEL = "churn-predictor"
ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "calabi-data"
POLL_TIMEOUT_S = 120
TRAINING_RANGE = "Trained on customers from 2024-01-01 to 2025-06-30"


def say(message: str) -> None:
    """Print one step of the story."""
    print(f"==> {message}", flush=True)


def synthetic_customers(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers with tenure, monthly charges and support calls; churn depends on all three."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure_months": rng.integers(1, 72, rows).astype(float),
            "monthly_charges": rng.normal(70, 20, rows).round(2),
            "support_calls": rng.poisson(2, rows).astype(float),
        }
    )
    logit = -0.05 * frame.tenure_months + 0.03 * frame.monthly_charges + 0.6 * frame.support_calls - 2
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame, churned


def train(kind: str) -> tuple[Any, dict[str, float], pd.DataFrame]:
    """Train a churn classifier on synthetic customers; the model, its test metrics and its features."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = synthetic_customers(3000, seed=7)
    train_rows, test_rows = slice(0, 2000), slice(2000, None)
    if kind == "baseline":
        model: Any = GradientBoostingClassifier(n_estimators=5, max_depth=1, random_state=1)
    elif kind == "boosting":
        model = GradientBoostingClassifier(n_estimators=60, max_depth=2, random_state=1)
    elif kind == "boosting-deeper":
        model = GradientBoostingClassifier(n_estimators=80, max_depth=3, random_state=2)
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(features[train_rows], labels[train_rows])
    scores = model.predict_proba(features[test_rows])[:, 1]
    metrics = {"auc": round(float(roc_auc_score(labels[test_rows], scores)), 4),
               "log_loss": round(float(log_loss(labels[test_rows], scores)), 4)}
    return model, metrics, features


def train_and_save(kind: str, target: Path) -> dict[str, float]:
    """Train a churn classifier, save it in the MLflow format with its metrics and importances."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model, metrics, features = train(kind)
    mlflow.sklearn.save_model(
        model, str(target), signature=infer_signature(features, model.predict(features)),
        skops_trusted_types=["sklearn.tree._tree.Tree"],  # our own freshly trained trees
        pip_requirements=["scikit-learn"],
    )
    estimator = model[-1] if hasattr(model, "steps") else model
    raw = getattr(estimator, "feature_importances_", None)
    importances = raw if raw is not None else np.abs(estimator.coef_[0])
    (target / "metrics.json").write_text(json.dumps(metrics))
    (target / "feature_importances.json").write_text(
        json.dumps({name: float(v) for name, v in zip(features.columns, importances, strict=True)})
    )
    return metrics


def log_run(kind: str, run_name: str, *, register: bool) -> str:
    """The seed's "From a Run" snippet: train, log params and metrics, log the model; the run id."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    with mlflow.start_run(run_name=run_name) as run:
        model, metrics, features = train(kind)
        mlflow.log_params({"kind": kind, "training_range": TRAINING_RANGE})
        mlflow.log_metrics(metrics)
        mlflow.sklearn.log_model(
            sk_model=model,
            artifact_path="model",
            registered_model_name=MODEL if register else None,  # Register immediately
            signature=infer_signature(features, model.predict(features)),
            skops_trusted_types=["sklearn.tree._tree.Tree"],  # our own freshly trained trees
            pip_requirements=["scikit-learn"],
        )
    say(f"run {run_name} ({kind}, auc {metrics['auc']}, log loss {metrics['log_loss']}) logged"
        + (f" and registered as {MODEL}" if register else ""))
    return str(run.info.run_id)


def free_port() -> int:
    """A free port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, token: str, sources: Path) -> subprocess.Popen[bytes]:
    """Run ``calabi serve`` (with the embedded Temporal) and wait, bounded, until it answers."""
    env = {**os.environ, "CALABI_ADMIN_TOKEN": token, "CALABI_LOCAL_SOURCE_ROOTS": str(sources)}
    calabi = Path(sys.executable).parent / "calabi"
    process = subprocess.Popen(
        [str(calabi), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(DATA_DIR),
         "--temporal-port", str(free_port()), "--tracking-port", str(free_port())], env=env,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("calabi serve exited early")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("calabi serve did not start within 90 s")


class Api:
    """A tiny /api/v1 client for one user."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; stop the demo with the server's message on an error."""
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise SystemExit(f"{method} {path} -> {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def wait_for(self, promotion_id: str, *statuses: str) -> dict[str, Any]:
        """Poll a promotion until it reaches one of ``statuses`` (bounded)."""
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while time.monotonic() < deadline:
            detail = self.call("GET", f"/api/v1/promotions/{promotion_id}")
            if detail["promotion"]["status"] in statuses:
                return dict(detail)
            time.sleep(0.5)
        raise SystemExit(f"promotion {promotion_id} did not reach {statuses} in {POLL_TIMEOUT_S} s")


def print_checklist(detail: dict[str, Any]) -> None:
    """Each check with its verdict, reasons and numbers."""
    checklist = detail["promotion"]["checklist"] or {}
    for result in checklist.get("results", []):
        mark = "pass" if result["passed"] else "FAIL"
        numbers = ", ".join(
            f"{n['label']}: {n['candidate']} vs {n['production']} (threshold {n['threshold']}, delta {n['delta']})"
            for n in result.get("numbers", [])
        )
        print(f"     [{mark}] {result['name']:<12} {'; '.join(result['reasons'])[:110]} {numbers}", flush=True)


def registry_story(url: str, data_dir: Path) -> None:
    """The seed's snippets through the stock mlflow client, with ``<calabi>/mlflow`` as the only setting."""
    import mlflow
    from mlflow.tracking import MlflowClient

    tracking_uri = f"{url}/mlflow"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("churn-prediction-v2")
    say(f"tracking URI {tracking_uri}; experiment churn-prediction-v2 (runs live in the tracking server behind it)")
    log_run("baseline", "gb_baseline", register=True)
    log_run("boosting", "gb_best_v1", register=True)
    run_id = log_run("boosting-deeper", "gb_best_v2", register=False)
    result = mlflow.register_model(model_uri=f"runs:/{run_id}/model", name=MODEL)
    client = MlflowClient(tracking_uri=tracking_uri)
    client.update_registered_model(MODEL, description="Predicts which customers churn next month.")
    numbers = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    say(f"registered version {result.version} from runs:/{run_id}/model; versions {numbers}")
    for version in ("1", "2", "3"):
        client.set_model_version_tag(MODEL, version, "ci.tests_passed", "true")
    evidence = Api(url, os.environ["MLFLOW_TRACKING_TOKEN"]).call("GET", f"/api/v1/models/{MODEL}/versions/3")
    say(f"version 3 snapshots its run: run_id {evidence['run_id']}, metrics {evidence['evidence']['run_metrics']}")

    client.transition_model_version_stage(MODEL, "1", "Production")
    say("version 1 -> Production (admin break-glass; the audit log records it)")
    client.transition_model_version_stage(name=MODEL, version="3", stage="Staging", archive_existing_versions=False)
    client.update_model_version(
        name=MODEL, version="3",
        description=f"Deeper gradient boosting. {TRAINING_RANGE}. Validated by the data science team.",
    )
    client.transition_model_version_stage(name=MODEL, version="3", stage="Production", archive_existing_versions=True)
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name='{MODEL}'")}
    say(f"version 3 -> Staging -> Production; the previous Production was archived: {stages}")
    client.set_registered_model_alias(name=MODEL, alias="champion", version="3")
    client.set_registered_model_alias(name=MODEL, alias="challenger", version="2")
    client.set_registered_model_tag(MODEL, "owner", "alice@example.com")
    say("aliases champion -> 3, challenger -> 2; owner tag set")

    import mlflow.sklearn

    batch, _ = synthetic_customers(200, seed=11)
    for uri in (f"models:/{MODEL}/Production", f"models:/{MODEL}/3", f"models:/{MODEL}@champion"):
        scores = mlflow.sklearn.load_model(uri).predict_proba(batch)[:, 1]
        say(f"loaded {uri} through Calabi (download URI "
            f"{client.get_model_version_download_uri(MODEL, '3')}); mean churn probability {scores.mean():.3f}")
    batch_score(data_dir)

    doomed = Api(url, os.environ["MLFLOW_TRACKING_TOKEN"]).call("GET", f"/api/v1/models/{MODEL}/versions/1")
    copy = Path(doomed["storage_location"].removeprefix("file://"))
    logged = mlflow.get_logged_model(doomed["model_id"])
    client.delete_model_version(MODEL, "1")
    kept = mlflow.artifacts.list_artifacts(artifact_uri=logged.artifact_location)
    say(f"deleted version 1: registry copy {copy} exists: {copy.exists()}; the run's logged model still has "
        f"{len(kept)} artifacts in the tracking server")


def batch_score(data_dir: Path) -> None:
    """The example Airflow task's function, run once here without Airflow."""
    from examples.airflow.churn_batch_scoring import score_customers

    features, _ = synthetic_customers(1000, seed=12)
    features_path = data_dir / "scoring" / "latest.parquet"
    features_path.parent.mkdir(parents=True, exist_ok=True)
    features.to_parquet(features_path, index=False)
    scores_path = score_customers(features_path, data_dir / "scores" / "churn_scores_demo.parquet")
    scored = pd.read_parquet(scores_path)
    say(f"batch scoring (examples/airflow/churn_batch_scoring.py) wrote {len(scored)} scores to {scores_path}; "
        f"{(scored.churn_probability > 0.5).sum()} customers likely to churn")


def governed_story(url: str, admin: Api, sources: Path) -> None:
    """A promotion that fails its checks, is fixed, signed off, applied, then rolled back."""
    from mlflow.tracking import MlflowClient

    eli = Api(url, admin.call("POST", "/api/v1/users", json={"name": "eli", "roles": ["engineer"]})["token"])
    dana = Api(url, admin.call("POST", "/api/v1/users", json={"name": "dana", "roles": ["approver"]})["token"])
    say("users: eli (engineer, requester), dana (approver, data-science lead)")
    path = sources / "model-logistic"
    metrics = train_and_save("logistic", path)
    client = MlflowClient()
    mv = client.create_model_version(MODEL, source=str(path), await_creation_for=0)
    client.set_model_version_tag(MODEL, mv.version, "ci.tests_passed", "true")
    eli.call("POST", f"/api/v1/models/{MODEL}/versions/{mv.version}/stage", json={"stage": "Staging"})
    eli.call("PATCH", f"/api/v1/models/{MODEL}/versions/{mv.version}",
             json={"description": "Logistic regression on tenure, charges and support calls."})
    say(f"version {mv.version} (logistic, auc {metrics['auc']}) registered and moved to Staging by eli")
    promotion = eli.call("POST", "/api/v1/promotions", json={
        "model": MODEL, "version": int(mv.version), "target_stage": "Production",
        "justification": "The logistic model beats boosting on AUC and log loss.",
    })
    say(f"eli requests promotion {promotion['id']} of v{mv.version} to Production")
    detail = eli.wait_for(promotion["id"], "checks_failed", "awaiting_sign_off")
    say(f"checks: {detail['promotion']['status']}")
    print_checklist(detail)
    eli.call("PATCH", f"/api/v1/models/{MODEL}/versions/{mv.version}", json={
        "description": f"Logistic regression on tenure, charges and support calls. {TRAINING_RANGE}. "
                       f"Val AUC {metrics['auc']}, log loss {metrics['log_loss']}.",
    })
    eli.call("POST", f"/api/v1/promotions/{promotion['id']}/recheck")
    detail = eli.wait_for(promotion["id"], "awaiting_sign_off", "checks_failed")
    say(f"description fixed, re-check: {detail['promotion']['status']}")
    print_checklist(detail)
    dana.call("POST", f"/api/v1/promotions/{promotion['id']}/sign-off", json={"comment": "Reviewed the evidence."})
    detail = dana.wait_for(promotion["id"], "promoted", "failed")
    say(f"dana signs off -> {detail['promotion']['status']}")
    champion = client.get_model_version_by_alias(MODEL, "champion")
    say(f"champion -> v{champion.version} ({champion.current_stage}); tags {champion.tags}")
    print(f"     description: {champion.description}", flush=True)
    load_and_score()
    rollback = eli.call("POST", f"/api/v1/models/{MODEL}/rollback",
                        json={"justification": "Drift alarm on the new model; back to the previous one."})
    say(f"eli requests rollback {rollback['id']} to v{rollback['version']}")
    eli.wait_for(rollback["id"], "awaiting_sign_off")
    dana.call("POST", f"/api/v1/promotions/{rollback['id']}/sign-off", json={"comment": "Roll back."})
    dana.wait_for(rollback["id"], "promoted")
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name='{MODEL}'")}
    say(f"rolled back; stages now {stages}")


def load_and_score() -> None:
    """Load the champion like a batch-scoring job does and score a few customers."""
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(f"models:/{MODEL}@champion")
    batch, _ = synthetic_customers(5, seed=11)
    scores = model.predict_proba(batch)[:, 1]
    say("loaded models:/churn-predictor@champion and scored a batch:")
    print(batch.assign(churn_probability=scores.round(3)).to_string(index=False), flush=True)


def show_audit(admin: Api) -> None:
    """Print the model's audit trail and verify the hash chain."""
    events = admin.call("GET", "/api/v1/audit", params={"model": MODEL, "limit": 200})
    verdict = admin.call("GET", "/api/v1/audit/verify")
    say(f"audit trail of {MODEL} ({len(events)} events):")
    for event in events:
        after = "" if event["after"] is None else json.dumps(event["after"])[:70]
        print(f"  #{event['seq']:<3} {event['actor'][:28]:<28} {event['action']:<24} {event['subject']:<20} {after}",
              flush=True)
    say(f"audit chain intact: {verdict['ok']} ({verdict['events_checked']} events checked)")


def main() -> None:
    """Start the server, run both stories, keep serving unless CI is set."""
    warnings.filterwarnings("ignore")
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    token = os.environ.get("CALABI_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    port = int(os.environ.get("DEMO_PORT", free_port()))
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="calabi-demo-") as tmp:
        sources = Path(tmp)
        process = start_server(port, token, sources)
        try:
            os.environ["MLFLOW_TRACKING_TOKEN"] = token
            admin = Api(url, token)
            registry_story(url, DATA_DIR)
            governed_story(url, admin, sources)
            show_audit(admin)
            say(f"Calabi Registry is serving at {url} (admin token: {token})")
            if not os.environ.get("CI"):
                say("Ctrl-C to stop")
                process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
