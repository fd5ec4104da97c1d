"""kill -9 of ``calabi serve`` (API, embedded Temporal dev server and worker) while promotions await sign-off.

None of its children outlives it; ``calabi serve`` started again on the same data dir picks the
promotions up from the dev server's database file; each is signed off over HTTP and applied exactly
once, and ``/api/v1/audit/verify`` passes.
"""

from __future__ import annotations

import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from calabi.bootstrap import Services, build_services
from calabi.settings import Settings
from registry_store.audit import Actor
from tests.faults.harness import DESCRIPTION, POLICY, RESUME_S, applied_once_problems, live_rows, until
from tests.fixtures.servers import LiveServer, start_server, stop_server

pytestmark = pytest.mark.faults

PROMOTIONS = 3
CHILDREN_EXIT_S = 30.0
API = "/api/2.0/mlflow"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


def children(pid: int) -> list[int]:
    """The direct children of process ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Team:
    """The server's admin, a requester and an approver, over HTTP."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.requester_token = server.create_user(f"ml-engineer-{secrets.token_hex(3)}", "engineer")
        self.approver_token = server.create_user(f"ds-lead-{secrets.token_hex(3)}", "approver")

    def register(self, model: str) -> None:
        """v1 in Production (admin break-glass), v2 in Staging, both with the CI attestation and a description."""
        with self.server.client(self.requester_token) as http, self.server.client() as admin:
            ok(http.post(f"{API}/registered-models/create", json={"name": model}))
            for number, (client, stage) in enumerate(((admin, "Production"), (http, "Staging")), start=1):
                ok(http.post(f"{API}/model-versions/create", json={
                    "name": model, "source": str(self.server.artifact()), "description": DESCRIPTION,
                    "tags": [{"key": "ci.tests_passed", "value": "true"}]}))
                ok(client.post(f"{API}/model-versions/transition-stage", json={
                    "name": model, "version": str(number), "stage": stage}))

    def request(self, model: str) -> str:
        with self.server.client(self.requester_token) as http:
            return str(ok(http.post("/api/v1/promotions", json={
                "model": model, "version": 2, "target_stage": "Production", "justification": "beats Production"}),
                201)["id"])

    def signed_off(self, promotion_id: str) -> bool:
        """Sign off (False while the engine cannot take it yet: 503)."""
        with self.server.client(self.approver_token) as http:
            response = http.post(f"/api/v1/promotions/{promotion_id}/sign-off", json={"comment": "ok"})
        if response.status_code == 503:
            return False
        if response.status_code == 409 and "already signed off" in response.text:
            return True  # an earlier attempt landed although its answer was a 503
        ok(response)
        return True

    def read(self, promotion_id: str) -> dict[str, Any]:
        """The read model (the list endpoint: no workflow query)."""
        with self.server.client() as http:
            page = ok(http.get("/api/v1/promotions", params={"max_results": 1000}))
        return next(p for p in page["promotions"] if p["id"] == promotion_id)

    def kinds(self, promotion_id: str) -> list[str]:
        with self.server.client() as http:
            return [n["kind"] for n in ok(http.get(f"/api/v1/promotions/{promotion_id}/notifications"))]


def temporal_address(server: LiveServer) -> str:
    """The embedded dev server's address, from the line ``calabi serve`` logs when it starts it."""
    log = (server.data_dir.parent / "server.log").read_text()
    found: list[str] = re.findall(r"Temporal dev server on (127\.0\.0\.1:\d+)", log)
    assert found, log[-2000:]
    return found[-1]


async def idle(client: Client, team: Team, promotion_id: str) -> bool:
    """Awaiting sign-off, its "awaiting" notice in the outbox and no activity in flight."""
    read = team.read(promotion_id)
    if read["status"] != "awaiting_sign_off" or "awaiting" not in team.kinds(promotion_id):
        return False
    return not (await client.get_workflow_handle(read["workflow_id"]).describe()).raw_description.pending_activities


@pytest.fixture
def policy_env(tmp_path: Path) -> dict[str, str]:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "default.toml").write_text(POLICY)
    return {"CALABI_POLICY_DIR": str(policy_dir)}


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            stop_server(server)


def registry_view(server: LiveServer, policy_env: dict[str, str]) -> tuple[Services, Actor]:
    """The registry of the server's data dir, read in this process, and its admin."""
    services = build_services(Settings(data_dir=server.data_dir, policy_dir=Path(policy_env["CALABI_POLICY_DIR"]),
                                       local_source_roots=[server.source_root]))
    return services, services.users.authenticate(server.admin_token)


async def test_serve_killed_while_promotions_await_sign_off(
        tmp_path: Path, policy_env: dict[str, str], servers: list[LiveServer]) -> None:
    first = start_server(tmp_path / "calabi", temporal=True, extra_env=policy_env)
    servers.append(first)
    team = Team(first)
    models = [f"serve-kill-{n}-{secrets.token_hex(3)}" for n in range(PROMOTIONS)]
    for model in models:
        team.register(model)
    promotions = [team.request(model) for model in models]
    temporal = await Client.connect(temporal_address(first))
    for promotion_id in promotions:
        await until(lambda p=promotion_id: idle(temporal, team, p), f"{promotion_id} awaiting sign-off")

    orphans = children(first.process.pid)
    assert orphans, "calabi serve started no children"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=30)
    children_gone = await until(lambda: not any(alive(pid) for pid in orphans),
                                "the killed serve's children exit", timeout=CHILDREN_EXIT_S)

    second = start_server(tmp_path / "calabi", temporal=True, extra_env=policy_env)
    servers.append(second)
    restarted = time.monotonic()
    team.server = second
    for promotion_id in promotions:
        await until(lambda p=promotion_id: team.signed_off(p), f"{promotion_id} signed off after the restart",
                    timeout=RESUME_S)
    for promotion_id in promotions:
        await until(lambda p=promotion_id: "promoted" in team.kinds(p), f"{promotion_id} promoted", timeout=RESUME_S)
    print(f"\n[serve kill] children gone {children_gone:.1f} s after the kill; restart -> all promoted "
          f"{time.monotonic() - restarted:.1f} s")

    with second.client() as http:
        verified = ok(http.get("/api/v1/audit/verify"))
    assert verified["ok"], verified
    services, admin = registry_view(second, policy_env)
    try:
        problems = {p: found for p in promotions
                    if (found := applied_once_problems(services, admin, services.registry.promotions.get_promotion(
                        admin, p)))}
        assert problems == {}
        assert live_rows(services, admin) == []
    finally:
        services.close()
