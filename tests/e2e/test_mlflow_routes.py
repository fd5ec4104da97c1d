"""The MLflow registry routes: each one answered, get-latest-versions forms, search filters and paging."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from calabi.api.mlflow_routes import MLFLOW_ROUTES
from tests.e2e.helpers import (
    API,
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


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """Raw HTTP as the admin."""
    with live_server.client() as client:
        yield client


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, live_server: LiveServer) -> Any:
    """The stock MlflowClient as the admin."""
    use_mlflow(monkeypatch, live_server.url, live_server.admin_token)
    return mlflow_client(live_server.url)


# ------------------------------------------------------------------------------- every route answers


Request = Callable[[str, LiveServer], dict[str, Any]]
"""Given a fresh model (versions 1 and 2, alias ``challenger`` -> 1, tags ``team``), the request fields."""

WELL_FORMED: dict[tuple[str, str], tuple[Request, set[str]]] = {
    ("POST", "/registered-models/create"): (lambda n, s: {"name": random_name()}, {"registered_model"}),
    ("GET", "/registered-models/get"): (lambda n, s: {"name": n}, {"registered_model"}),
    ("POST", "/registered-models/rename"): (lambda n, s: {"name": n, "new_name": random_name()}, {"registered_model"}),
    ("PATCH", "/registered-models/update"): (lambda n, s: {"name": n, "description": "d"}, {"registered_model"}),
    ("DELETE", "/registered-models/delete"): (lambda n, s: {"name": n}, set()),
    ("GET", "/registered-models/search"): (lambda n, s: {"filter": f"name = '{n}'"}, {"registered_models"}),
    ("POST", "/registered-models/get-latest-versions"): (lambda n, s: {"name": n}, {"model_versions"}),
    ("GET", "/registered-models/get-latest-versions"): (lambda n, s: {"name": n}, {"model_versions"}),
    ("POST", "/registered-models/set-tag"): (lambda n, s: {"name": n, "key": "k", "value": "v"}, set()),
    ("DELETE", "/registered-models/delete-tag"): (lambda n, s: {"name": n, "key": "team"}, set()),
    ("POST", "/registered-models/alias"): (lambda n, s: {"name": n, "alias": "next", "version": "2"}, set()),
    ("DELETE", "/registered-models/alias"): (lambda n, s: {"name": n, "alias": "challenger"}, set()),
    ("GET", "/registered-models/alias"): (lambda n, s: {"name": n, "alias": "challenger"}, {"model_version"}),
    ("POST", "/model-versions/create"): (lambda n, s: {"name": n, "source": str(s.artifact())}, {"model_version"}),
    ("GET", "/model-versions/get"): (lambda n, s: {"name": n, "version": "1"}, {"model_version"}),
    ("PATCH", "/model-versions/update"): (lambda n, s: {"name": n, "version": "1", "description": "d"},
                                          {"model_version"}),
    ("DELETE", "/model-versions/delete"): (lambda n, s: {"name": n, "version": "2"}, set()),
    ("POST", "/model-versions/transition-stage"): (
        lambda n, s: {"name": n, "version": "2", "stage": "Staging", "archive_existing_versions": False},
        {"model_version"},
    ),
    ("GET", "/model-versions/search"): (lambda n, s: {"filter": f"name = '{n}'"}, {"model_versions"}),
    ("GET", "/model-versions/get-download-uri"): (lambda n, s: {"name": n, "version": "1"}, {"artifact_uri"}),
    ("POST", "/model-versions/set-tag"): (lambda n, s: {"name": n, "version": "1", "key": "k", "value": "v"}, set()),
    ("DELETE", "/model-versions/delete-tag"): (lambda n, s: {"name": n, "version": "1", "key": "team"}, set()),
}


def test_the_route_table_has_the_22_mlflow_routes_and_each_has_a_well_formed_request() -> None:
    routes = [(method, path) for method, path, _ in MLFLOW_ROUTES]
    assert len(routes) == len(set(routes)) == 22
    assert set(routes) == set(WELL_FORMED)


@pytest.mark.parametrize("prefix", ["", "/mlflow"], ids=["root", "mlflow-prefix"])
@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in MLFLOW_ROUTES], ids=lambda v: str(v))
def test_every_route_answers_a_well_formed_request_with_200_and_a_json_object(
    live_server: LiveServer, http: httpx.Client, prefix: str, method: str, path: str
) -> None:
    name = model_with_versions(http, live_server, 2)
    ok(call(http, "POST", "/registered-models/alias", {"name": name, "alias": "challenger", "version": "1"}))
    ok(call(http, "POST", "/registered-models/set-tag", {"name": name, "key": "team", "value": "ds"}))
    ok(call(http, "POST", "/model-versions/set-tag", {"name": name, "version": "1", "key": "team", "value": "ds"}))
    make_request, keys = WELL_FORMED[(method, path)]
    fields = make_request(name, live_server)
    url = prefix + API + path
    response = http.request(method, url, params=fields) if method == "GET" else http.request(method, url, json=fields)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert set(body) == keys, body


def test_openapi_lists_the_mlflow_routes_at_the_root_next_to_api_v1(http: httpx.Client) -> None:
    schema = http.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for method, path, handler in MLFLOW_ROUTES:
        operation = paths[API + path][method.lower()]
        assert operation["operationId"] == f"{handler.__name__}_{method.lower()}"
        assert operation["tags"] == ["mlflow"]
    assert not any(p.startswith("/mlflow/") for p in paths)  # the /mlflow copy is not listed twice
    assert "/api/v1/models" in paths


def test_entities_use_the_wire_types_the_client_needs(live_server: LiveServer, http: httpx.Client) -> None:
    name = model_with_versions(http, live_server, 1)
    ok(call(http, "POST", "/registered-models/alias", {"name": name, "alias": "challenger", "version": "1"}))
    mv = ok(call(http, "GET", "/model-versions/get", name=name, version="1"))["model_version"]
    assert mv["version"] == "1" and mv["status"] == "READY" and mv["current_stage"] == "None"
    assert isinstance(mv["creation_timestamp"], int) and isinstance(mv["tags"], list)
    assert mv["aliases"] == ["challenger"]
    rm = ok(call(http, "GET", "/registered-models/get", name=name))["registered_model"]
    assert rm["aliases"] == [{"alias": "challenger", "version": "1"}]
    assert [v["version"] for v in rm["latest_versions"]] == ["1"]


def test_rename_moves_versions_tags_and_aliases_to_the_new_name(
    live_server: LiveServer, http: httpx.Client, client: Any
) -> None:
    name, new = model_with_versions(http, live_server, 2), random_name()
    client.set_registered_model_tag(name, "team", "ds")
    client.set_registered_model_alias(name, "challenger", "2")
    client.rename_registered_model(name, new)  # the client returns None
    assert client.get_registered_model(new).name == new
    assert client.get_registered_model(new).tags == {"team": "ds"}
    assert client.get_model_version_by_alias(new, "challenger").version == "2"
    assert sorted(v.version for v in client.search_model_versions(f"name = '{new}'")) == ["1", "2"]
    assert client.search_model_versions(f"name = '{name}'") == []


def test_update_registered_model_replaces_the_description(http: httpx.Client, client: Any) -> None:
    name = create_model(http, description="old")
    assert client.update_registered_model(name, description="new").description == "new"
    assert client.get_registered_model(name).description == "new"


# ------------------------------------------------------------------------------- get-latest-versions


@pytest.fixture
def four_stages(live_server: LiveServer, http: httpx.Client) -> str:
    """A model with v1 Archived, v2 Production, v3 Staging, v4 Staging, v5 None, v6 None."""
    name = model_with_versions(http, live_server, 6)
    for version, stage in (("1", "Archived"), ("2", "Production"), ("3", "Staging"), ("4", "Staging")):
        ok(call(http, "POST", "/model-versions/transition-stage",
                {"name": name, "version": version, "stage": stage, "archive_existing_versions": False}))
    return name


def latest(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((v["version"], v["current_stage"]) for v in ok(response)["model_versions"])


def test_get_latest_versions_without_stages_gives_the_highest_version_of_each_of_the_four_stages(
    http: httpx.Client, four_stages: str
) -> None:
    expected = [("1", "Archived"), ("2", "Production"), ("4", "Staging"), ("6", "None")]
    assert latest(call(http, "POST", "/registered-models/get-latest-versions", {"name": four_stages})) == expected
    assert latest(call(http, "GET", "/registered-models/get-latest-versions", name=four_stages)) == expected


def test_get_latest_versions_post_form_filters_by_stages_in_any_case(http: httpx.Client, four_stages: str) -> None:
    response = call(http, "POST", "/registered-models/get-latest-versions",
                    {"name": four_stages, "stages": ["production", "STAGING"]})
    assert latest(response) == [("2", "Production"), ("4", "Staging")]


def test_get_latest_versions_get_form_takes_repeated_stages_keys(http: httpx.Client, four_stages: str) -> None:
    response = http.get(f"{API}/registered-models/get-latest-versions",
                        params=[("name", four_stages), ("stages", "none"), ("stages", "Archived")])
    assert latest(response) == [("1", "Archived"), ("6", "None")]


def test_client_get_latest_versions_returns_canonical_stages(client: Any, four_stages: str) -> None:
    found = client.get_latest_versions(four_stages, stages=["production"])
    assert [(v.version, v.current_stage) for v in found] == [("2", "Production")]


def test_registered_model_latest_versions_has_one_version_per_stage(client: Any, four_stages: str) -> None:
    rm = client.get_registered_model(four_stages)
    assert sorted((v.version, v.current_stage) for v in rm.latest_versions) == [
        ("1", "Archived"), ("2", "Production"), ("4", "Staging"), ("6", "None")]


# ------------------------------------------------------------------------------- search registered models


def search_models(http: httpx.Client, **params: Any) -> list[str]:
    return [m["name"] for m in ok(call(http, "GET", "/registered-models/search", **params))["registered_models"]]


def test_search_registered_models_name_like_is_case_sensitive(http: httpx.Client) -> None:
    prefix = random_name("s")
    lower, upper = create_model(http, f"{prefix}-alpha"), create_model(http, f"{prefix}-Alpha")
    assert search_models(http, filter=f"name LIKE '{prefix}-al%'") == [lower]
    assert search_models(http, filter=f"name LIKE '{prefix}-Al%'") == [upper]


def test_search_registered_models_name_ilike_ignores_case(http: httpx.Client) -> None:
    prefix = random_name("s")
    names = [create_model(http, f"{prefix}-alpha"), create_model(http, f"{prefix}-Alpha")]
    assert sorted(search_models(http, filter=f"name ILIKE '{prefix.upper()}-AL%'")) == sorted(names)


def test_search_registered_models_by_exact_name_and_in_list(http: httpx.Client) -> None:
    a, b, c = (create_model(http) for _ in range(3))
    assert search_models(http, filter=f"name = '{b}'") == [b]
    assert search_models(http, filter=f"name IN ('{a}', '{c}')") == sorted([a, c])


def test_search_registered_models_by_tags_needs_the_tag_to_be_present(http: httpx.Client) -> None:
    prefix = random_name("s")
    ds, ml, untagged = (create_model(http, f"{prefix}-{i}") for i in range(3))
    for name, team in ((ds, "ds"), (ml, "ml")):
        ok(call(http, "POST", "/registered-models/set-tag", {"name": name, "key": "team", "value": team}))
        ok(call(http, "POST", "/registered-models/set-tag", {"name": name, "key": "owner.email", "value": "a@x"}))
    assert search_models(http, filter=f"name LIKE '{prefix}%' AND tags.team = 'ds'") == [ds]
    assert search_models(http, filter=f"name LIKE '{prefix}%' AND tag.team != 'ds'") == [ml]
    assert search_models(http, filter=f"name LIKE '{prefix}%' AND tag.`owner.email` = 'a@x' AND tag.team LIKE 'm%'") \
        == [ml]
    assert untagged not in search_models(http, filter=f"name LIKE '{prefix}%' AND tag.team ILIKE '%'")


def test_search_registered_models_with_the_clients_prompt_clause_excludes_only_prompts(http: httpx.Client) -> None:
    prefix = random_name("s")
    plain, not_prompt, prompt = (create_model(http, f"{prefix}-{i}") for i in range(3))
    ok(call(http, "POST", "/registered-models/set-tag",
            {"name": not_prompt, "key": "mlflow.prompt.is_prompt", "value": "false"}))
    ok(call(http, "POST", "/registered-models/set-tag",
            {"name": prompt, "key": "mlflow.prompt.is_prompt", "value": "true"}))
    found = search_models(http, filter=f"name LIKE '{prefix}%' AND tag.`mlflow.prompt.is_prompt` != 'true'")
    assert found == [plain, not_prompt]


def test_client_search_registered_models_finds_models_through_its_automatic_prompt_filter(
    live_server: LiveServer, http: httpx.Client, client: Any
) -> None:
    prefix = random_name("s")
    names = [create_model(http, f"{prefix}-{i}") for i in range(2)]
    create_version(http, live_server, names[0])
    found = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'")
    assert [m.name for m in found] == names
    assert [v.version for v in found[0].latest_versions] == ["1"]


def test_search_registered_models_orders_by_name_descending(http: httpx.Client) -> None:
    prefix = random_name("s")
    names = [create_model(http, f"{prefix}-{i}") for i in range(3)]
    assert search_models(http, filter=f"name LIKE '{prefix}%'", order_by="name DESC") == names[::-1]


def test_search_registered_models_orders_by_last_update(http: httpx.Client) -> None:
    prefix = random_name("s")
    names = [create_model(http, f"{prefix}-{i}") for i in range(3)]
    ok(call(http, "PATCH", "/registered-models/update", {"name": names[2], "description": "touched last"}))
    ok(call(http, "PATCH", "/registered-models/update", {"name": names[0], "description": "touched last"}))
    found = search_models(http, filter=f"name LIKE '{prefix}%'", order_by=["last_updated_timestamp DESC"])
    assert found[:2] == [names[0], names[2]]
    assert search_models(http, filter=f"name LIKE '{prefix}%'", order_by=["timestamp DESC"]) == found


def test_client_search_registered_models_pages_through_every_model_exactly_once(
    http: httpx.Client, client: Any
) -> None:
    prefix = random_name("s")
    names = [create_model(http, f"{prefix}-{i}") for i in range(5)]
    seen: list[str] = []
    token = None
    for _ in range(10):  # 3 pages expected; a bound instead of an endless loop
        page = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=2,
                                               page_token=token)
        assert len(page) <= 2
        seen.extend(m.name for m in page)
        token = page.token
        if not token:
            break
    assert not token, "the last page must not carry a next_page_token"
    assert seen == names


@pytest.mark.parametrize("count", [3, 4], ids=["partial-last-page", "full-last-page"])
def test_next_page_token_key_is_absent_on_the_last_page(http: httpx.Client, count: int) -> None:
    prefix = random_name("s")
    names = [create_model(http, f"{prefix}-{i}") for i in range(count)]
    first = ok(call(http, "GET", "/registered-models/search", filter=f"name LIKE '{prefix}%'", max_results=2))
    assert "next_page_token" in first
    last = ok(call(http, "GET", "/registered-models/search", filter=f"name LIKE '{prefix}%'", max_results=2,
                   page_token=first["next_page_token"]))
    assert "next_page_token" not in last
    assert [m["name"] for m in first["registered_models"] + last["registered_models"]] == names


# ------------------------------------------------------------------------------- search model versions


def search_versions(http: httpx.Client, **params: Any) -> list[str]:
    found = ok(call(http, "GET", "/model-versions/search", **params))["model_versions"]
    return sorted((v["version"] for v in found), key=int)


@pytest.mark.parametrize(
    ("clause", "expected"),
    [("version_number > 1", ["2", "3", "4"]), ("version_number >= 3", ["3", "4"]),
     ("version_number < 2", ["1"]), ("version_number <= 2", ["1", "2"]),
     ("version_number = 3", ["3"]), ("version_number != 3", ["1", "2", "4"])],
)
def test_search_model_versions_compares_version_numbers(
    live_server: LiveServer, http: httpx.Client, clause: str, expected: list[str]
) -> None:
    name = model_with_versions(http, live_server, 4)
    assert search_versions(http, filter=f"name = '{name}' AND {clause}") == expected


def test_search_model_versions_by_run_id_in_a_list(live_server: LiveServer, http: httpx.Client) -> None:
    name = create_model(http)
    for run in ("run-a", "run-b", "run-c"):
        create_version(http, live_server, name, run_id=run)
    assert search_versions(http, filter=f"name = '{name}' AND run_id IN ('run-a', 'run-c')") == ["1", "3"]
    assert search_versions(http, filter=f"name = '{name}' AND run_id NOT IN ('run-a')") == ["2", "3"]
    assert search_versions(http, filter=f"name = '{name}' AND run_id = 'run-b'") == ["2"]


def test_search_model_versions_by_version_tag(live_server: LiveServer, http: httpx.Client) -> None:
    name = model_with_versions(http, live_server, 3)
    ok(call(http, "POST", "/model-versions/set-tag", {"name": name, "version": "2", "key": "validated_by",
                                                       "value": "bob@example.com"}))
    assert search_versions(http, filter=f"name = '{name}' AND tags.validated_by LIKE 'bob%'") == ["2"]


def test_search_model_versions_orders_by_version_number_and_pages(live_server: LiveServer, http: httpx.Client) -> None:
    name = model_with_versions(http, live_server, 3)
    first = ok(call(http, "GET", "/model-versions/search", filter=f"name = '{name}'", max_results=2,
                    order_by="version_number ASC"))
    last = ok(call(http, "GET", "/model-versions/search", filter=f"name = '{name}'", max_results=2,
                   order_by="version_number ASC", page_token=first["next_page_token"]))
    assert [v["version"] for v in first["model_versions"] + last["model_versions"]] == ["1", "2", "3"]
    assert "next_page_token" not in last


def test_client_search_model_versions_with_version_filter(live_server: LiveServer, http: httpx.Client,
                                                          client: Any) -> None:
    name = model_with_versions(http, live_server, 3)
    found = client.search_model_versions(f"name = '{name}' AND version_number > 1",
                                         order_by=["version_number DESC"])
    assert [v.version for v in found] == ["3", "2"]
