"""``calabi.client``: model URIs, and fetching verified model files from a live Calabi server."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pytest

from calabi.client import CalabiClientError, FetchedModel, IntegrityError, ModelReference, fetch_model, parse_model_uri
from registry_store.artifacts.digest import tree_digest, tree_manifest
from tests.e2e.helpers import call, create_model, ok, random_name
from tests.fixtures.servers import LiveServer, start_server, stop_server

# ---- URI parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/churn-predictor/3", ModelReference("churn-predictor", version=3)),
        ("models:/churn-predictor/12", ModelReference("churn-predictor", version=12)),
        ("models:/churn-predictor/Production", ModelReference("churn-predictor", stage="Production")),
        ("models:/churn-predictor/production", ModelReference("churn-predictor", stage="Production")),
        ("models:/churn-predictor/STAGING", ModelReference("churn-predictor", stage="Staging")),
        ("models:/churn-predictor/archived", ModelReference("churn-predictor", stage="Archived")),
        ("models:/churn-predictor/None", ModelReference("churn-predictor", stage="None")),
        ("models:/churn-predictor/latest", ModelReference("churn-predictor", latest=True)),
        ("models:/churn-predictor/Latest", ModelReference("churn-predictor", latest=True)),
        ("models:/churn-predictor@champion", ModelReference("churn-predictor", alias="champion")),
        ("models:/churn predictor@challenger-2", ModelReference("churn predictor", alias="challenger-2")),
    ],
)
def test_parse_model_uri(uri: str, expected: ModelReference) -> None:
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "", "churn-predictor/3", "runs:/abc/model", "models:", "models:/", "models:/churn-predictor",
        "models:/churn-predictor/", "models:/churn-predictor/3/4", "models://profile/churn-predictor/3",
        "models:/churn-predictor/0", "models:/churn-predictor/Prod", "models:/churn-predictor/-1",
        "models:/@champion", "models:/churn-predictor@", "models:/a@b@c", "models:/churn-predictor/v1@champion",
        "models:/ /3",
    ],
)
def test_bad_model_uris_are_one_line_value_errors(uri: str) -> None:
    with pytest.raises(ValueError, match="Invalid model URI") as caught:
        parse_model_uri(uri)
    assert "\n" not in str(caught.value)


def test_fetch_needs_a_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI"):
        fetch_model("models:/m/1", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- against a live server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A Calabi server of its own: the tamper tests change its artifact store and database."""
    live = start_server(tmp_path_factory.mktemp("calabi-client"))
    yield live
    stop_server(live)


def nested_artifact(server: LiveServer, payload: bytes) -> Path:
    """A model directory with files two levels deep, below the server's source root."""
    path = server.artifact(payload=payload)
    (path / "data" / "nested").mkdir(parents=True)
    (path / "data" / "weights.bin").write_bytes(payload * 3)
    (path / "data" / "nested" / "vocab.txt").write_text("a\nb\n")
    return path


def register(http: httpx.Client, name: str, source: Path) -> int:
    body = {"name": name, "source": str(source)}
    return int(ok(call(http, "POST", "/model-versions/create", body))["model_version"]["version"])


def recorded(server: LiveServer, name: str, version: int) -> dict[str, str]:
    with server.client() as http:
        response = http.get(f"/api/v1/models/{name}/versions/{version}")
    response.raise_for_status()
    found: dict[str, str] = response.json()
    return found


@pytest.fixture(scope="module")
def churn(server: LiveServer) -> tuple[str, dict[int, Path]]:
    """A model with versions 1 (Production), 2 (alias 'challenger', nested files) and 3 (stage None)."""
    sources = {1: server.artifact(payload=b"one"), 2: nested_artifact(server, b"two"), 3: server.artifact(b"three")}
    with server.client() as http:
        name = create_model(http, random_name("churn"))
        assert [register(http, name, sources[n]) for n in (1, 2, 3)] == [1, 2, 3]
        ok(call(http, "POST", "/model-versions/transition-stage",
                {"name": name, "version": "1", "stage": "Production", "archive_existing_versions": True}))
        ok(call(http, "POST", "/registered-models/alias", {"name": name, "alias": "challenger", "version": "2"}))
    return name, sources


def assert_same_tree(fetched: FetchedModel, source: Path) -> None:
    assert fetched.path.is_dir()
    assert tree_manifest(fetched.path) == tree_manifest(source)
    assert fetched.digest == tree_digest(source)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.mark.parametrize(
    ("suffix", "version", "under_mlflow"),
    [("/2", 2, False), ("/production", 1, True), ("@challenger", 2, True), ("/latest", 3, False)],
)
def test_fetch_by_number_stage_alias_and_latest(
    server: LiveServer, churn: tuple[str, dict[int, Path]], tmp_path: Path, suffix: str, version: int,
    under_mlflow: bool,
) -> None:
    name, sources = churn
    tracking_uri = f"{server.url}/mlflow" if under_mlflow else server.url
    fetched = fetch_model(f"models:/{name}{suffix}", tmp_path / "model", tracking_uri=tracking_uri,
                          token=server.admin_token)
    assert (fetched.name, fetched.version, fetched.path) == (name, version, tmp_path / "model")
    assert fetched.digest == recorded(server, name, version)["digest"]
    assert_same_tree(fetched, sources[version])
    assert leftovers(tmp_path) == ["model"]


def test_fetch_reads_the_tracking_uri_and_token_from_the_environment(
    server: LiveServer, churn: tuple[str, dict[int, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, sources = churn
    viewer = server.create_user(random_name("viewer"), "viewer")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{server.url}/mlflow/")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", viewer)
    (tmp_path / "empty").mkdir()
    fetched = fetch_model(f"models:/{name}/2", tmp_path / "empty")
    assert_same_tree(fetched, sources[2])


def test_request_errors_carry_mlflow_messages_and_leave_nothing(
    server: LiveServer, churn: tuple[str, dict[int, Path]], tmp_path: Path
) -> None:
    name, _ = churn
    dest = tmp_path / "model"
    with pytest.raises(CalabiClientError, match="RESOURCE_DOES_NOT_EXIST") as missing:
        fetch_model(f"models:/{name}/99", dest, tracking_uri=server.url, token=server.admin_token)
    assert "99" in str(missing.value)
    with pytest.raises(CalabiClientError, match="alias nobody not found"):  # MLflow's 400 for a missing alias
        fetch_model(f"models:/{name}@nobody", dest, tracking_uri=server.url, token=server.admin_token)
    with pytest.raises(CalabiClientError, match="no version in stage 'Staging'"):
        fetch_model(f"models:/{name}/Staging", dest, tracking_uri=server.url, token=server.admin_token)
    with pytest.raises(CalabiClientError, match="401"):
        fetch_model(f"models:/{name}/1", dest, tracking_uri=server.url, token="not-a-token")
    assert leftovers(tmp_path) == []
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        fetch_model(f"models:/{name}/1", dest, tracking_uri=server.url, token=server.admin_token)
    assert leftovers(dest) == ["keep.txt"]


def stored_copy(server: LiveServer, name: str, version: int) -> Path:
    """The registry's copy of a version on the server's disk (local artifact root)."""
    location = urlparse(recorded(server, name, version)["storage_location"])
    assert location.scheme == "file", location
    return Path(unquote(location.path))


def test_a_tampered_copy_is_an_integrity_error(server: LiveServer, tmp_path: Path) -> None:
    with server.client() as http:
        name = create_model(http, random_name("tampered"))
        version = register(http, name, nested_artifact(server, b"genuine"))
    (stored_copy(server, name, version) / "data" / "weights.bin").write_bytes(b"swapped weights")
    with pytest.raises(IntegrityError) as caught:
        fetch_model(f"models:/{name}/{version}", tmp_path / "model", tracking_uri=server.url,
                    token=server.admin_token)
    assert f"version {version}" in str(caught.value)
    assert leftovers(tmp_path) == []


def test_a_changed_recorded_digest_is_an_integrity_error(server: LiveServer, tmp_path: Path) -> None:
    """The files match their per-file records (the server serves them) but not the tree digest of the version."""
    with server.client() as http:
        name = create_model(http, random_name("redigested"))
        version = register(http, name, server.artifact(b"genuine"))
    forged = "sha256:" + "0" * 64
    with sqlite3.connect(server.data_dir / "calabi.db") as db:
        db.execute(
            "UPDATE model_versions SET digest = ? WHERE version = ? AND model_id = "
            "(SELECT id FROM registered_models WHERE name = ?)", (forged, version, name),
        )
    assert recorded(server, name, version)["digest"] == forged
    with pytest.raises(IntegrityError, match=forged) as caught:
        fetch_model(f"models:/{name}/latest", tmp_path / "model", tracking_uri=server.url,
                    token=server.admin_token)
    assert "nothing was kept" in str(caught.value)
    assert leftovers(tmp_path) == []
