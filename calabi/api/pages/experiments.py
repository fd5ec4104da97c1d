"""Experiments, runs and a run's model artifact folders from the MLflow tracking server (read-only).

The seed's "From the UI" flow: Experiments → the experiment → the run → its Artifacts panel →
Register Model, which opens the register form with the folder's source and the run id filled in.
All tracking calls are synchronous and run in the thread pool; tracking errors become the usual
error pages (503 when the server is down, 404 for an unknown run or experiment).
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from calabi.api.pages.web import PageRoute, SignedIn, error_page, page_services, render
from registry_store.artifacts.tracking_client import Experiment, LoggedModel, Run, TrackingClient
from registry_store.errors import InvalidParameterError, NotFoundError, UnavailableError

__all__ = ["experiments_router", "register_link"]

experiments_router = APIRouter(route_class=PageRoute, include_in_schema=False)
EXPERIMENTS_SHOWN = 200
"""Experiments listed on the experiments page (one page of the tracking server's answer)."""
RUNS_SHOWN = 50
"""Newest runs shown on an experiment page."""
METRIC_COLUMNS = 4
"""Metric columns of the runs table: the keys most runs have."""
MAX_FOLDERS_CHECKED = 50
"""Top-level run artifact directories looked into for an ``MLmodel`` file."""
MLMODEL = "MLmodel"
_NO_TRACKING = (
    "No MLflow tracking server is configured (CALABI_MLFLOW_TRACKING_URL is not set), so there are no "
    "experiments or runs to browse. Register a model from its artifact location on the Register page instead."
)


@dataclass(frozen=True)
class ModelFolder:
    """A model artifact folder of a run: an MLflow 3 logged model or a run folder with an MLmodel file."""

    name: str
    source: str
    run_id: str
    model_id: str = ""
    status: str = ""
    created: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    registrable: bool = True

    @property
    def register_url(self) -> str:
        """The register form with this folder's source and run filled in."""
        return register_link(self.source, self.run_id)


@dataclass(frozen=True)
class _RunPage:
    run: Run
    experiment: Experiment | None
    folders: list[ModelFolder]
    problems: list[str]
    more_folders: bool


def register_link(source: str, run_id: str) -> str:
    """The register form with ``source`` and ``run_id`` filled in."""
    return "/ui/register?" + urlencode({"source": source, "run_id": run_id})


def _client(request: Request) -> TrackingClient | None:
    return page_services(request).tracking


def _no_tracking(request: Request) -> Response:
    return error_page(request, 404, _NO_TRACKING, title="No tracking server")


def _find_experiment(client: TrackingClient, experiment_id: str) -> Experiment | None:
    try:
        return client.get_experiment(experiment_id)
    except (NotFoundError, InvalidParameterError):
        return None


def metric_columns(runs: Sequence[Run], limit: int = METRIC_COLUMNS) -> list[str]:
    """The metric keys most runs have (ties by name), at most ``limit``, in name order."""
    counts = Counter(key for run in runs for key in run.metrics)
    chosen = sorted(counts, key=lambda key: (-counts[key], key))[:limit]
    return sorted(chosen)


# ------------------------------------------------------------------------------ the run's model folders


def _logged_model_folder(model: LoggedModel, run_id: str) -> ModelFolder:
    return ModelFolder(name=model.name or model.model_id, source=f"models:/{model.model_id}", run_id=run_id,
                       model_id=model.model_id, status=model.status, created=model.creation_timestamp,
                       metrics=model.metrics, registrable=model.registrable)


def _run_folder(run_id: str, path: str) -> ModelFolder:
    name = path.strip("/")
    return ModelFolder(name=name, source=f"runs:/{run_id}/{name}", run_id=run_id)


def logged_model_folders(client: TrackingClient, run: Run) -> list[ModelFolder]:
    """The run's MLflow 3 logged models, newest first."""
    models = client.search_logged_models([run.experiment_id], source_run_id=run.run_id)
    models.sort(key=lambda m: m.creation_timestamp or 0, reverse=True)
    return [_logged_model_folder(m, run.run_id) for m in models]


def run_artifact_folders(client: TrackingClient, run_id: str) -> tuple[list[ModelFolder], bool]:
    """Top-level run artifact folders holding an ``MLmodel`` file (MLflow 2 style); and whether some went unchecked.

    Bounded: one listing of the root, then one listing of each of at most MAX_FOLDERS_CHECKED directories.
    """
    directories = [e.path for e in client.list_run_artifacts(run_id) if e.is_dir]
    folders = []
    for path in directories[:MAX_FOLDERS_CHECKED]:
        entries = client.list_run_artifacts(run_id, path)
        if any(not e.is_dir and posixpath.basename(e.path) == MLMODEL for e in entries):
            folders.append(_run_folder(run_id, path))
    return folders, len(directories) > MAX_FOLDERS_CHECKED


def _load_run(client: TrackingClient, run_id: str) -> _RunPage:
    run = client.get_run(run_id)
    experiment = _find_experiment(client, run.experiment_id)
    folders: list[ModelFolder] = []
    problems: list[str] = []
    more = False
    try:
        folders += logged_model_folders(client, run)
    except (InvalidParameterError, UnavailableError) as exc:
        problems.append(f"The run's logged models could not be listed: {exc.message}")
    try:
        found, more = run_artifact_folders(client, run.run_id)
        folders += found
    except (InvalidParameterError, NotFoundError, UnavailableError) as exc:
        problems.append(f"The run's artifacts could not be listed: {exc.message}")
    return _RunPage(run, experiment, folders, problems, more)


# ------------------------------------------------------------------------------ an experiment's runs


def _load_experiment(client: TrackingClient, experiment_id: str) -> tuple[Experiment, list[Run]]:
    """The experiment and its newest runs; unknown (or malformed) ids are a NotFoundError."""
    experiment = _find_experiment(client, experiment_id)
    if experiment is None:
        raise NotFoundError(f"Experiment '{experiment_id}' does not exist on the tracking server.")
    return experiment, client.search_runs([experiment_id], max_results=RUNS_SHOWN)


# ------------------------------------------------------------------------------ pages


@experiments_router.get("/ui/experiments", response_model=None)
async def experiments_list(request: Request, user: SignedIn) -> Response:
    """The tracking server's experiments."""
    client = _client(request)
    if client is None:
        return _no_tracking(request)
    experiments = await run_in_threadpool(client.search_experiments, max_results=EXPERIMENTS_SHOWN)
    return render(request, "experiments.html", user=user, experiments=experiments,
                  truncated=len(experiments) >= EXPERIMENTS_SHOWN, nav="experiments")


@experiments_router.get("/ui/experiments/{experiment_id}", response_model=None)
async def experiment_page(request: Request, user: SignedIn, experiment_id: str) -> Response:
    """An experiment's newest runs with their key metrics."""
    client = _client(request)
    if client is None:
        return _no_tracking(request)
    experiment, runs = await run_in_threadpool(_load_experiment, client, experiment_id)
    return render(request, "experiment.html", user=user, experiment=experiment, runs=runs,
                  metric_keys=metric_columns(runs), truncated=len(runs) >= RUNS_SHOWN, nav="experiments")


@experiments_router.get("/ui/runs/{run_id}", response_model=None)
async def run_page(request: Request, user: SignedIn, run_id: str) -> Response:
    """A run: details, params, metrics and the Artifacts panel with its model folders."""
    client = _client(request)
    if client is None:
        return _no_tracking(request)
    loaded = await run_in_threadpool(_load_run, client, run_id)
    return render(request, "run.html", user=user, run=loaded.run, experiment=loaded.experiment,
                  folders=loaded.folders, problems=loaded.problems, more_folders=loaded.more_folders,
                  max_folders=MAX_FOLDERS_CHECKED, nav="experiments")
