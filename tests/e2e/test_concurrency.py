"""Invariants 1, 2 and 4 under real contention: overlapping MLflow requests against a 4-worker
``calabi serve`` on SQLite and on PostgreSQL. A barrier releases all requests at once; each scenario
runs three rounds, each on a fresh model."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fixtures.servers import LiveServer, start_server, stop_server

API = "/api/2.0/mlflow"
WORKERS = 4
ROUNDS = range(3)
REQUEST_TIMEOUT_S = 120


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One 4-worker server per database, shared by every test of the module."""
    database_url = None
    if request.param == "postgres":
        database_url = request.getfixturevalue("postgres_server").create_database("calabi_concurrency")
    live = start_server(tmp_path_factory.mktemp(f"concurrency-{request.param}"), database_url=database_url,
                        workers=WORKERS)
    yield live
    stop_server(live)


def all_at_once(server: LiveServer, requests: list[Callable[[httpx.Client], httpx.Response]]) -> list[httpx.Response]:
    """Send every request from its own thread and client, released together by a barrier."""
    barrier = threading.Barrier(len(requests), timeout=60)

    def run(send: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
        with server.client() as http:
            http.get("/health").raise_for_status()  # connect before the barrier so the requests overlap
            barrier.wait()
            return send(http)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [pool.submit(run, send) for send in requests]
        return [future.result(timeout=REQUEST_TIMEOUT_S) for future in futures]


def post(path: str, body: dict[str, Any]) -> Callable[[httpx.Client], httpx.Response]:
    return lambda http: http.post(f"{API}{path}", json=body)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def new_model(server: LiveServer, versions: int = 0) -> str:
    name = f"concurrent-{uuid.uuid4().hex[:10]}"
    with server.client() as http:
        ok(http.post(f"{API}/registered-models/create", json={"name": name}))
        for number in range(1, versions + 1):
            body = {"name": name, "source": str(server.artifact())}
            created = ok(http.post(f"{API}/model-versions/create", json=body))
            assert created["model_version"]["version"] == str(number)
    return name


def all_versions(server: LiveServer, name: str) -> list[dict[str, Any]]:
    with server.client() as http:
        body = ok(http.get(f"{API}/model-versions/search", params={"filter": f"name='{name}'", "max_results": 1000}))
    assert "next_page_token" not in body
    versions: list[dict[str, Any]] = body.get("model_versions", [])
    return versions


@pytest.mark.parametrize("round_no", ROUNDS)
def test_fifty_simultaneous_registrations_get_versions_one_to_fifty(server: LiveServer, round_no: int) -> None:
    name = new_model(server)
    sources = [str(server.artifact()) for _ in range(50)]

    responses = all_at_once(server, [post("/model-versions/create", {"name": name, "source": s}) for s in sources])

    returned = sorted(int(ok(r)["model_version"]["version"]) for r in responses)
    assert returned == list(range(1, 51)), f"round {round_no}"
    assert sorted(int(v["version"]) for v in all_versions(server, name)) == list(range(1, 51))


@pytest.mark.parametrize("round_no", ROUNDS)
def test_twenty_simultaneous_promotions_leave_exactly_one_production_and_nineteen_archived(
    server: LiveServer, round_no: int
) -> None:
    name = new_model(server, versions=20)

    responses = all_at_once(server, [
        post("/model-versions/transition-stage", {
            "name": name, "version": str(v), "stage": "Production", "archive_existing_versions": v % 2 == 0,
        })
        for v in range(1, 21)
    ])

    assert all(ok(r)["model_version"]["current_stage"] == "Production" for r in responses)
    stages = {int(v["version"]): v["current_stage"] for v in all_versions(server, name)}
    assert Counter(stages.values()) == {"Production": 1, "Archived": 19}, f"round {round_no}: {stages}"
    (production,) = [v for v, stage in stages.items() if stage == "Production"]
    with server.client() as http:
        latest = ok(http.post(f"{API}/registered-models/get-latest-versions",
                              json={"name": name, "stages": ["Production"]}))
    assert [int(v["version"]) for v in latest["model_versions"]] == [production]


@pytest.mark.parametrize("round_no", ROUNDS)
def test_twenty_simultaneous_champion_moves_leave_the_alias_on_exactly_one_of_them(
    server: LiveServer, round_no: int
) -> None:
    name = new_model(server, versions=20)

    responses = all_at_once(server, [
        post("/registered-models/alias", {"name": name, "alias": "champion", "version": str(v)})
        for v in range(1, 21)
    ])

    for response in responses:
        ok(response)
    with server.client() as http:
        by_alias = ok(http.get(f"{API}/registered-models/alias", params={"name": name, "alias": "champion"}))
        model = ok(http.get(f"{API}/registered-models/get", params={"name": name}))["registered_model"]
        holders = [
            v for v in range(1, 21)
            if "champion" in ok(http.get(f"{API}/model-versions/get", params={"name": name, "version": str(v)}))
            ["model_version"]["aliases"]
        ]
    champion = int(by_alias["model_version"]["version"])
    assert 1 <= champion <= 20, f"round {round_no}"
    assert model["aliases"] == [{"alias": "champion", "version": str(champion)}]
    assert holders == [champion]
