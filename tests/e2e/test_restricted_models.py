"""Restricted models through every door: another team gets "does not exist" (404), never 403.

One scenario over the session's live server: team A's engineer creates a model (owned by team A,
their primary group) and restricts it; team B's engineer then cannot find, read or load it through
the mlflow client (search, get, get-latest, ``models:/name/1``, ``models:/name@alias``), the v1 API,
the registry artifact namespace, the audit listing or the pages, and gets exactly the answer a
missing model gets. A READ grant to team B makes it visible; revoking it hides it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException

from tests.e2e.helpers import (
    API,
    assert_error,
    call,
    create_version,
    mlflow_client,
    ok,
    random_name,
    use_mlflow,
)
from tests.fixtures.servers import LiveServer
from tests.integration.page_session import signed_in

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # stages are deprecated in MLflow

MISSING = "RESOURCE_DOES_NOT_EXIST"


def _team(admin: httpx.Client, server: LiveServer, team: str) -> tuple[str, str]:
    """A group and an engineer whose primary group it is; returns (group, engineer token)."""
    group, user = random_name(team), random_name(f"{team}-eng")
    assert admin.post("/api/v1/groups", json={"name": group}).status_code == 201
    token = server.create_user(user, "engineer")
    assert admin.put(f"/api/v1/users/{user}/primary-group", json={"group": group}).status_code == 204
    return group, token


def _missing_message(http: httpx.Client, name: str) -> str:
    return assert_error(call(http, "GET", "/registered-models/get", name=name), 404, MISSING)["message"]


def _load(monkeypatch: pytest.MonkeyPatch, server: LiveServer, token: str, uri: str, target: Path) -> Path:
    import mlflow.artifacts

    use_mlflow(monkeypatch, server.url, token)
    return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(target)))


def test_a_restricted_model_does_not_exist_for_another_team_until_granted(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with live_server.client() as admin:
        team_a, a_token = _team(admin, live_server, "team-a")
        team_b, b_token = _team(admin, live_server, "team-b")
    prefix = random_name("churn")
    name, other = f"{prefix}-restricted", f"{prefix}-open"
    a, b = live_server.client(a_token), live_server.client(b_token)
    try:
        use_mlflow(monkeypatch, live_server.url, a_token)
        client = mlflow_client(live_server.url)
        client.create_registered_model(name)  # owned by team A: A's engineer's primary group
        client.create_registered_model(other)
        create_version(a, live_server, name)
        create_version(a, live_server, other)
        ok(call(a, "POST", "/registered-models/alias", {"name": name, "alias": "blue", "version": "1"}))
        model = ok(a.get(f"/api/v1/models/{name}"))
        assert (model["owner_group"], model["restricted"]) == (team_a, False)

        # unrestricted: team B still sees and edits it, but only its owners manage it
        assert ok(call(b, "GET", "/registered-models/get", name=name))["registered_model"]["name"] == name
        ok(call(b, "PATCH", "/registered-models/update", {"name": name, "description": "seen by B"}))
        assert_error(call(b, "DELETE", "/registered-models/delete", {"name": name}), 403, "PERMISSION_DENIED")
        assert_error(b.put(f"/api/v1/models/{name}/restricted", json={"restricted": True}), 403, "PERMISSION_DENIED")

        assert ok(a.put(f"/api/v1/models/{name}/restricted", json={"restricted": True}))["restricted"] is True
        _assert_invisible(b, live_server, name, monkeypatch, tmp_path, b_token)
        _assert_filtered_in_sql(b, prefix, other)

        # team A's member, and the admin, still see and load it
        assert ok(call(a, "GET", "/registered-models/get", name=name))["registered_model"]["name"] == name
        assert (_load(monkeypatch, live_server, a_token, f"models:/{name}@blue", tmp_path / "a") / "MLmodel").is_file()
        browser = signed_in(live_server, a_token)
        try:
            page = browser.text(f"/ui/models/{name}")
            assert f"owned by {team_a}" in page and "restricted" in page
        finally:
            browser.http.close()

        # a READ grant to team B makes it visible (read-only); revoking hides it again
        ok(a.put(f"/api/v1/models/{name}/grants", json={"principal_kind": "group", "principal": team_b,
                                                         "permission": "READ"}))
        assert ok(call(b, "GET", "/registered-models/get", name=name))["registered_model"]["name"] == name
        assert (_load(monkeypatch, live_server, b_token, f"models:/{name}/1", tmp_path / "b") / "MLmodel").is_file()
        assert_error(call(b, "PATCH", "/registered-models/update", {"name": name, "description": "x"}),
                     403, "PERMISSION_DENIED")
        ok(a.request("DELETE", f"/api/v1/models/{name}/grants", params={"principal_kind": "group",
                                                                        "principal": team_b}))
        assert _missing_message(b, name) == f"Registered Model with name={name} not found"
        actions = [e["action"] for e in ok_list(a.get("/api/v1/audit", params={"model": name, "limit": 100}))]
        assert {"set_model_restricted", "set_model_grant", "revoke_model_grant"} <= set(actions)
    finally:
        a.close()
        b.close()


def ok_list(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def _assert_invisible(
    b: httpx.Client, server: LiveServer, name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, b_token: str
) -> None:
    """Every door answers team B exactly as it answers for a model that never existed."""
    ghost = random_name("never-existed")
    assert _missing_message(b, name).replace(name, ghost) == _missing_message(b, ghost)
    for path, params in (("/registered-models/get-latest-versions", {"name": name}),
                         ("/model-versions/get", {"name": name, "version": "1"}),
                         ("/model-versions/get-download-uri", {"name": name, "version": "1"}),
                         ("/registered-models/alias", {"name": name, "alias": "blue"})):
        hidden = assert_error(call(b, "GET", path, **params), 404, MISSING)["message"]
        absent = assert_error(call(b, "GET", path, **{**params, "name": ghost}), 404, MISSING)["message"]
        assert hidden.replace(name, ghost) == absent, path
    assert ok(call(b, "GET", "/model-versions/search", filter=f"name = '{name}'")).get("model_versions", []) == []
    assert assert_error(b.put(f"/api/v1/models/{name}/restricted", json={"restricted": False}), 404, MISSING)

    use_mlflow(monkeypatch, server.url, b_token)
    client = mlflow_client(server.url)
    assert client.search_registered_models(filter_string=f"name = '{name}'") == []
    for attempt in (lambda: client.get_registered_model(name), lambda: client.get_latest_versions(name),
                    lambda: client.get_model_version_by_alias(name, "blue")):
        with pytest.raises(MlflowException) as raised:
            attempt()
        assert raised.value.error_code == MISSING
    for uri in (f"models:/{name}/1", f"models:/{name}@blue"):
        with pytest.raises(MlflowException) as raised:
            _load(monkeypatch, server, b_token, uri, tmp_path / "b-denied")
        assert raised.value.error_code == MISSING, uri

    with server.client() as admin:  # never shown to B, but an id could leak: it answers like an unknown one
        artifact_id = ok(admin.get(f"/api/v1/models/{name}/versions/1"))["artifact_id"]
    assert artifact_id
    hidden = b.get(f"{API.replace('mlflow', 'mlflow-artifacts')}/artifacts/calabi-registry/{artifact_id}/MLmodel")
    assert assert_error(hidden, 404, MISSING)["message"] == \
        f"No model version has registry artifact id '{artifact_id}'"

    for path in (f"/api/v1/models/{name}", f"/api/v1/models/{name}/versions/1", f"/api/v1/models/{name}/grants",
                 f"/api/v1/models/{name}/production-history"):
        assert_error(b.get(path), 404, MISSING)
    assert ok_list(b.get("/api/v1/audit", params={"model": name})) == []
    assert name not in {e["model_name"] for e in ok_list(b.get("/api/v1/audit", params={"limit": 10_000}))}

    browser = signed_in(server, b_token)
    try:
        browser.page(f"/ui/models/{name}", status=404)
        assert name not in browser.page("/ui/models")
    finally:
        browser.http.close()


def _assert_filtered_in_sql(b: httpx.Client, prefix: str, other: str) -> None:
    """Two models match; B sees one: a page of one holds it and promises no second page."""
    page = ok(call(b, "GET", "/registered-models/search", filter=f"name LIKE '{prefix}%'", max_results=1))
    assert [m["name"] for m in page["registered_models"]] == [other]
    assert not page.get("next_page_token")
    found = ok(b.get("/api/v1/models", params={"filter": f"name LIKE '{prefix}%'"}))["models"]
    assert [(m["name"], m["restricted"]) for m in found] == [(other, False)]
