"""The experiment and run pages over plain HTTP against live servers and a real MLflow tracking server.

Runs are logged by the real ``mlflow`` client: one MLflow 3 logged model (``log_model(name=...)``)
plus an MLflow-2-style run folder with an ``MLmodel`` file and a folder without one.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.helpers import use_mlflow
from tests.fixtures.servers import LiveServer, free_port, make_artifact, start_server, stop_server
from tests.fixtures.tracking import TrackingServer
from tests.integration.page_session import HTML, Browser, signed_in

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

NO_TRACKING = "CALABI_MLFLOW_TRACKING_URL is not set"


@dataclass(frozen=True)
class LoggedRun:
    """A run logged into the tracking server: its experiment, names and the logged model's id."""

    experiment_id: str
    experiment_name: str
    run_id: str
    run_name: str
    model_id: str


def log_model_run(tracking_url: str, tmp: Path, *, legacy_folder: bool = True) -> LoggedRun:
    """Log a run with an sklearn logged model (MLflow 3), metrics and params; optionally MLflow 2 folders too."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    client = mlflow.MlflowClient(tracking_uri=tracking_url)
    experiment_name = f"churn-prediction-{secrets.token_hex(4)}"
    experiment_id = client.create_experiment(experiment_name)
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with pytest.MonkeyPatch.context() as patch:
        use_mlflow(patch, tracking_url, None)
        with mlflow.start_run(experiment_id=experiment_id, run_name="gb_best_v1") as run:
            mlflow.log_params({"n_estimators": 10, "max_depth": 2})
            mlflow.log_metric("val_auc", 0.87)
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
            mlflow.log_metric("holdout_log_loss", 0.39, model_id=info.model_id)
    run_id = run.info.run_id
    if legacy_folder:
        client.log_artifacts(run_id, str(make_artifact(tmp)), artifact_path="legacy_model")
        plots = tmp / "plots"
        plots.mkdir()
        (plots / "roc.txt").write_text("not a model")
        client.log_artifacts(run_id, str(plots), artifact_path="plots")
    return LoggedRun(experiment_id, experiment_name, run_id, "gb_best_v1", info.model_id)


# ------------------------------------------------------------------------------ signed-in HTTP clients


def person(server: LiveServer, role: str) -> Browser:
    """A new user with ``role``, signed in."""
    return signed_in(server, server.create_user(f"{role}-{secrets.token_hex(3)}", role))


# ------------------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class World:
    server: LiveServer
    logged: LoggedRun
    engineer: Browser
    viewer: Browser


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tracking_server: TrackingServer) -> Iterator[World]:
    """A Calabi server in front of the tracking server, a logged run, an engineer and a viewer."""
    logged = log_model_run(tracking_server.url, tmp_path_factory.mktemp("run-artifacts"))
    server = start_server(tmp_path_factory.mktemp("experiment-pages"), tracking_url=tracking_server.url)
    try:
        yield World(server, logged, person(server, "engineer"), person(server, "viewer"))
    finally:
        stop_server(server)


@pytest.fixture
def no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started by the test inherit no tracking URL from the environment."""
    monkeypatch.delenv("CALABI_MLFLOW_TRACKING_URL", raising=False)


def register_href(source: str, run_id: str) -> str:
    return f"/ui/register?source={quote(source, safe='')}&run_id={run_id}"


# ------------------------------------------------------------------------------ tests


def test_experiments_lead_to_the_run(world: World) -> None:
    logged = world.logged
    listing = world.engineer.text("/ui/experiments")
    assert f'href="/ui/experiments/{logged.experiment_id}">{logged.experiment_name}</a>' in listing
    assert 'href="/ui/experiments" aria-current="page">Experiments</a>' in listing

    experiment = world.engineer.text(f"/ui/experiments/{logged.experiment_id}")
    assert f'href="/ui/runs/{logged.run_id}">{logged.run_name}</a>' in experiment
    assert "val_auc" in experiment and "0.87" in experiment and "Finished" in experiment
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[\d:]+Z">', experiment), "start time for the viewer's zone"


def test_run_page_lists_the_model_folders_with_register_buttons(world: World) -> None:
    logged = world.logged
    page = world.engineer.text(f"/ui/runs/{logged.run_id}")
    assert logged.experiment_name in page and "n_estimators" in page and "val_auc" in page
    panel = page[page.index('id="artifacts"'):]
    assert f"models:/{logged.model_id}" in panel and "holdout_log_loss" in panel
    assert f"runs:/{logged.run_id}/legacy_model" in panel
    assert f"runs:/{logged.run_id}/plots" not in panel  # no MLmodel file: not a model folder
    assert panel.count(">Register Model<") == 2
    assert f'href="{register_href(f"models:/{logged.model_id}", logged.run_id)}"' in panel
    assert f'href="{register_href(f"runs:/{logged.run_id}/legacy_model", logged.run_id)}"' in panel


def test_viewer_sees_no_register_model_button(world: World) -> None:
    page = world.viewer.text(f"/ui/runs/{world.logged.run_id}")
    assert f"models:/{world.logged.model_id}" in page  # the folders are listed...
    assert "Register Model" not in page and "/ui/register" not in page  # ...without write buttons
    assert "engineer" in page


def test_unknown_run_and_experiment_are_not_found(world: World) -> None:
    assert "does not exist" in world.engineer.text("/ui/runs/0123456789abcdef0123456789abcdef", status=404)
    assert "does not exist" in world.engineer.text("/ui/experiments/987654321", status=404)
    world.engineer.text("/ui/experiments/not-a-number", status=404)


def test_register_form_is_prefilled_and_registers_the_run_folder(world: World) -> None:
    logged = world.logged
    source = f"runs:/{logged.run_id}/legacy_model"
    form = world.engineer.text(register_href(source, logged.run_id))
    assert f'value="{source}"' in form and f'value="{logged.run_id}"' in form
    assert '<a href="/ui/experiments">Pick a run\'s model folder</a>' in form
    assert "mlflow-artifacts:/" in form and "models:/m-" in form

    name = f"from-run-{secrets.token_hex(3)}"
    response = world.engineer.http.post("/ui/register", headers=HTML, data={
        "csrf_token": world.engineer.csrf, "model": name, "source": source, "run_id": logged.run_id,
        "description": "",
    })
    assert response.status_code == 303, response.text[:2000]
    assert response.headers["location"] == f"/ui/models/{name}/versions/1"
    version = world.engineer.text(response.headers["location"])
    assert source in version and logged.run_id in version


@pytest.mark.usefixtures("no_tracking_env")
def test_without_a_tracking_server_the_pages_say_so(server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory()
    engineer = person(server, "engineer")
    for path in ("/ui/experiments", "/ui/experiments/1", "/ui/runs/abc"):
        assert NO_TRACKING in engineer.text(path, status=404)
    assert 'href="/ui/experiments"' not in engineer.text("/ui/models")
    assert "Pick a run's model folder" not in engineer.text("/ui/register")


@pytest.mark.usefixtures("no_tracking_env")
def test_a_tracking_server_that_is_down_is_a_503_page(server_factory: Callable[..., LiveServer]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    server = server_factory(tracking_url=closed)
    engineer = person(server, "engineer")
    for path in ("/ui/experiments", "/ui/experiments/1", "/ui/runs/abc"):
        page = engineer.text(path, status=503)
        assert f"MLflow tracking server at {closed} is unavailable" in page
        assert "Temporarily unavailable" in page
