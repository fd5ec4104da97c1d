"""Authentication and roles on the MLflow routes, through raw HTTP and the real ``mlflow`` client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException, RestException

from tests.e2e.helpers import (
    API,
    assert_error,
    audit_events,
    call,
    create_model,
    create_version,
    mlflow_client,
    model_with_versions,
    ok,
    random_name,
    stages,
    use_mlflow,
)
from tests.fixtures.servers import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # stages are deprecated in MLflow

DENIED = "PERMISSION_DENIED"
UNAUTHENTICATED = "UNAUTHENTICATED"


@dataclass(frozen=True)
class User:
    """A user created for this module and its token."""

    name: str
    token: str


@dataclass(frozen=True)
class Users:
    """One user per role, plus the seeded admin."""

    admin: User
    viewer: User
    engineer: User
    approver: User


@pytest.fixture(scope="module")
def users(live_server: LiveServer) -> Users:
    """Fresh users (unique names) for this module."""
    with live_server.client() as http:
        admin_name = http.get("/api/v1/me").json()["name"]

    def make(role: str) -> User:
        name = random_name(role)
        return User(name, live_server.create_user(name, role))

    return Users(User(admin_name, live_server.admin_token), make("viewer"), make("engineer"), make("approver"))


@pytest.fixture
def http_as(live_server: LiveServer) -> Iterator[Any]:
    """``http_as(token)``: a raw HTTP client with that bearer token (closed after the test)."""
    opened: list[httpx.Client] = []

    def factory(token: str | None) -> httpx.Client:
        client = live_server.client(token) if token else httpx.Client(base_url=live_server.url, timeout=60)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()


@pytest.fixture
def admin(http_as: Any, users: Users) -> httpx.Client:
    return http_as(users.admin.token)  # type: ignore[no-any-return]


def production_model(admin: httpx.Client, server: LiveServer) -> str:
    """A model with v1 Production (alias champion), v2 Staging and v3 None."""
    name = model_with_versions(admin, server, 3)
    for version, stage in (("1", "Production"), ("2", "Staging")):
        ok(call(admin, "POST", "/model-versions/transition-stage",
                {"name": name, "version": version, "stage": stage, "archive_existing_versions": False}))
    ok(call(admin, "POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": "1"}))
    return name


# ------------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("prefix", ["", "/mlflow"], ids=["root", "mlflow-prefix"])
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/registered-models/search"), ("POST", "/registered-models/create")]
)
def test_no_token_is_401_unauthenticated_json(live_server: LiveServer, prefix: str, method: str, path: str) -> None:
    response = httpx.request(method, f"{live_server.url}{prefix}{API}{path}",
                             json={"name": random_name()} if method == "POST" else None)
    body = assert_error(response, 401, UNAUTHENTICATED)
    assert "token" in body["message"].lower()
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-real-token", "Token abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"u:").decode(),
     "Basic " + base64.b64encode(b"admin:wrong").decode(), "bearer"],
    ids=["wrong-token", "unknown-scheme", "bad-base64", "empty-password", "wrong-password", "bare"],
)
def test_wrong_or_malformed_credentials_are_401(live_server: LiveServer, header: str) -> None:
    response = httpx.get(f"{live_server.url}{API}/registered-models/search", headers={"Authorization": header})
    assert_error(response, 401, UNAUTHENTICATED)


def test_failed_authentication_creates_nothing(live_server: LiveServer, admin: httpx.Client) -> None:
    name = random_name()
    response = httpx.post(f"{live_server.url}{API}/registered-models/create", json={"name": name},
                          headers={"Authorization": "Bearer wrong"})
    assert_error(response, 401, UNAUTHENTICATED)
    assert_error(call(admin, "GET", "/registered-models/get", name=name), 404, "RESOURCE_DOES_NOT_EXIST")


def test_client_without_a_token_gets_unauthenticated(monkeypatch: pytest.MonkeyPatch, live_server: LiveServer) -> None:
    use_mlflow(monkeypatch, live_server.url, None)
    with pytest.raises(RestException) as raised:
        mlflow_client(live_server.url).search_registered_models()
    assert raised.value.error_code == UNAUTHENTICATED


# ------------------------------------------------------------------------------- viewer


@pytest.mark.parametrize(
    ("method", "path", "fields"),
    [
        ("GET", "/registered-models/get", {}),
        ("GET", "/registered-models/search", {"filter": "name = '{name}'"}),
        ("POST", "/registered-models/get-latest-versions", {}),
        ("GET", "/registered-models/alias", {"alias": "champion"}),
        ("GET", "/model-versions/get", {"version": "1"}),
        ("GET", "/model-versions/search", {"filter": "name = '{name}'"}),
        ("GET", "/model-versions/get-download-uri", {"version": "1"}),
    ],
)
def test_viewer_can_read(live_server: LiveServer, http_as: Any, admin: httpx.Client, users: Users,
                         method: str, path: str, fields: dict[str, str]) -> None:
    name = production_model(admin, live_server)
    request = {"name": name, **{k: v.format(name=name) for k, v in fields.items()}}
    ok(call(http_as(users.viewer.token), method, path, request))


WRITES = [
    ("POST", "/registered-models/create", {"name": "{new}"}),
    ("POST", "/registered-models/rename", {"new_name": "{new}"}),
    ("PATCH", "/registered-models/update", {"description": "d"}),
    ("DELETE", "/registered-models/delete", {}),
    ("POST", "/registered-models/set-tag", {"key": "k", "value": "v"}),
    ("DELETE", "/registered-models/delete-tag", {"key": "k"}),
    ("POST", "/registered-models/alias", {"alias": "challenger", "version": "3"}),
    ("DELETE", "/registered-models/alias", {"alias": "challenger"}),
    ("POST", "/model-versions/create", {"source": "{source}"}),
    ("PATCH", "/model-versions/update", {"version": "3", "description": "d"}),
    ("DELETE", "/model-versions/delete", {"version": "3"}),
    ("POST", "/model-versions/transition-stage", {"version": "3", "stage": "Staging"}),
    ("POST", "/model-versions/set-tag", {"version": "3", "key": "k", "value": "v"}),
    ("DELETE", "/model-versions/delete-tag", {"version": "3", "key": "k"}),
]


@pytest.mark.parametrize("role", ["viewer", "approver"])
@pytest.mark.parametrize(("method", "path", "fields"), WRITES, ids=[f"{m}-{p}" for m, p, _ in WRITES])
def test_a_user_without_the_engineer_role_cannot_write(
    live_server: LiveServer, http_as: Any, admin: httpx.Client, users: Users, role: str,
    method: str, path: str, fields: dict[str, str],
) -> None:
    name = production_model(admin, live_server)
    ok(call(admin, "POST", "/registered-models/set-tag", {"name": name, "key": "k", "value": "v"}))
    before = ok(call(admin, "GET", "/registered-models/get", name=name))
    values = {"new": random_name(), "source": str(live_server.artifact())}
    request = {"name": name, **{k: v.format(**values) for k, v in fields.items()}}
    body = assert_error(call(http_as(getattr(users, role).token), method, path, request), 403, DENIED)
    assert "engineer" in body["message"]
    assert ok(call(admin, "GET", "/registered-models/get", name=name)) == before


# ------------------------------------------------------------------------------- engineer


@pytest.fixture
def engineer_client(monkeypatch: pytest.MonkeyPatch, live_server: LiveServer, users: Users) -> Any:
    """The stock MlflowClient with the engineer's token."""
    use_mlflow(monkeypatch, live_server.url, users.engineer.token)
    return mlflow_client(live_server.url)


def test_engineer_registers_stages_tags_and_sets_ordinary_aliases_through_the_client(
    live_server: LiveServer, engineer_client: Any
) -> None:
    name = random_name()
    engineer_client.create_registered_model(name)
    versions = [engineer_client.create_model_version(name, source=str(live_server.artifact())) for _ in range(3)]
    assert [v.version for v in versions] == ["1", "2", "3"]
    engineer_client.transition_model_version_stage(name, "1", "Staging")
    engineer_client.transition_model_version_stage(name, "2", "Staging", archive_existing_versions=True)
    engineer_client.transition_model_version_stage(name, "3", "Archived")
    engineer_client.set_registered_model_tag(name, "owner", "alice@example.com")
    engineer_client.set_model_version_tag(name, "2", "reviewed_by", "bob@example.com")  # not a governance tag
    engineer_client.set_registered_model_alias(name, "challenger", "2")
    engineer_client.update_model_version(name, "2", description="candidate")
    assert {v.version: v.current_stage for v in engineer_client.search_model_versions(f"name = '{name}'")} == {
        "1": "Archived", "2": "Staging", "3": "Archived"}
    assert engineer_client.get_model_version_by_alias(name, "challenger").description == "candidate"


def test_engineer_transition_to_production_is_denied_with_a_hint_to_request_a_promotion(
    live_server: LiveServer, engineer_client: Any, admin: httpx.Client
) -> None:
    name = model_with_versions(admin, live_server, 1)
    with pytest.raises(RestException) as raised:
        engineer_client.transition_model_version_stage(name, "1", "Production", archive_existing_versions=True)
    assert raised.value.error_code == DENIED
    message = raised.value.message.lower()
    assert "promotion" in message and "admin" in message
    assert stages(admin, name) == {"1": "None"}


@pytest.mark.parametrize(
    ("method", "path", "fields"),
    [
        ("POST", "/model-versions/transition-stage", {"version": "3", "stage": "production"}),
        ("POST", "/model-versions/transition-stage", {"version": "1", "stage": "Archived"}),
        ("POST", "/model-versions/transition-stage", {"version": "1", "stage": "Staging"}),
        ("DELETE", "/model-versions/delete", {"version": "1"}),
        ("DELETE", "/registered-models/delete", {}),
        ("POST", "/registered-models/alias", {"alias": "champion", "version": "2"}),
        ("DELETE", "/registered-models/alias", {"alias": "champion"}),
    ],
    ids=["into-production", "production-to-archived", "production-to-staging", "delete-production-version",
         "delete-model-with-production", "move-champion", "delete-champion"],
)
def test_engineer_cannot_touch_production_or_champion_and_nothing_changes(
    live_server: LiveServer, http_as: Any, admin: httpx.Client, users: Users,
    method: str, path: str, fields: dict[str, str],
) -> None:
    name = production_model(admin, live_server)
    events_before = len(audit_events(live_server, name))
    body = assert_error(call(http_as(users.engineer.token), method, path, {"name": name, **fields}), 403, DENIED)
    assert "admin" in body["message"]
    if "delete" not in path:
        assert "promotion" in body["message"]
    assert stages(admin, name) == {"1": "Production", "2": "Staging", "3": "None"}
    assert ok(call(admin, "GET", "/registered-models/alias", name=name, alias="champion"))["model_version"]["version"] \
        == "1"
    assert len(audit_events(live_server, name)) == events_before


def test_engineer_cannot_remove_champion_by_deleting_the_version_it_names(
    live_server: LiveServer, http_as: Any, admin: httpx.Client, users: Users
) -> None:
    name = production_model(admin, live_server)
    ok(call(admin, "POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": "2"}))
    body = assert_error(call(http_as(users.engineer.token), "DELETE", "/model-versions/delete",
                             {"name": name, "version": "2"}), 403, DENIED)
    assert "admin" in body["message"]
    assert ok(call(admin, "GET", "/registered-models/alias", name=name, alias="champion"))["model_version"]["version"] \
        == "2"


def test_engineer_cannot_remove_champion_by_deleting_its_model(
    live_server: LiveServer, http_as: Any, admin: httpx.Client, users: Users
) -> None:
    name = model_with_versions(admin, live_server, 2)
    ok(call(admin, "POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": "2"}))
    body = assert_error(call(http_as(users.engineer.token), "DELETE", "/registered-models/delete", {"name": name}),
                        403, DENIED)
    assert "admin" in body["message"]
    assert ok(call(admin, "GET", "/registered-models/alias", name=name, alias="champion"))["model_version"]["version"] \
        == "2"


def test_engineer_can_delete_a_model_without_a_production_version(
    live_server: LiveServer, http_as: Any, admin: httpx.Client, users: Users
) -> None:
    name = model_with_versions(admin, live_server, 2)
    ok(call(http_as(users.engineer.token), "DELETE", "/registered-models/delete", {"name": name}))
    assert_error(call(admin, "GET", "/registered-models/get", name=name), 404, "RESOURCE_DOES_NOT_EXIST")


def test_engineer_client_setting_champion_is_denied(
    live_server: LiveServer, engineer_client: Any, admin: httpx.Client
) -> None:
    name = model_with_versions(admin, live_server, 1)
    with pytest.raises(RestException) as raised:
        engineer_client.set_registered_model_alias(name, "champion", "1")
    assert raised.value.error_code == DENIED
    assert "admin" in raised.value.message.lower()
    assert ok(call(admin, "GET", "/registered-models/get", name=name))["registered_model"]["aliases"] == []


# ------------------------------------------------------------------------------- admin break-glass


def test_admin_can_promote_move_champion_and_demote_and_each_is_recorded_as_break_glass(
    live_server: LiveServer, admin: httpx.Client
) -> None:
    name = production_model(admin, live_server)
    ok(call(admin, "POST", "/model-versions/transition-stage",
            {"name": name, "version": "2", "stage": "Production", "archive_existing_versions": False}))
    ok(call(admin, "POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": "2"}))
    ok(call(admin, "POST", "/model-versions/transition-stage",
            {"name": name, "version": "2", "stage": "Archived", "archive_existing_versions": False}))
    assert stages(admin, name) == {"1": "Archived", "2": "Archived", "3": "None"}
    events = audit_events(live_server, name)
    promote, champion, demote = events[-3:]
    assert (promote["action"], promote["after"]["archived"], promote["after"]["break_glass"]) == (
        "transition_stage", [1], True)
    assert (champion["action"], champion["after"]["break_glass"]) == ("set_alias", True)
    assert (demote["action"], demote["before"], demote["after"]["break_glass"]) == (
        "transition_stage", {"stage": "Production"}, True)


def test_admin_can_delete_the_production_version(live_server: LiveServer, admin: httpx.Client) -> None:
    name = production_model(admin, live_server)
    ok(call(admin, "DELETE", "/model-versions/delete", {"name": name, "version": "1"}))
    assert stages(admin, name) == {"2": "Staging", "3": "None"}
    assert ok(call(admin, "GET", "/registered-models/get", name=name))["registered_model"]["aliases"] == []


# ------------------------------------------------------------------------------- audit actor


def test_the_audit_actor_of_each_mutation_is_the_tokens_user(
    live_server: LiveServer, http_as: Any, admin: httpx.Client, users: Users
) -> None:
    engineer = http_as(users.engineer.token)
    spoof = {"user_id": "mallory", "actor": "mallory", "user": "mallory"}
    spoof_headers = {"X-User": "mallory", "X-Forwarded-User": "mallory", "X-Remote-User": "mallory"}
    name = random_name()
    ok(engineer.post(f"{API}/registered-models/create", json={"name": name, **spoof}, headers=spoof_headers))
    version = create_version(engineer, live_server, name, **spoof)
    assert version["user_id"] == users.engineer.name
    ok(engineer.post(f"{API}/registered-models/set-tag", json={"name": name, "key": "k", "value": "v", **spoof},
                     headers=spoof_headers))
    ok(call(engineer, "POST", "/model-versions/transition-stage",
            {"name": name, "version": "1", "stage": "Staging", "archive_existing_versions": False, **spoof}))
    ok(call(admin, "POST", "/model-versions/transition-stage",
            {"name": name, "version": "1", "stage": "Production", "archive_existing_versions": False, **spoof}))
    ok(call(admin, "POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": "1", **spoof}))
    ok(call(engineer, "PATCH", "/model-versions/update", {"name": name, "version": "1", "description": "d", **spoof}))
    trail = [(e["action"], e["actor"]) for e in audit_events(live_server, name)]
    eng, adm = users.engineer.name, users.admin.name
    assert trail == [
        ("create_registered_model", eng), ("create_model_version", eng), ("set_registered_model_tag", eng),
        ("transition_stage", eng), ("transition_stage", adm), ("set_alias", adm), ("update_model_version", eng),
    ]


# ------------------------------------------------------------------------------- basic auth


def test_basic_auth_with_the_token_as_password_works_through_the_client_and_ignores_the_username(
    monkeypatch: pytest.MonkeyPatch, live_server: LiveServer, users: Users
) -> None:
    use_mlflow(monkeypatch, live_server.url, users.engineer.token, basic_user="mallory")
    client = mlflow_client(live_server.url)
    name = random_name()
    client.create_registered_model(name)
    assert client.create_model_version(name, source=str(live_server.artifact())).version == "1"
    assert [(e["action"], e["actor"]) for e in audit_events(live_server, name)] == [
        ("create_registered_model", users.engineer.name), ("create_model_version", users.engineer.name)]


def test_basic_auth_keeps_the_token_users_roles(
    monkeypatch: pytest.MonkeyPatch, live_server: LiveServer, users: Users
) -> None:
    use_mlflow(monkeypatch, live_server.url, users.viewer.token, basic_user=users.admin.name)
    client = mlflow_client(live_server.url)
    with pytest.raises(RestException) as raised:
        client.create_registered_model(random_name())
    assert raised.value.error_code == DENIED


def test_basic_auth_with_a_wrong_password_is_unauthenticated(
    monkeypatch: pytest.MonkeyPatch, live_server: LiveServer
) -> None:
    use_mlflow(monkeypatch, live_server.url, "not-a-token", basic_user="admin")
    with pytest.raises(MlflowException) as raised:
        mlflow_client(live_server.url).get_registered_model(random_name())
    assert raised.value.error_code == UNAUTHENTICATED


def test_viewer_token_through_the_client_reads_but_cannot_write(
    monkeypatch: pytest.MonkeyPatch, live_server: LiveServer, admin: httpx.Client, users: Users
) -> None:
    name = create_model(admin)
    use_mlflow(monkeypatch, live_server.url, users.viewer.token)
    client = mlflow_client(live_server.url)
    assert client.get_registered_model(name).name == name
    with pytest.raises(RestException) as raised:
        client.set_registered_model_tag(name, "k", "v")
    assert raised.value.error_code == DENIED
