"""Every registry snippet of the seed, run through the real ``mlflow`` client against a live Calabi.

The client runs as the admin (the seed moves versions to Production directly, which is a
break-glass for admins). Every test runs twice: with ``tracking_uri=<host>`` and with the
seed's ``tracking_uri=<host>/mlflow``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from tests.e2e.helpers import (
    call,
    create_model,
    mlflow_client,
    ok,
    random_name,
    train_sklearn_model,
    use_mlflow,
)
from tests.fixtures.servers import LiveServer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # stages are deprecated in MLflow


@pytest.fixture(params=["", "/mlflow"], ids=["root", "mlflow-prefix"])
def tracking_uri(request: pytest.FixtureRequest, live_server: LiveServer) -> str:
    """Calabi's address as the seed's users configure it: the host, or the host plus ``/mlflow``."""
    return f"{live_server.url}{request.param}"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, live_server: LiveServer, tracking_uri: str) -> Any:
    """The stock MlflowClient, authenticated as the admin through MLFLOW_TRACKING_TOKEN."""
    use_mlflow(monkeypatch, tracking_uri, live_server.admin_token)
    return mlflow_client(tracking_uri)


def register(client: Any, server: LiveServer, name: str, count: int) -> list[str]:
    """``count`` new versions of ``name`` created through the client; their version strings."""
    return [client.create_model_version(name, source=str(server.artifact())).version for _ in range(count)]


# ------------------------------------------------------------------------------- registering


def test_create_registered_model_returns_it_with_description_and_tags(client: Any) -> None:
    name = random_name("churn-predictor")
    created = client.create_registered_model(name, tags={"team": "ds"}, description="Churn next month.")
    fetched = client.get_registered_model(name)
    assert (created.name, fetched.name) == (name, name)
    assert fetched.description == "Churn next month."
    assert fetched.tags == {"team": "ds"}
    assert fetched.latest_versions == []


def test_versions_are_numbered_sequentially_from_one(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    versions = [client.create_model_version(name, source=str(live_server.artifact()), run_id="3f8c2a1b9e4d")
                for _ in range(3)]
    assert [v.version for v in versions] == ["1", "2", "3"]
    assert all(v.status == "READY" and v.current_stage == "None" for v in versions)
    assert client.get_model_version(name, "3").run_id == "3f8c2a1b9e4d"


def test_register_model_creates_the_model_when_missing_and_appends_a_version_when_present(
    client: Any, live_server: LiveServer
) -> None:
    import mlflow

    name = random_name("churn-predictor")
    first = mlflow.register_model(model_uri=str(live_server.artifact()), name=name)
    second = mlflow.register_model(model_uri=str(live_server.artifact()), name=name)
    assert (first.version, second.version) == ("1", "2")
    assert client.get_registered_model(name).name == name


# ------------------------------------------------------------------------------- stages


def test_transition_to_staging_then_production_archives_the_previous_production_version(
    client: Any, live_server: LiveServer
) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 3)
    client.transition_model_version_stage(name, "1", "Production")
    staged = client.transition_model_version_stage(name, version="3", stage="Staging",
                                                   archive_existing_versions=False)
    assert staged.current_stage == "Staging"
    promoted = client.transition_model_version_stage(name, version="3", stage="Production",
                                                     archive_existing_versions=True)
    assert promoted.current_stage == "Production"
    assert client.get_model_version(name, "1").current_stage == "Archived"
    assert client.get_model_version(name, "2").current_stage == "None"


def test_moving_to_production_archives_the_incumbent_even_without_archive_existing_versions(
    client: Any, live_server: LiveServer
) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 2)
    client.transition_model_version_stage(name, "1", "Production")
    client.transition_model_version_stage(name, "2", "Production", archive_existing_versions=False)
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    assert stages == {"1": "Archived", "2": "Production"}
    assert [v.version for v in client.get_latest_versions(name, stages=["Production"])] == ["2"]


def test_stage_names_are_accepted_in_any_case_and_returned_canonical(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 1)
    assert client.transition_model_version_stage(name, "1", "staging").current_stage == "Staging"
    assert client.transition_model_version_stage(name, "1", "ARCHIVED").current_stage == "Archived"


def test_archiving_a_version_keeps_it_listed(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 1)
    client.transition_model_version_stage(name=name, version="1", stage="Archived")
    assert [(v.version, v.current_stage) for v in client.get_latest_versions(name)] == [("1", "Archived")]


# ------------------------------------------------------------------------------- descriptions, aliases, tags


def test_update_model_version_replaces_the_description(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 3)
    text = ("XGBoost pipeline with behavioral_v2 features. Val AUC 0.91 vs. 0.87 for v2 (production). "
            "Trained on 18 months of data. Validated by data science team 2026-04-01.")
    updated = client.update_model_version(name=name, version="3", description=text)
    assert updated.description == text
    assert client.get_model_version(name, "3").description == text
    assert client.get_model_version(name, "2").description == ""


def test_aliases_are_set_read_moved_and_deleted(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 5)
    client.set_registered_model_alias(name=name, alias="champion", version="3")
    assert client.get_model_version_by_alias(name, "champion").version == "3"
    client.set_registered_model_alias(name=name, alias="champion", version="4")
    client.set_registered_model_alias(name=name, alias="challenger", version="5")
    assert client.get_model_version_by_alias(name, "champion").version == "4"
    assert client.get_model_version_by_alias(name, "challenger").aliases == ["challenger"]
    assert client.get_registered_model(name).aliases == {"champion": "4", "challenger": "5"}
    assert client.get_model_version(name, "3").aliases == []
    client.delete_registered_model_alias(name, "challenger")
    assert client.get_registered_model(name).aliases == {"champion": "4"}
    with pytest.raises(MlflowException) as raised:
        client.get_model_version_by_alias(name, "challenger")
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"


def test_model_and_version_tags_are_stored_and_deletable(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 3)
    client.set_registered_model_tag(name, "owner", "alice@example.com")
    client.set_registered_model_tag(name, "use_case", "retention_scoring")
    client.set_model_version_tag(name, "3", "validated_by", "bob@example.com")
    client.set_model_version_tag(name, "3", "validation_date", "2026-04-01")
    assert client.get_registered_model(name).tags == {"owner": "alice@example.com", "use_case": "retention_scoring"}
    assert client.get_model_version(name, "3").tags == {"validated_by": "bob@example.com",
                                                        "validation_date": "2026-04-01"}
    client.delete_registered_model_tag(name, "use_case")
    client.delete_model_version_tag(name, "3", "validation_date")
    assert client.get_registered_model(name).tags == {"owner": "alice@example.com"}
    assert client.get_model_version(name, "3").tags == {"validated_by": "bob@example.com"}


def test_search_model_versions_lists_every_version_of_the_model(client: Any, live_server: LiveServer) -> None:
    name, other = random_name("churn-predictor"), random_name("churn-predictor")
    for model in (name, other):
        client.create_registered_model(model)
    register(client, live_server, name, 3)
    register(client, live_server, other, 1)
    found = client.search_model_versions(f"name='{name}'")
    assert sorted(v.version for v in found) == ["1", "2", "3"]
    assert {v.name for v in found} == {name}


# ------------------------------------------------------------------------------- deleting


def test_deleted_version_number_is_never_reused(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 3)
    client.delete_model_version(name=name, version="3")
    client.delete_model_version(name=name, version="1")
    with pytest.raises(MlflowException) as raised:
        client.get_model_version(name, "3")
    assert raised.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert register(client, live_server, name, 1) == ["4"]
    assert sorted(v.version for v in client.search_model_versions(f"name='{name}'")) == ["2", "4"]


def test_deleting_a_version_deletes_the_registry_copy_of_its_artifact_but_not_the_source(
    client: Any, live_server: LiveServer
) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    source = live_server.artifact()
    client.create_model_version(name, source=str(source))
    with live_server.client() as http:  # the download URI names the copy in Calabi's namespace, not its path
        copy = Path(urlsplit(ok(http.get(f"/api/v1/models/{name}/versions/1"))["storage_location"]).path)
    assert (copy / "MLmodel").is_file()
    client.delete_model_version(name, "1")
    assert not copy.exists()
    assert (source / "MLmodel").is_file()


def test_a_version_is_immutable_changing_its_source_later_does_not_change_what_loads(
    client: Any, live_server: LiveServer, tmp_path: Path
) -> None:
    import mlflow.artifacts

    name = random_name("churn-predictor")
    client.create_registered_model(name)
    source = live_server.artifact(payload=b"original weights")
    client.create_model_version(name, source=str(source))
    (source / "model.pkl").write_bytes(b"tampered")
    downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path)))
    assert (downloaded / "model.pkl").read_bytes() == b"original weights"


def test_deleting_a_version_removes_its_aliases(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 2)
    client.set_registered_model_alias(name, "challenger", "2")
    client.delete_model_version(name, "2")
    assert client.get_registered_model(name).aliases == {}
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "challenger")


def test_delete_registered_model_removes_the_model_and_all_its_versions(client: Any, live_server: LiveServer) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 2)
    client.delete_registered_model(name=name)
    with pytest.raises(MlflowException) as raised:
        client.get_registered_model(name)
    assert raised.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert client.search_model_versions(f"name='{name}'") == []


def test_a_deleted_model_name_can_be_registered_again_starting_at_version_one(
    client: Any, live_server: LiveServer
) -> None:
    name = random_name("churn-predictor")
    client.create_registered_model(name)
    register(client, live_server, name, 2)
    client.delete_registered_model(name)
    client.create_registered_model(name)
    assert register(client, live_server, name, 1) == ["1"]


# ------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Registered:
    """A model with four real sklearn versions: v1 Production, v2, v3 ``champion``, v4 the latest."""

    name: str
    models: dict[str, Any]
    features: Any


@pytest.fixture(scope="module")
def registered(live_server: LiveServer) -> Iterator[Registered]:
    """Four differently trained LogisticRegressions registered through raw HTTP (set up once)."""
    name = random_name("churn-predictor")
    models: dict[str, Any] = {}
    features = None
    with live_server.client() as http:
        create_model(http, name)
        for seed in range(1, 5):
            path = live_server.source_root / f"{name}-seed{seed}"
            model, features = train_sklearn_model(path, seed=seed)
            version = ok(call(http, "POST", "/model-versions/create", {"name": name, "source": str(path)}))
            models[version["model_version"]["version"]] = model
        ok(call(http, "POST", "/model-versions/transition-stage",
                {"name": name, "version": "1", "stage": "Production", "archive_existing_versions": False}))
        ok(call(http, "POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": "3"}))
    assert sorted(models) == ["1", "2", "3", "4"]
    probabilities = [m.predict_proba(features)[:, 1].round(6).tobytes() for m in models.values()]
    assert len(set(probabilities)) == 4, "the four versions must be distinguishable by their predictions"
    yield Registered(name, models, features)


@pytest.mark.parametrize(
    ("uri", "expected_version"),
    [("models:/{name}/Production", "1"), ("models:/{name}/2", "2"), ("models:/{name}@champion", "3"),
     ("models:/{name}/latest", "4")],
    ids=["by-stage", "by-number", "by-alias", "latest"],
)
def test_sklearn_load_model_from_the_registry_predicts_like_the_registered_model(
    monkeypatch: pytest.MonkeyPatch, live_server: LiveServer, tracking_uri: str, registered: Registered,
    uri: str, expected_version: str,
) -> None:
    import mlflow.sklearn

    use_mlflow(monkeypatch, tracking_uri, live_server.admin_token)
    loaded = mlflow.sklearn.load_model(uri.format(name=registered.name))
    expected = registered.models[expected_version]
    np.testing.assert_allclose(loaded.predict_proba(registered.features), expected.predict_proba(registered.features))
    assert (loaded.predict(registered.features) == expected.predict(registered.features)).all()


def test_download_uri_points_at_the_registry_copy_not_the_source(client: Any, registered: Registered) -> None:
    version = client.get_model_version(registered.name, "2")
    uri = client.get_model_version_download_uri(registered.name, "2")
    assert uri.startswith("mlflow-artifacts:/calabi-registry/") and uri != version.source
