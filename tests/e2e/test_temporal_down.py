"""With Temporal gone (its dev server killed with SIGKILL), reads still answer, decisions say 503 quickly
and ``/ready`` names Temporal.

Real processes: a Temporal dev server this test owns, and ``calabi serve`` (API and worker)
pointed at it. Reads come from the read model, so they never wait for Temporal; every
decision and new request is bounded by the engine's rpc timeout and answers
TEMPORARILY_UNAVAILABLE. Once the dev server is back (same state), decisions work again, and the
worker's reconciler starts the workflow of a row whose API process died before starting it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calabi.bootstrap import build_services
from calabi.engine import RPC_TIMEOUT
from calabi.processes import start_dev_server
from calabi.settings import Settings
from tests.e2e.helpers import create_model, create_version, ok
from tests.fixtures.servers import LiveServer, free_port, start_server, stop_server

WAIT_S = 60.0
POLL_S = 0.2
WAITING = frozenset({"checks_failed", "check_error", "awaiting_sign_off"})
# Hang detectors, not timing claims: before, a read waited on a workflow query and a decision on Temporal's retries.
READ_BOUND_S = 3.0
BOUND_S = RPC_TIMEOUT.total_seconds() + 3  # the engine's bound plus the HTTP round trip on a busy machine


class Temporal:
    """A dev server on a fixed port and state file, killable and restartable."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_dev_server(self.root, port=self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def temporal(tmp_path: Path) -> Iterator[Temporal]:
    server = Temporal(tmp_path / "temporal")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def server(tmp_path: Path, temporal: Temporal) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "calabi", temporal=True, extra_env={
        "CALABI_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal.port}", "CALABI_RECONCILE_EVERY_S": "0.5",
        "CALABI_RECONCILE_GRACE_S": "0"})
    yield live
    stop_server(live)


def waiting_promotion(http: httpx.Client, promotion_id: str) -> dict[str, Any]:
    """Wait (bounded) until the promotion waits for a decision, with its window recorded."""
    deadline = time.monotonic() + WAIT_S
    while True:
        promotion: dict[str, Any] = ok(http.get(f"/api/v1/promotions/{promotion_id}"))["promotion"]
        if promotion["status"] in WAITING and promotion["deadline"]:
            return promotion
        if time.monotonic() > deadline:
            pytest.fail(f"promotion still {promotion['status']} after {WAIT_S} s")
        time.sleep(POLL_S)  # polling a condition with a deadline


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def timed(request: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = request()
    return response, time.monotonic() - started


def test_reads_answer_and_decisions_fail_fast_while_temporal_is_down(server: LiveServer, temporal: Temporal) -> None:
    with server.client() as http:
        name = create_model(http)
        for _ in range(2):
            create_version(http, server, name, description="a model")
        requested = created(http.post("/api/v1/promotions", json={
            "model": name, "version": 1, "target_stage": "Staging", "justification": "first try"}))
        before = waiting_promotion(http, requested["id"])
        assert http.get("/ready").json()["checks"]["temporal"] == {"ok": True, "detail": "reachable"}

        temporal.kill()

        not_ready = http.get("/ready")  # answers, bounded by the readiness checks' own timeout
        assert not_ready.status_code == 503, not_ready.text
        assert {name for name, c in not_ready.json()["checks"].items() if not c["ok"]} == {"temporal"}

        read, seconds = timed(lambda: http.get(f"/api/v1/promotions/{requested['id']}"))
        assert read.status_code == 200 and seconds < READ_BOUND_S, (read.status_code, seconds)
        assert read.json()["promotion"]["status"] == before["status"]
        listed, seconds = timed(lambda: http.get("/api/v1/promotions", params={"model": name}))
        assert listed.status_code == 200 and seconds < READ_BOUND_S, (listed.status_code, seconds)
        for attempt in (lambda: http.post(f"/api/v1/promotions/{requested['id']}/cancel", json={}),
                        lambda: http.post("/api/v1/promotions", json={
                            "model": name, "version": 2, "target_stage": "Staging", "justification": "second"})):
            refused, seconds = timed(attempt)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" and seconds < BOUND_S, (
                refused.text, seconds)
        versions = {p["version"]: p for p in ok(http.get("/api/v1/promotions", params={"model": name}))["promotions"]}
        assert versions[2]["status"] == "failed" and not versions[2]["live"], versions[2]  # no stuck live row
        assert versions[1]["status"] == before["status"] and versions[1]["live"]

        temporal.start()  # same state: the waiting workflow is still there, the clients reconnect
        deadline = time.monotonic() + WAIT_S
        while (cancel := http.post(f"/api/v1/promotions/{requested['id']}/cancel", json={})).status_code == 503:
            assert time.monotonic() < deadline, cancel.text
            time.sleep(POLL_S)  # polling a condition with a deadline
        assert cancel.status_code == 200, cancel.text
        assert http.get("/ready").status_code == 200  # the same client: readiness follows Temporal back
        again = created(http.post("/api/v1/promotions", json={
            "model": name, "version": 2, "target_stage": "Staging", "justification": "Temporal is back"}))
        assert waiting_promotion(http, again["id"])["live"]

        # A row committed by a process that died before starting its workflow: the worker's reconciler starts it.
        create_version(http, server, name, description="a model")
        services = build_services(Settings(data_dir=server.data_dir))
        try:
            admin = services.users.authenticate(server.admin_token)
            orphan = services.registry.promotions.open_promotion(
                admin, model=name, version=3, target_stage="Staging", justification="its API process died")
        finally:
            services.close()
        assert waiting_promotion(http, orphan.id)["live"]
