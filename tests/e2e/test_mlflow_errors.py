"""Error codes and statuses of the MLflow routes: every bad request is a 4xx MLflow-shaped JSON error.

The ``existing`` model (versions 1 and 2, a tag, the alias ``challenger``) is created once; the
last test checks that after every hostile request above it the server answers and the model
is unchanged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mlflow.exceptions import RestException

from tests.e2e.helpers import (
    API,
    assert_error,
    call,
    create_model,
    create_version,
    mlflow_client,
    model_with_versions,
    ok,
    random_name,
    use_mlflow,
)
from tests.fixtures.servers import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # stages are deprecated in MLflow

INVALID = "INVALID_PARAMETER_VALUE"
MISSING = "RESOURCE_DOES_NOT_EXIST"
DUPLICATE = "RESOURCE_ALREADY_EXISTS"


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """Raw HTTP as the admin."""
    with live_server.client() as client:
        yield client


def snapshot(http: httpx.Client, name: str) -> dict[str, Any]:
    """What must survive the hostile requests: the model and all its versions."""
    model = ok(call(http, "GET", "/registered-models/get", name=name))["registered_model"]
    versions = ok(call(http, "GET", "/model-versions/search", filter=f"name = '{name}'"))["model_versions"]
    return {"model": model, "versions": sorted(versions, key=lambda v: v["version"])}


@pytest.fixture(scope="module")
def anchor(live_server: LiveServer) -> tuple[str, dict[str, Any]]:
    """A model (versions 1 and 2, tag team=ds, alias challenger -> 1, v2 Staging) and its snapshot."""
    with live_server.client() as http:
        name = model_with_versions(http, live_server, 2)
        ok(call(http, "POST", "/registered-models/set-tag", {"name": name, "key": "team", "value": "ds"}))
        ok(call(http, "POST", "/registered-models/alias", {"name": name, "alias": "challenger", "version": "1"}))
        ok(call(http, "POST", "/model-versions/transition-stage",
                {"name": name, "version": "2", "stage": "Staging", "archive_existing_versions": False}))
        return name, snapshot(http, name)


@pytest.fixture
def existing(anchor: tuple[str, dict[str, Any]]) -> str:
    """The name of the anchor model, which no request in this module may change."""
    return anchor[0]


def short_id(value: object) -> str:
    """A readable test id for a method, a path or a dict of request fields."""
    if isinstance(value, dict):
        return ",".join(f"{k}={str(v)[:14]}" for k, v in value.items()) or "no-fields"
    return str(value)


# ------------------------------------------------------------------------------- missing things


@pytest.mark.parametrize(
    ("method", "path", "fields"),
    [
        ("GET", "/registered-models/get", {"name": "{missing}"}),
        ("PATCH", "/registered-models/update", {"name": "{missing}", "description": "d"}),
        ("POST", "/registered-models/rename", {"name": "{missing}", "new_name": "{missing}-2"}),
        ("DELETE", "/registered-models/delete", {"name": "{missing}"}),
        ("POST", "/registered-models/set-tag", {"name": "{missing}", "key": "k", "value": "v"}),
        ("POST", "/registered-models/get-latest-versions", {"name": "{missing}"}),
        ("GET", "/registered-models/alias", {"name": "{missing}", "alias": "challenger"}),
        ("POST", "/model-versions/create", {"name": "{missing}", "source": "{source}"}),
        ("GET", "/model-versions/get", {"name": "{missing}", "version": "1"}),
        ("GET", "/model-versions/get", {"name": "{existing}", "version": "99"}),
        ("PATCH", "/model-versions/update", {"name": "{existing}", "version": "99", "description": "d"}),
        ("DELETE", "/model-versions/delete", {"name": "{existing}", "version": "99"}),
        ("POST", "/model-versions/transition-stage",
         {"name": "{existing}", "version": "99", "stage": "Staging", "archive_existing_versions": False}),
        ("GET", "/model-versions/get-download-uri", {"name": "{existing}", "version": "99"}),
        ("POST", "/model-versions/set-tag", {"name": "{existing}", "version": "99", "key": "k", "value": "v"}),
        ("POST", "/registered-models/alias", {"name": "{existing}", "alias": "next", "version": "99"}),
    ],
    ids=lambda v: short_id(v),
)
def test_missing_model_or_version_is_404_resource_does_not_exist(
    live_server: LiveServer, http: httpx.Client, existing: str, method: str, path: str, fields: dict[str, str]
) -> None:
    values = {"missing": random_name("nosuch"), "existing": existing, "source": str(live_server.artifact())}
    request = {k: v.format(**values) if isinstance(v, str) else v for k, v in fields.items()}
    assert_error(call(http, method, path, request), 404, MISSING)


def test_unknown_alias_is_400_invalid_parameter_value_as_in_mlflow(http: httpx.Client, existing: str) -> None:
    body = assert_error(call(http, "GET", "/registered-models/alias", name=existing, alias="nosuch"), 400, INVALID)
    assert "nosuch" in body["message"]


def test_creating_a_duplicate_model_is_resource_already_exists(http: httpx.Client, existing: str) -> None:
    assert_error(call(http, "POST", "/registered-models/create", {"name": existing}), 400, DUPLICATE)


def test_renaming_onto_an_existing_name_is_resource_already_exists(http: httpx.Client, existing: str) -> None:
    other = create_model(http)
    assert_error(call(http, "POST", "/registered-models/rename", {"name": other, "new_name": existing}), 400,
                 DUPLICATE)
    ok(call(http, "GET", "/registered-models/get", name=other))


def test_unknown_endpoint_is_a_json_endpoint_not_found(http: httpx.Client) -> None:
    assert_error(http.get(f"{API}/registered-models/nosuch"), 404, "ENDPOINT_NOT_FOUND")


@pytest.mark.parametrize("prefix", ["", "/mlflow"], ids=["root", "mlflow-prefix"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/model-versions/get"),  # a registry path with a method it does not take
        ("POST", "/registered-models/search"),
        ("GET", "/model-versions/get/"),  # a trailing slash is another path
    ],
)
def test_a_registry_path_with_another_method_or_a_trailing_slash_is_endpoint_not_found_and_changes_nothing(
    http: httpx.Client, existing: str, prefix: str, method: str, path: str
) -> None:
    response = http.request(method, f"{prefix}{API}{path}", params={"name": existing, "version": "1"})
    assert_error(response, 404, "ENDPOINT_NOT_FOUND")
    assert path.lower().rstrip("/") in response.json()["message"].lower()
    ok(call(http, "GET", "/registered-models/get", name=existing))


# ------------------------------------------------------------------------------- invalid values


@pytest.mark.parametrize(
    ("method", "path", "fields"),
    [
        # stages
        ("POST", "/model-versions/transition-stage", {"version": "1", "stage": "Bogus"}),
        ("POST", "/model-versions/transition-stage", {"version": "1", "stage": ""}),
        ("POST", "/model-versions/transition-stage", {"version": "1", "stage": "Deleted_Internal"}),
        ("POST", "/model-versions/transition-stage",
         {"version": "1", "stage": "Archived", "archive_existing_versions": True}),
        ("POST", "/model-versions/transition-stage",
         {"version": "1", "stage": "None", "archive_existing_versions": True}),
        ("POST", "/model-versions/transition-stage",
         {"version": "1", "stage": "Staging", "archive_existing_versions": "maybe"}),
        ("POST", "/registered-models/get-latest-versions", {"stages": ["Bogus"]}),
        ("POST", "/registered-models/get-latest-versions", {"stages": "Production"}),
        # versions
        ("GET", "/model-versions/get", {"version": "abc"}),
        ("GET", "/model-versions/get", {"version": "0"}),
        ("GET", "/model-versions/get", {"version": "-1"}),
        ("GET", "/model-versions/get", {"version": "1.5"}),
        ("GET", "/model-versions/get", {"version": "9" * 40}),
        ("PATCH", "/model-versions/update", {"version": {}, "description": "d"}),
        ("PATCH", "/model-versions/update", {"version": True, "description": "d"}),
        ("DELETE", "/model-versions/delete", {"version": [1]}),
        ("POST", "/registered-models/alias", {"alias": "next", "version": "abc"}),
        ("PATCH", "/model-versions/update", {"version": 10**30, "description": "d"}),
        ("POST", "/registered-models/alias", {"alias": "next", "version": 2**63}),
        ("POST", "/model-versions/transition-stage", {"version": 10**20, "stage": "Staging"}),
        # aliases
        ("POST", "/registered-models/alias", {"alias": "latest", "version": "1"}),
        ("POST", "/registered-models/alias", {"alias": "LATEST", "version": "1"}),
        ("POST", "/registered-models/alias", {"alias": "v1", "version": "1"}),
        ("POST", "/registered-models/alias", {"alias": "V12", "version": "1"}),
        ("POST", "/registered-models/alias", {"alias": "bad alias!", "version": "1"}),
        ("POST", "/registered-models/alias", {"alias": "a.b", "version": "1"}),
        ("POST", "/registered-models/alias", {"alias": "a/b", "version": "1"}),
        ("POST", "/registered-models/alias", {"alias": "x" * 300, "version": "1"}),
        ("POST", "/registered-models/alias", {"alias": 5, "version": "1"}),
        # descriptions and tags
        ("PATCH", "/registered-models/update", {"description": "d" * 100_000}),
        ("PATCH", "/model-versions/update", {"version": "1", "description": "d" * 100_000}),
        ("PATCH", "/registered-models/update", {"description": 5}),
        ("POST", "/registered-models/set-tag", {"key": "bad key!", "value": "v"}),
        ("POST", "/registered-models/set-tag", {"key": "k" * 300, "value": "v"}),
        ("POST", "/registered-models/set-tag", {"key": "k", "value": "v" * 100_000}),
        ("POST", "/registered-models/set-tag", {"key": "k"}),
        ("POST", "/model-versions/set-tag", {"version": "1", "key": "", "value": "v"}),
        ("POST", "/model-versions/set-tag", {"version": "1", "key": {"a": 1}, "value": "v"}),
        # sources
        ("POST", "/model-versions/create", {"source": "relative/path"}),
        ("POST", "/model-versions/create", {"source": "/etc"}),
        ("POST", "/model-versions/create", {"source": "file:///etc/passwd"}),
        ("POST", "/model-versions/create", {"source": "{root}/../../etc"}),
        ("POST", "/model-versions/create", {"source": "{root}/does-not-exist"}),
        ("POST", "/model-versions/create", {"source": "runs:/3f8c2a1b9e4d/model"}),
        ("POST", "/model-versions/create", {"source": "models:/m-0123456789abcdef0123456789abcdef"}),
        ("POST", "/model-versions/create", {"source": "mlflow-artifacts:/1/abc/artifacts/model"}),
        ("POST", "/model-versions/create", {"source": "ftp://example.com/model"}),
        ("POST", "/model-versions/create", {"source": 5}),
        ("POST", "/model-versions/create", {"source": "{artifact}", "tags": "x"}),
        ("POST", "/model-versions/create", {"source": "{artifact}", "tags": [{"value": "v"}]}),
        ("POST", "/model-versions/create", {"source": "{artifact}", "run_id": "r" * 1000}),
        ("POST", "/model-versions/create", {"source": "{artifact}", "description": "d" * 100_000}),
        # missing required fields
        ("POST", "/model-versions/create", {}),
        ("GET", "/registered-models/alias", {}),
        ("POST", "/registered-models/rename", {}),
    ],
    ids=lambda v: short_id(v),
)
def test_invalid_value_is_400_invalid_parameter_value(
    live_server: LiveServer, http: httpx.Client, existing: str, method: str, path: str, fields: dict[str, Any]
) -> None:
    values = {"root": str(live_server.source_root), "artifact": str(live_server.artifact())}
    request = {k: v.format(**values) if isinstance(v, str) and "{" in v else v for k, v in fields.items()}
    assert_error(call(http, method, path, {"name": existing, **request}), 400, INVALID)


@pytest.mark.parametrize(
    "name",
    ["a/b", "a:b", "", "   ", "x" * 10_000, "..", "tab\there", 5, None, ["a"], {"a": 1}],
    ids=["slash", "colon", "empty", "blank", "10k-chars", "dotdot", "control-char", "int", "null", "list", "object"],
)
def test_invalid_model_name_is_400_on_create(http: httpx.Client, name: object) -> None:
    assert_error(call(http, "POST", "/registered-models/create", {"name": name}), 400, INVALID)


def test_huge_name_in_a_query_string_is_400(http: httpx.Client) -> None:
    assert_error(call(http, "GET", "/registered-models/get", name="x" * 10_000), 400, INVALID)


def test_huge_description_on_create_is_400_and_creates_nothing(http: httpx.Client) -> None:
    name = random_name()
    response = call(http, "POST", "/registered-models/create", {"name": name, "description": "d" * 100_000})
    assert_error(response, 400, INVALID)
    assert_error(call(http, "GET", "/registered-models/get", name=name), 404, MISSING)


def test_refused_source_leaves_no_version_behind(live_server: LiveServer, http: httpx.Client) -> None:
    name = create_model(http)
    response = call(http, "POST", "/model-versions/create", {"name": name, "source": "runs:/3f8c2a1b9e4d/model"})
    assert_error(response, 400, INVALID)
    assert create_version(http, live_server, name)["version"] == "1"


# ------------------------------------------------------------------------------- malformed bodies


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"name": "x"', b"[]", b'["name", "x"]', b'"name"', b"5", b"null", b"\xff\xfe\x00",
     b'{"name": "\xff"}'],
    ids=["garbage", "unterminated", "empty-array", "array", "string", "number", "null", "binary", "bad-utf8"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/registered-models/create"), ("PATCH", "/model-versions/update"),
     ("DELETE", "/registered-models/delete")],
)
def test_malformed_or_non_object_json_body_is_400(http: httpx.Client, method: str, path: str, raw: bytes) -> None:
    response = http.request(method, API + path, content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, INVALID)


def test_deeply_nested_json_body_is_400_not_500(http: httpx.Client) -> None:
    raw = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = http.post(f"{API}/registered-models/create", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, INVALID)


@pytest.mark.parametrize(
    "raw",
    [b'{"name": "\\ud800"}', b'{"name": "ok-%s", "description": "\\udc00"}',
     b'{"name": "ok-%s", "tags": [{"key": "k", "value": "a\\ud800b"}]}'],
    ids=["name", "description", "tag-value"],
)
def test_lone_surrogate_escape_in_a_json_string_is_400_not_500(http: httpx.Client, raw: bytes) -> None:
    body = raw.replace(b"%s", random_name().encode())
    response = http.post(f"{API}/registered-models/create", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, INVALID)


def test_body_over_the_size_limit_is_400(http: httpx.Client) -> None:
    raw = json.dumps({"name": random_name(), "description": "d" * 2_000_000}).encode()
    response = http.post(f"{API}/registered-models/create", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, INVALID)


# ------------------------------------------------------------------------------- search


@pytest.mark.parametrize(
    "filter_string",
    [
        "name = 'x' OR 1=1",
        "name = 'a'; DROP TABLE registered_models",
        "name = 'a' AND (name = 'b' OR name = 'c')",
        "NOT name = 'a'",
        "1=1",
        "name = x",
        "name == 'a'",
        "name = 'unterminated",
        "description = 'x'",
        "tag.team > 'a'",
        "name LIKE 'a\\'",
        "name IN ()",
        "name IN ('a', 5)",
        "name = 'a' AND",
        "name = 'a' -- comment",
        "`name` = 'a' UNION SELECT * FROM users",
        "name = 'a' AND " * 300 + "name = 'a'",
    ],
)
def test_bad_or_injected_model_filter_is_400(http: httpx.Client, filter_string: str) -> None:
    assert_error(call(http, "GET", "/registered-models/search", filter=filter_string), 400, INVALID)


@pytest.mark.parametrize(
    "filter_string",
    ["version_number > 'a'", "version_number > 1.5", "version_number > 99999999999999999999",
     "version_number IN ('1')", "current_stage = 'Production'", "source_path IN ('a')",
     "run_id = 'a' OR run_id = 'b'"],
)
def test_bad_version_filter_is_400(http: httpx.Client, filter_string: str) -> None:
    assert_error(call(http, "GET", "/model-versions/search", filter=filter_string), 400, INVALID)


def test_quotes_inside_a_filter_value_are_data_not_sql(http: httpx.Client) -> None:
    found = ok(call(http, "GET", "/registered-models/search", filter="name = 'x'' OR ''1''=''1'"))
    assert found["registered_models"] == []
    tricky = create_model(http, random_name("it's"))
    quoted = tricky.replace("'", "''")
    found = ok(call(http, "GET", "/registered-models/search", filter=f"name = '{quoted}'"))
    assert [m["name"] for m in found["registered_models"]] == [tricky]


@pytest.mark.parametrize(
    "token",
    ["not a token!!", "%%%", base64.b64encode(b"garbage").decode(), base64.b64encode(b'{"offset": -1}').decode(),
     base64.b64encode(b'{"offset": "2"}').decode(), base64.b64encode(b"[1]").decode(), "x" * 5000],
    ids=["bad-chars", "percent", "not-json", "negative", "string-offset", "array", "long"],
)
@pytest.mark.parametrize("path", ["/registered-models/search", "/model-versions/search"])
def test_bad_page_token_is_400(http: httpx.Client, path: str, token: str) -> None:
    assert_error(call(http, "GET", path, page_token=token), 400, INVALID)


@pytest.mark.parametrize(
    ("path", "max_results"),
    [("/registered-models/search", "0"), ("/registered-models/search", "1001"), ("/registered-models/search", "-1"),
     ("/registered-models/search", "abc"), ("/registered-models/search", "1.5"),
     ("/model-versions/search", "0"), ("/model-versions/search", "200001"), ("/model-versions/search", "9" * 30)],
)
def test_max_results_out_of_range_is_400(http: httpx.Client, path: str, max_results: str) -> None:
    assert_error(call(http, "GET", path, max_results=max_results), 400, INVALID)


@pytest.mark.parametrize(
    ("path", "order_by"),
    [("/registered-models/search", ["creation_timestamp"]), ("/registered-models/search", ["name SIDEWAYS"]),
     ("/registered-models/search", ["name", "name DESC"]), ("/registered-models/search", ["name; DROP TABLE x"]),
     ("/model-versions/search", ["current_stage"]), ("/model-versions/search", ["version_number ASC DESC"])],
)
def test_bad_order_by_is_400(http: httpx.Client, path: str, order_by: list[str]) -> None:
    assert_error(call(http, "GET", path, order_by=order_by), 400, INVALID)


# ------------------------------------------------------------------------------- the real client


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, live_server: LiveServer) -> Any:
    """The stock MlflowClient as the admin, without retries."""
    use_mlflow(monkeypatch, live_server.url, live_server.admin_token)
    return mlflow_client(live_server.url)


def test_client_get_of_a_missing_model_raises_resource_does_not_exist(client: Any) -> None:
    with pytest.raises(RestException) as raised:
        client.get_registered_model(random_name("nosuch"))
    assert raised.value.error_code == MISSING


def test_client_create_of_a_duplicate_model_raises_resource_already_exists(client: Any, existing: str) -> None:
    with pytest.raises(RestException) as raised:
        client.create_registered_model(existing)
    assert raised.value.error_code == DUPLICATE


def test_client_transition_to_a_bad_stage_raises_invalid_parameter_value(client: Any, existing: str) -> None:
    with pytest.raises(RestException) as raised:
        client.transition_model_version_stage(existing, "1", "Bogus")
    assert raised.value.error_code == INVALID
    assert "Bogus" in raised.value.message


def test_client_get_of_a_missing_version_raises_resource_does_not_exist(client: Any, existing: str) -> None:
    with pytest.raises(RestException) as raised:
        client.get_model_version(existing, "99")
    assert raised.value.error_code == MISSING


def test_client_unknown_alias_raises_invalid_parameter_value(client: Any, existing: str) -> None:
    with pytest.raises(RestException) as raised:
        client.get_model_version_by_alias(existing, "nosuch")
    assert raised.value.error_code == INVALID


def test_client_registering_an_unsupported_source_raises_with_the_servers_message(client: Any, existing: str) -> None:
    with pytest.raises(RestException) as raised:
        client.create_model_version(existing, source="mlflow-artifacts:/1/abc/artifacts/model")
    assert raised.value.error_code == INVALID
    assert "mlflow-artifacts" in raised.value.message


# ------------------------------------------------------------------------------- afterwards


def test_after_the_hostile_requests_the_server_answers_and_earlier_data_is_intact(
    live_server: LiveServer, http: httpx.Client, anchor: tuple[str, dict[str, Any]]
) -> None:
    existing, before = anchor
    assert httpx.get(f"{live_server.url}/health", timeout=10).json() == {"status": "ok"}
    assert snapshot(http, existing) == before
    assert ok(call(http, "GET", "/registered-models/search", filter=f"name = '{existing}'"))["registered_models"]
    verdict = http.get("/api/v1/audit/verify")
    assert verdict.status_code == 200 and verdict.json()["ok"] is True, verdict.text
