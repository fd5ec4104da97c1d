"""Governed promotion end to end: ``calabi serve`` with the embedded Temporal dev server and worker.

Real tokens over HTTP, real sklearn models saved in the MLflow format, the default policy,
the real ``mlflow`` client to look at the outcome, and a local receiver at ``CALABI_WEBHOOK_URLS``
getting the signed notifications through the webhook dispatcher. One server for the module.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import RestException

from policies.webhooks import verify_calabi_signature
from tests.e2e.helpers import mlflow_client, random_name, use_mlflow
from tests.fixtures.servers import LiveServer, start_server, stop_server
from tests.fixtures.tracking import TrackingServer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # stages are deprecated in MLflow

PROMOTION_TIMEOUT_S = 90  # per awaited status: activities retry with a 1 s initial interval
POLL_S = 0.2
TERMINAL = {"promoted", "rejected", "expired", "cancelled", "failed"}
IMPORTANCES = {"tenure_months": 0.34, "monthly_charges": 0.28, "contract_months": 0.22, "support_calls": 0.16}
GOOD_DESCRIPTION = (
    "Churn classifier v2, trained on customer snapshots from 2024-01-01 to 2025-06-30. "
    "Holdout auc: 0.88, log_loss 0.39."
)


@dataclass(frozen=True)
class User:
    name: str
    token: str


@dataclass(frozen=True)
class Team:
    """The seeded admin and one user per part of the story."""

    admin: User
    requester: User  # an engineer who is also an approver: separation of duties must stop them
    approver: User
    viewer: User


@dataclass
class Webhooks:
    """A webhook receiver: records every delivery; can hold one model's deliveries of one kind."""

    url: str = ""
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    held: dict[tuple[str, str], threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, model: str, kind: str) -> threading.Event:
        """Answer ``model``'s ``kind`` deliveries only once the returned event is set (at most HOLD_S)."""
        with self.lock:
            return self.held.setdefault((model, kind), threading.Event())

    def deliveries(self, promotion_id: str) -> list[tuple[dict[str, str], bytes, dict[str, Any]]]:
        """``(headers, raw body, parsed body)`` of every delivery about one promotion."""
        with self.lock:
            received = list(self.received)
        parsed = [(headers, body, json.loads(body)) for headers, body in received]
        return [delivery for delivery in parsed if delivery[2]["promotion_id"] == promotion_id]

    def distinct_until(self, promotion_id: str, count: int) -> list[tuple[dict[str, str], bytes, dict[str, Any]]]:
        """The first ``count`` distinct deliveries (by delivery id, in arrival order) about one promotion, once
        they have arrived (bounded); a retried delivery arrives again with its id."""
        deadline = time.monotonic() + PROMOTION_TIMEOUT_S
        while True:
            distinct = list({headers["X-Calabi-Delivery-Id"]: (headers, raw, body)
                             for headers, raw, body in reversed(self.deliveries(promotion_id))}.values())[::-1]
            if len(distinct) >= count:
                return distinct
            if time.monotonic() > deadline:
                pytest.fail(f"{len(distinct)} of {count} deliveries about {promotion_id} arrived: "
                            f"{[body['kind'] for _, _, body in distinct]}")
            time.sleep(POLL_S)  # polling a condition with a deadline


HOLD_S = 4.0  # below the dispatcher's 5 s request timeout


@pytest.fixture(scope="module")
def webhooks() -> Iterator[Webhooks]:
    receiver = Webhooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            delivery = json.loads(body)
            with receiver.lock:
                receiver.received.append((dict(self.headers.items()), body))
                gate = receiver.held.get((delivery["model"], delivery["kind"]))
            if gate is not None:
                gate.wait(HOLD_S)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{http.server_address[1]}/hook"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield receiver
    http.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, webhooks: Webhooks, tracking_server: TrackingServer
           ) -> Iterator[LiveServer]:
    """A Calabi server with the promotion engine (Temporal dev server + worker), in front of the session's
    tracking server, for this module."""
    started = start_server(
        tmp_path_factory.mktemp("promotion-e2e"), temporal=True, tracking_url=tracking_server.url,
        extra_env={"CALABI_WEBHOOK_URLS": webhooks.url, "CALABI_WEBHOOK_SECRET": webhooks.secret,
                   "CALABI_WEBHOOK_DISPATCH_INTERVAL_S": "0.2", "CALABI_LOADER_POOL_SIZE": "1"},
    )
    yield started
    stop_server(started)


@pytest.fixture(scope="module")
def team(server: LiveServer) -> Team:
    with server.client() as http:
        admin_name = http.get("/api/v1/me").json()["name"]

    def user(prefix: str, *roles: str) -> User:
        name = random_name(prefix)
        return User(name, server.create_user(name, *roles))

    return Team(
        admin=User(admin_name, server.admin_token),
        requester=user("ml-engineer", "engineer", "approver"),
        approver=user("ds-lead", "approver"),
        viewer=user("analyst", "viewer"),
    )


# ------------------------------------------------------------------------------- helpers


def train_churn_model(root: Path, *, seed: int, metrics: dict[str, float]) -> Path:
    """A LogisticRegression on synthetic churn data, saved with its signature, metrics and importances."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    rows = 120
    features = pd.DataFrame({
        "tenure_months": rng.normal(30, 10, rows),
        "monthly_charges": rng.normal(70, 20, rows),
        "contract_months": rng.choice([1.0, 12.0, 24.0], rows),
        "support_calls": rng.poisson(2, rows).astype(float),
    })
    logits = (-0.08 * features.tenure_months + 0.04 * features.monthly_charges
              - 0.05 * features.contract_months + 0.4 * features.support_calls + rng.normal(0, 1, rows))
    labels = (logits > logits.median()).astype(int)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    target = root / f"churn-{seed}-{secrets.token_hex(4)}"
    mlflow.sklearn.save_model(
        model, str(target), signature=infer_signature(features, model.predict(features)),
        pip_requirements=["scikit-learn"],  # inferring requirements spawns a slow subprocess
    )
    (target / "metrics.json").write_text(json.dumps(metrics))
    (target / "feature_importances.json").write_text(json.dumps(IMPORTANCES))
    return target


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


def denied(response: httpx.Response) -> str:
    """A 403 PERMISSION_DENIED error; its message."""
    assert response.status_code == 403, f"{response.request.method} {response.request.url}: {response.text}"
    body = response.json()
    assert body["error_code"] == "PERMISSION_DENIED", body
    return str(body["message"])


def wait_for(http: httpx.Client, promotion_id: str, status: str, *, timeout: float = PROMOTION_TIMEOUT_S
             ) -> dict[str, Any]:
    """Poll the promotion until its read model reaches ``status`` (bounded; fails fast on another ending)."""
    deadline = time.monotonic() + timeout
    while True:
        detail: dict[str, Any] = ok(http.get(f"/api/v1/promotions/{promotion_id}"))
        current = detail["promotion"]["status"]
        if current == status:
            return detail
        if current in TERMINAL:
            pytest.fail(f"promotion {promotion_id} ended {current}, not {status}: {detail['promotion']['message']}")
        if time.monotonic() > deadline:
            pytest.fail(f"promotion {promotion_id} still {current} after {timeout} s, not {status}: "
                        f"{json.dumps(detail)[:3000]} (see the server's worker.log)")
        time.sleep(POLL_S)  # polling a condition with a deadline


def notifications_until(http: httpx.Client, promotion_id: str, kind: str, *, count: int = 1
                        ) -> list[dict[str, Any]]:
    """The promotion's outbox (newest first) once it holds ``count`` ``kind`` notifications (bounded)."""
    deadline = time.monotonic() + PROMOTION_TIMEOUT_S
    while True:
        found: list[dict[str, Any]] = ok(http.get(f"/api/v1/promotions/{promotion_id}/notifications"))
        if sum(n["kind"] == kind for n in found) >= count:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"no {kind} notification for {promotion_id}: {[n['kind'] for n in found]}")
        time.sleep(POLL_S)  # polling a condition with a deadline


def checklist(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The checklist results by check name (the read model's)."""
    found = detail["promotion"]["checklist"]
    assert found, detail
    return {result["name"]: result for result in found["results"]}


def number(result: dict[str, Any], label: str) -> dict[str, Any]:
    return next(n for n in result["numbers"] if n["label"] == label)


def stage_of(http: httpx.Client, name: str, version: int) -> str:
    return str(ok(http.get(f"/api/v1/models/{name}/versions/{version}"))["current_stage"])


# ------------------------------------------------------------------------------- the story


def test_promotion_story(server: LiveServer, team: Team, webhooks: Webhooks, monkeypatch: pytest.MonkeyPatch) -> None:
    name = random_name("churn")
    admin, engineer = server.client(), server.client(team.requester.token)
    approver, viewer = server.client(team.approver.token), server.client(team.viewer.token)

    # Two versions from real sklearn models, with their metrics and feature importances.
    ok(engineer.post("/api/v1/models", json={"name": name, "description": "Monthly churn."}), 201)
    v1_dir = train_churn_model(server.source_root, seed=1, metrics={"auc": 0.82, "log_loss": 0.4})
    v2_dir = train_churn_model(server.source_root, seed=2, metrics={"auc": 0.88, "log_loss": 0.39})
    for source, description in ((v1_dir, "Churn v1 on 2023-01-01 to 2024-06-30, auc 0.82."),
                                (v2_dir, "Churn v2: better recall on long-tenure customers, auc 0.88.")):
        created = ok(engineer.post(f"/api/v1/models/{name}/versions",
                                   json={"source": str(source), "description": description,
                                         "tags": {"ci.tests_passed": "true"}}), 201)
        assert created["evidence"]["metrics"]["auc"] in (0.82, 0.88), created["evidence"]
        assert created["evidence"]["feature_importances"] == IMPORTANCES
        assert json.loads(created["signature"])["inputs"], created["signature"]
    # v1 to Production is a break-glass for the admin; v2 to Staging is ordinary engineering.
    moved = ok(admin.post(f"/api/v1/models/{name}/versions/1/stage", json={"stage": "Production"}))
    assert moved["current_stage"] == "Production"
    ok(engineer.post(f"/api/v1/models/{name}/versions/2/stage", json={"stage": "Staging"}))

    # The engineer asks for v2 in Production; the description lacks the training date range.
    promotion = ok(engineer.post("/api/v1/promotions", json={
        "model": name, "version": 2, "target_stage": "Production",
        "justification": "auc up from 0.82 to 0.88 on the Q2 holdout",
    }), 201)
    pid = promotion["id"]
    assert (promotion["requester"], promotion["kind"], promotion["incumbent_version"]) == (
        team.requester.name, "promotion", 1)
    assert promotion["workflow_id"] == f"promotion-{name}-2-Production"

    failed = wait_for(viewer, pid, "checks_failed")
    results = checklist(failed)
    assert not results["description"]["passed"]
    assert any("date range" in reason for reason in results["description"]["reasons"]), results["description"]
    for passing in ("tests", "metrics", "signature", "leakage"):
        assert results[passing]["passed"], results[passing]
    auc = number(results["metrics"], "auc")
    assert (auc["candidate"], auc["production"]) == (0.88, 0.82)
    assert auc["delta"] == pytest.approx(0.06)
    assert "date range" in failed["promotion"]["history"][-1]["note"], failed["promotion"]["history"]
    assert failed["promotion"]["message"].startswith("description: "), failed["promotion"]
    # Signing off a promotion whose checks failed is refused.
    refused = approver.post(f"/api/v1/promotions/{pid}/sign-off", json={})
    assert refused.status_code == 409 and refused.json()["error_code"] == "RESOURCE_CONFLICT", refused.text

    # Fix the description, ask for a re-check: everything passes, sign-off is awaited.
    ok(engineer.patch(f"/api/v1/models/{name}/versions/2", json={"description": GOOD_DESCRIPTION}))
    ok(engineer.post(f"/api/v1/promotions/{pid}/recheck"))
    awaiting = wait_for(viewer, pid, "awaiting_sign_off")
    assert all(result["passed"] for result in checklist(awaiting).values()), checklist(awaiting)
    assert awaiting["promotion"]["required_approvals"] == 1
    assert awaiting["promotion"]["deadline"], awaiting["promotion"]
    assert [p["id"] for p in ok(approver.get("/api/v1/promotions", params={"awaiting": "me"}))["promotions"]
            if p["model_name"] == name] == [pid]
    again = engineer.post("/api/v1/promotions", json={"model": name, "version": 2, "justification": "again"})
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS", again.text

    # Only an approver who did not request it may sign off.
    denied(viewer.post(f"/api/v1/promotions/{pid}/sign-off", json={"comment": "lgtm"}))
    assert "separation of duties" in denied(
        engineer.post(f"/api/v1/promotions/{pid}/sign-off", json={"comment": "my own work"}))
    assert stage_of(viewer, name, 2) == "Staging"
    signed = ok(approver.post(f"/api/v1/promotions/{pid}/sign-off", json={"comment": "Reviewed the holdout."}))
    assert [a["user"] for a in signed["approvals"]] == [team.approver.name]
    done = wait_for(viewer, pid, "promoted")
    assert done["promotion"]["live"] is False and "live" not in done

    # What an MLflow user sees now.
    use_mlflow(monkeypatch, server.url, team.viewer.token)
    client = mlflow_client(server.url)
    v2, v1 = client.get_model_version(name, "2"), client.get_model_version(name, "1")
    assert (v2.current_stage, v1.current_stage) == ("Production", "Archived")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    validation_date = v2.tags["validation_date"]
    date.fromisoformat(validation_date)
    assert v2.tags["validated_by"] == team.approver.name
    assert v2.description.startswith(GOOD_DESCRIPTION)
    assert f"Validated by {team.approver.name} on {validation_date} (promotion {pid})" in v2.description

    # The trail: who did what, intact; the notifications of each step.
    events = [e for e in ok(viewer.get("/api/v1/audit", params={"model": name, "limit": 1000}))
              if isinstance(e["after"], dict) and e["after"].get("promotion") == pid]
    actors = {(e["action"], e["actor"]) for e in events}
    assert ("request_promotion", team.requester.name) in actors
    assert ("sign_off_promotion", team.approver.name) in actors
    applied = next(e for e in events if e["action"] == "transition_stage")
    assert (applied["version"], applied["after"]["stage"], applied["after"]["break_glass"]) == (2, "Production", False)
    assert applied["after"]["approved_by"] == [team.approver.name] and applied["after"]["archived"] == [1]
    assert applied["actor"] == f"workflow:promotion-{name}-2-Production"
    assert ok(viewer.get("/api/v1/audit/verify"))["ok"] is True
    notifications = notifications_until(viewer, pid, "promoted")  # sent after the read model says promoted
    kinds = {n["kind"] for n in notifications}
    assert {"requested", "checks_failed", "awaiting", "promoted"} <= kinds, kinds
    promoted_note = next(n for n in notifications if n["kind"] == "promoted")
    assert promoted_note["body"].startswith(f"[Calabi] {name} v2 → Production")
    # Each notification reaches the receiver once (by delivery id), in order, signed as before.
    delivered = webhooks.distinct_until(pid, len(notifications))
    assert [body["kind"] for _, _, body in delivered] == [n["kind"] for n in reversed(notifications)]
    assert [body["text"] for _, _, body in delivered] == [n["body"] for n in reversed(notifications)]
    assert all(verify_calabi_signature(webhooks.secret, headers, raw) for headers, raw, _ in webhooks.deliveries(pid))

    # Roll back: v1 returns to Production after one sign-off.
    back = ok(engineer.post(f"/api/v1/models/{name}/rollback", json={"justification": "v2 misbehaves in serving"}),
              201)
    assert (back["kind"], back["version"], back["target_stage"], back["incumbent_version"]) == (
        "rollback", 1, "Production", 2)
    wait_for(viewer, back["id"], "awaiting_sign_off")
    ok(approver.post(f"/api/v1/promotions/{back['id']}/sign-off", json={"comment": "roll back"}))
    wait_for(viewer, back["id"], "promoted")
    assert (client.get_model_version(name, "1").current_stage, client.get_model_version(name, "2").current_stage) == (
        "Production", "Archived")
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert ok(viewer.get("/api/v1/audit/verify"))["ok"] is True
    for http in (admin, engineer, approver, viewer):
        http.close()


def test_engineer_cannot_move_a_version_to_production_directly(
    server: LiveServer, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = random_name("churn")
    with server.client(team.requester.token) as engineer:
        ok(engineer.post("/api/v1/models", json={"name": name}), 201)
        ok(engineer.post(f"/api/v1/models/{name}/versions", json={"source": str(server.artifact())}), 201)
        ok(engineer.post(f"/api/v1/models/{name}/versions/1/stage", json={"stage": "Staging"}))
    use_mlflow(monkeypatch, server.url, team.requester.token)
    client = mlflow_client(server.url)
    with pytest.raises(RestException) as raised:
        client.transition_model_version_stage(name, "1", "Production")
    assert raised.value.error_code == "PERMISSION_DENIED"
    assert "promotion" in raised.value.message
    assert client.get_model_version(name, "1").current_stage == "Staging"


def test_a_recheck_sent_as_soon_as_the_checks_failed_is_not_lost(
    server: LiveServer, team: Team, webhooks: Webhooks
) -> None:
    """The requester re-checks the moment the read model says checks_failed, while the
    checks_failed notification is still being delivered (held here by the webhook receiver; the
    workflow only wrote it to the outbox). The API accepts the re-check and reports running_checks,
    so the checks must run again; both checks_failed notifications still arrive, in order."""
    name = random_name("churn")
    with server.client(team.requester.token) as engineer:
        ok(engineer.post("/api/v1/models", json={"name": name}), 201)
        ok(engineer.post(f"/api/v1/models/{name}/versions", json={"source": str(server.artifact())}), 201)
        release = webhooks.hold(name, "checks_failed")
        try:
            pid = ok(engineer.post("/api/v1/promotions", json={
                "model": name, "version": 1, "target_stage": "Staging", "justification": "no CI attestation yet",
            }), 201)["id"]
            wait_for(engineer, pid, "checks_failed")
            accepted = ok(engineer.post(f"/api/v1/promotions/{pid}/recheck"))
            assert accepted["status"] == "running_checks", json.dumps(accepted)
        finally:
            release.set()
        # The candidate still has no CI attestation: the re-run checks fail again, quickly.
        deadline = time.monotonic() + HOLD_S + 15
        statuses: list[str] = []
        detail: dict[str, Any] = {"promotion": {"status": "unknown"}}
        while statuses.count("checks_failed") < 2 and time.monotonic() < deadline:
            time.sleep(POLL_S)  # polling a condition with a deadline
            detail = ok(engineer.get(f"/api/v1/promotions/{pid}"))
            statuses = [change["status"] for change in detail["promotion"]["history"]]
        assert statuses.count("checks_failed") == 2, (
            f"the accepted re-check never ran; the promotion shows {detail['promotion']['status']} until it expires: "
            f"{statuses}")
        notes = notifications_until(engineer, pid, "checks_failed", count=2)
        delivered = webhooks.distinct_until(pid, len(notes))
        assert [body["kind"] for _, _, body in delivered] == [n["kind"] for n in reversed(notes)]
        assert [body["kind"] for _, _, body in delivered].count("checks_failed") == 2, delivered


def test_the_run_author_is_who_signed_in_not_who_the_client_claims(
    server: LiveServer, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engineer who also approves logs a run through Calabi's ``/mlflow`` claiming ``mlflow.user`` =
    someone else (at create, then with set-tag, delete-tag and log-batch): the run's author is still them,
    verified by Calabi, so they cannot sign off the promotion of the model registered from it."""
    from mlflow.entities import RunTag

    trainer = team.requester  # engineer + approver
    uri = f"{server.url}/mlflow"
    use_mlflow(monkeypatch, uri, trainer.token)
    client = mlflow_client(uri)
    run_id = client.create_run(client.create_experiment(random_name("forged-author")),
                               tags={"mlflow.user": "someone-else", "calabi.author": "someone-else"}).info.run_id
    forgeries = {
        "set-tag": lambda: client.set_tag(run_id, "mlflow.user", "someone-else"),
        "delete-tag": lambda: client.delete_tag(run_id, "calabi.author"),
        "log-batch": lambda: client.log_batch(run_id, tags=[RunTag("calabi.author", "someone-else")]),
    }
    for what, forge in forgeries.items():
        with pytest.raises(RestException) as refused:
            forge()
        assert refused.value.error_code == "PERMISSION_DENIED", what
    client.log_artifacts(run_id, str(server.artifact()), "model")
    client.set_terminated(run_id)
    run = client.get_run(run_id)
    assert (run.info.user_id, run.data.tags["mlflow.user"], run.data.tags["calabi.author"]) == (trainer.name,) * 3
    name = random_name("churn")
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)

    requester = server.client(server.create_user(random_name("requester"), "engineer"))
    pid = ok(requester.post("/api/v1/promotions", json={
        "model": name, "version": 1, "target_stage": "Staging", "justification": "who trained it?"}), 201)["id"]
    deadline = time.monotonic() + PROMOTION_TIMEOUT_S
    while not (promotion := ok(requester.get(f"/api/v1/promotions/{pid}"))["promotion"])["run_author"]:
        assert time.monotonic() < deadline, f"no run author recorded: {promotion}"
        time.sleep(POLL_S)  # polling a condition with a deadline
    assert (promotion["run_author"], promotion["run_author_source"]) == (trainer.name, "calabi")
    with server.client(trainer.token) as signer:
        message = denied(signer.post(f"/api/v1/promotions/{pid}/sign-off", json={"comment": "mine, but fine"}))
    assert "author of the candidate's training run" in message

    # A decision is answered once recorded: a read right after the cancellation shows it.
    assert ok(requester.post(f"/api/v1/promotions/{pid}/cancel", json={"reason": "forged"}))["status"] == "cancelled"
    assert ok(requester.get(f"/api/v1/promotions/{pid}"))["promotion"]["status"] == "cancelled"
    requester.close()
