"""The demo: an embedded Calabi server driven by the real mlflow client, as in the seed.

Starts ``calabi serve`` (SQLite + local artifacts in ./calabi-data), trains a small
scikit-learn churn model on synthetic data, registers two versions, stages and promotes
them, sets ``champion``, tags and descriptions, loads ``models:/churn-predictor@champion``
and scores a batch. Then it keeps serving until Ctrl-C (or exits when ``CI`` is set).
"""

from __future__ import annotations

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

import httpx
import numpy as np
import pandas as pd

MODEL = "churn-predictor"
ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "calabi-data"


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


def train_and_save(kind: str, target: Path) -> object:
    """Train a churn classifier and save it in the MLflow model format."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = synthetic_customers(2000, seed=7)
    estimator = LogisticRegression(max_iter=500) if kind == "logistic" else GradientBoostingClassifier()
    pipeline = make_pipeline(StandardScaler(), estimator).fit(features, labels)
    mlflow.sklearn.save_model(
        pipeline,
        str(target),
        signature=infer_signature(features, pipeline.predict(features)),
        skops_trusted_types=["sklearn.tree._tree.Tree"],  # our own freshly trained trees
    )
    return pipeline


def free_port() -> int:
    """A free port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, token: str, sources: Path) -> subprocess.Popen[bytes]:
    """Run ``calabi serve`` on 127.0.0.1 and wait (bounded) until it answers."""
    env = {**os.environ, "CALABI_ADMIN_TOKEN": token, "CALABI_LOCAL_SOURCE_ROOTS": str(sources)}
    calabi = Path(sys.executable).parent / "calabi"
    process = subprocess.Popen(
        [str(calabi), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(DATA_DIR)], env=env
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("calabi serve exited early")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("calabi serve did not start within 60 s")


def run_story(url: str, sources: Path) -> None:
    """The seed's registry story through the stock mlflow client."""
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(url)
    client = MlflowClient()
    client.create_registered_model(MODEL, description="Predicts which customers churn next month.")
    say(f"created registered model {MODEL}")
    for number, kind in ((1, "logistic"), (2, "boosting")):
        path = sources / f"model-{kind}"
        train_and_save(kind, path)
        mv = client.create_model_version(MODEL, source=str(path), run_id=None, await_creation_for=0)
        say(f"registered version {mv.version} ({kind}) from {path.name}")
        assert mv.version == str(number)
    client.transition_model_version_stage(MODEL, "1", "Production")
    say("version 1 -> Production (admin break-glass; the audit log records it)")
    client.transition_model_version_stage(MODEL, "2", "Staging")
    say("version 2 -> Staging")
    client.update_model_version(
        MODEL, "2",
        description="Gradient boosting on tenure, charges and support calls. Trained on 2,000 synthetic "
        "customers. Validated by the data science team.",
    )
    client.transition_model_version_stage(MODEL, "2", "Production", archive_existing_versions=True)
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name='{MODEL}'")}
    say(f"version 2 -> Production; stages now {stages}")
    client.set_registered_model_alias(MODEL, "champion", "2")
    client.set_registered_model_alias(MODEL, "challenger", "1")
    client.set_registered_model_tag(MODEL, "owner", "alice@example.com")
    client.set_model_version_tag(MODEL, "2", "validated_by", "bob@example.com")
    say("aliases champion -> 2, challenger -> 1; tags set")
    model = mlflow.sklearn.load_model(f"models:/{MODEL}@champion")
    batch, _ = synthetic_customers(5, seed=11)
    scores = model.predict_proba(batch)[:, 1]
    say("loaded models:/churn-predictor@champion and scored a batch:")
    print(batch.assign(churn_probability=scores.round(3)).to_string(index=False), flush=True)


def show_audit(url: str, token: str) -> None:
    """Print the model's audit trail and verify the hash chain."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        events = http.get("/api/v1/audit", params={"model": MODEL, "limit": 100}).json()
        verdict = http.get("/api/v1/audit/verify").json()
    say(f"audit trail of {MODEL} ({len(events)} events):")
    for event in events:
        after = "" if event["after"] is None else str(event["after"])[:70]
        print(f"  #{event['seq']:<3} {event['actor']:<6} {event['action']:<26} {event['subject']:<20} {after}",
              flush=True)
    say(f"audit chain intact: {verdict['ok']} ({verdict['events_checked']} events checked)")


def main() -> None:
    """Start the server, run the story, keep serving unless CI is set."""
    warnings.filterwarnings("ignore")
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    token = os.environ.get("CALABI_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    port = int(os.environ.get("CALABI_DEMO_PORT", free_port()))
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="calabi-demo-") as tmp:
        sources = Path(tmp)
        process = start_server(port, token, sources)
        try:
            os.environ["MLFLOW_TRACKING_TOKEN"] = token
            run_story(url, sources)
            show_audit(url, token)
            say(f"Calabi Registry is serving at {url} (admin token: {token})")
            if not os.environ.get("CI"):
                say("Ctrl-C to stop")
                process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            process.terminate()
            process.wait(timeout=20)


if __name__ == "__main__":
    main()
