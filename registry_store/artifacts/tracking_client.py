"""A small synchronous REST client for the parts of an MLflow tracking server the registry uses.

Runs, logged models, experiments and artifact listings/downloads (through the tracking server's
``/api/2.0/mlflow-artifacts/artifacts`` proxy); failures become domain errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from registry_store.artifacts._tree import CHUNK_SIZE, ProgressCallback
from registry_store.errors import InvalidParameterError, NotFoundError, UnavailableError
from registry_store.redaction import redact_url

__all__ = ["ArtifactEntry", "Experiment", "LoggedModel", "Run", "TrackingClient"]

_API = "/api/2.0/mlflow"
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MAX_PAGES = 20
"""Upper bound on the pages followed for one paged listing."""
_TOKEN_HINT = "CALABI_MLFLOW_TRACKING_TOKEN"


# -- results ---------------------------------------------------------------------------------


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class ArtifactEntry(_Result):
    """One entry of an artifact listing; ``path`` is as the server gives it."""

    path: str
    is_dir: bool = False
    file_size: int | None = None


class Experiment(_Result):
    """An experiment of the tracking server."""

    experiment_id: str
    name: str
    artifact_location: str = ""
    lifecycle_stage: str = ""


class Run(_Result):
    """A run: its info, latest finite metrics, params, tags and the logged models it output (id → step)."""

    run_id: str
    experiment_id: str
    run_name: str = ""
    user_id: str = ""
    status: str = ""
    start_time: int | None = None
    end_time: int | None = None
    artifact_uri: str = ""
    lifecycle_stage: str = ""
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    model_outputs: dict[str, int] = {}

    @classmethod
    def from_wire(cls, doc: Any) -> Run:
        """Build from MLflow's ``{"info", "data", "outputs"}`` run JSON."""
        info, data = _section(doc, "info"), _section(doc, "data")
        outputs = _items(_section(doc, "outputs").get("model_outputs"))
        return cls.model_validate(
            {
                **info,
                "run_id": info.get("run_id") or info.get("run_uuid"),
                "metrics": _latest_metrics(data.get("metrics")),
                "params": _params(data.get("params")),
                "tags": _params(data.get("tags")),
                "model_outputs": {item.get("model_id"): item.get("step", 0) for item in outputs},
            }
        )


class LoggedModel(_Result):
    """An MLflow 3 logged model: where its artifacts are, the run that made it, its numbers."""

    model_id: str
    experiment_id: str
    name: str = ""
    artifact_location: str = ""
    status: str = ""
    source_run_id: str = ""
    creation_timestamp: int | None = None
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}

    @property
    def registrable(self) -> bool:
        """Whether its artifacts can be registered: a logged model whose upload failed cannot."""
        return self.status != "LOGGED_MODEL_UPLOAD_FAILED"

    @classmethod
    def from_wire(cls, doc: Any) -> LoggedModel:
        """Build from MLflow's ``{"info", "data"}`` logged-model JSON."""
        info, data = _section(doc, "info"), _section(doc, "data")
        return cls.model_validate(
            {
                **info,
                "artifact_location": info.get("artifact_uri", ""),
                "creation_timestamp": info.get("creation_timestamp_ms"),
                "metrics": _latest_metrics(data.get("metrics")),
                "params": _params(data.get("params")),
            }
        )


def _section(doc: Any, key: str) -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _latest_metrics(value: Any) -> dict[str, float]:
    """Each metric key's latest finite value (highest step, then newest timestamp)."""
    best: dict[str, tuple[int, int, float]] = {}
    for item in _items(value):
        key, number = item.get("key"), _finite(item.get("value"))
        if not isinstance(key, str) or number is None:
            continue
        rank = (_int(item.get("step")), _int(item.get("timestamp")))
        if key not in best or rank >= best[key][:2]:
            best[key] = (*rank, number)
    return {key: entry[2] for key, entry in best.items()}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _params(value: Any) -> dict[str, str]:
    return {
        item["key"]: str(item.get("value", ""))
        for item in _items(value)
        if isinstance(item.get("key"), str)
    }


# -- client ----------------------------------------------------------------------------------


class TrackingClient:
    """A synchronous client for the parts of an MLflow tracking server's REST API the registry uses.

    Errors are domain errors: the server unreachable, failing or refusing Calabi's credentials is
    an :class:`UnavailableError`; a missing run, logged model or artifact a :class:`NotFoundError`;
    another refused request an :class:`InvalidParameterError`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> TrackingClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- tracking entities

    def get_run(self, run_id: str) -> Run:
        """A run with its latest metrics and params (``GET runs/get``)."""
        doc = self._call("GET", f"{_API}/runs/get", f"run '{run_id}'", params={"run_id": run_id})
        with self._shape("runs/get"):
            return Run.from_wire(doc["run"])

    def get_logged_model(self, model_id: str) -> LoggedModel:
        """A logged model by id (``GET logged-models/{id}``)."""
        path = f"{_API}/logged-models/{quote(model_id, safe='')}"
        doc = self._call("GET", path, f"logged model '{model_id}'")
        with self._shape("logged-models/get"):
            return LoggedModel.from_wire(doc["model"])

    def search_logged_models(
        self,
        experiment_ids: Sequence[str],
        *,
        source_run_id: str | None = None,
        name: str | None = None,
        max_results: int = 100,
    ) -> list[LoggedModel]:
        """Logged models of the experiments, optionally of one run and/or with one name."""
        clauses = [f"{field} = {_quoted(value)}" for field, value in (("name", name), ("source_run_id", source_run_id))
                   if value is not None]
        body: dict[str, Any] = {"experiment_ids": list(experiment_ids), "max_results": min(max_results, 100)}
        if clauses:
            body["filter"] = " AND ".join(clauses)
        found: list[LoggedModel] = []
        for page in self._pages("POST", f"{_API}/logged-models/search", "logged models", body, "models"):
            with self._shape("logged-models/search"):
                found.extend(LoggedModel.from_wire(item) for item in page)
            if len(found) >= max_results:
                break
        return found[:max_results]

    def get_experiment(self, experiment_id: str) -> Experiment:
        """One experiment by id (``GET experiments/get``)."""
        doc = self._call(
            "GET", f"{_API}/experiments/get", f"experiment '{experiment_id}'", params={"experiment_id": experiment_id}
        )
        with self._shape("experiments/get"):
            return Experiment.model_validate(doc["experiment"])

    def search_experiments(self, *, max_results: int = 100) -> list[Experiment]:
        """Active experiments, at most ``max_results`` (one page)."""
        doc = self._call("POST", f"{_API}/experiments/search", "experiments", json={"max_results": max_results})
        with self._shape("experiments/search"):
            return [Experiment.model_validate(item) for item in doc.get("experiments", [])]

    def search_runs(self, experiment_ids: Sequence[str], *, max_results: int = 100) -> list[Run]:
        """The newest runs of the experiments, newest first, at most ``max_results`` (one page)."""
        body = {
            "experiment_ids": list(experiment_ids),
            "max_results": max_results,
            "order_by": ["attributes.start_time DESC"],
        }
        doc = self._call("POST", f"{_API}/runs/search", "runs", json=body)
        with self._shape("runs/search"):
            return [Run.from_wire(item) for item in doc.get("runs", [])]

    # -- artifacts

    def list_run_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        """A run's artifacts directly below ``path``; entry paths are relative to the run's artifact root."""
        params = {"run_id": run_id, **({"path": path} if path else {})}
        entries: list[ArtifactEntry] = []
        for page in self._pages("GET", f"{_API}/artifacts/list", f"run '{run_id}'", params, "files"):
            with self._shape("artifacts/list"):
                entries.extend(ArtifactEntry.model_validate(item) for item in page)
        return entries

    def list_artifacts(self, artifacts_path: str = "") -> list[ArtifactEntry]:
        """Entries directly below ``artifacts_path`` of the proxied artifact store (entry paths are names).

        A missing directory lists as empty, and so does a file.
        """
        params = {"path": artifacts_path} if artifacts_path else None
        doc = self._call("GET", _ARTIFACTS, f"artifact '{artifacts_path}'", params=params)
        with self._shape("mlflow-artifacts list"):
            return [ArtifactEntry.model_validate(item) for item in doc.get("files", [])]

    def download_file(self, artifacts_path: str, out_path: Path, progress: ProgressCallback | None = None) -> int:
        """Stream one file of the proxied artifact store to ``out_path`` (created); return its size."""
        what = f"artifact '{artifacts_path}'"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        total = 0
        with self._transport_errors(), self._http.stream("GET", f"{_ARTIFACTS}/{quote(artifacts_path)}") as response:
            if response.status_code >= 300:
                response.read()
                self._check(response, what)
            with out_path.open("xb") as out:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    out.write(chunk)
                    total += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
        return total

    # -- plumbing

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self._transport_errors():
            response = self._http.request(method, path, params=params, json=json)
        self._check(response, what)
        try:
            doc = response.json()
        except ValueError:
            raise self._unavailable(f"{path} did not answer with JSON") from None
        if not isinstance(doc, dict):
            raise self._unavailable(f"{path} did not answer with a JSON object")
        return doc

    def _pages(
        self, method: str, path: str, what: str, request: dict[str, Any], key: str
    ) -> Iterator[list[Any]]:
        """The ``key`` list of each page, following ``next_page_token`` for at most MAX_PAGES pages."""
        token = ""
        for _ in range(MAX_PAGES):
            paged = {**request, **({"page_token": token} if token else {})}
            if method == "GET":
                doc = self._call(method, path, what, params=paged)
            else:
                doc = self._call(method, path, what, json=paged)
            items = doc.get(key, [])
            if not isinstance(items, list):
                raise self._unavailable(f"{path} answered with an unexpected '{key}'")
            yield items
            token = doc.get("next_page_token") or ""
            if not isinstance(token, str) or not token:
                return

    def _check(self, response: httpx.Response, what: str) -> None:
        """Map a non-2xx answer to a domain error."""
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (401, 403):
            raise UnavailableError(redact_url(
                f"MLflow tracking server at {self.base_url} refused Calabi's credentials (HTTP {status}); "
                f"check {_TOKEN_HINT}"
            ))
        code, message = _error_body(response)
        if status == 404 and code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFoundError(f"{what} does not exist on the tracking server")
        if 400 <= status < 500 and status not in (404, 408, 429):
            raise InvalidParameterError(f"The MLflow tracking server refused the request for {what}: {message}")
        hint = " (is CALABI_MLFLOW_TRACKING_URL an MLflow tracking server?)" if status == 404 else ""
        detail = f": {message}" if message else ""
        raise self._unavailable(f"HTTP {status} from {response.request.url.path}{hint}{detail}")

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._unavailable(f"{type(exc).__name__}: {exc}") from exc

    @contextmanager
    def _shape(self, what: str) -> Iterator[None]:
        try:
            yield
        except (ValidationError, KeyError, TypeError, AttributeError) as exc:
            raise self._unavailable(f"unexpected answer to {what}: {exc}") from exc

    def _unavailable(self, detail: str) -> UnavailableError:
        return UnavailableError(redact_url(f"MLflow tracking server at {self.base_url} is unavailable: {detail}"))


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """MLflow's ``error_code`` and message (or FastAPI's ``detail``), else a bit of the text."""
    try:
        doc = response.json()
    except ValueError:
        return "", response.text[:200]
    if not isinstance(doc, dict):
        return "", response.text[:200]
    message = doc.get("message") or doc.get("detail") or ""
    return str(doc.get("error_code") or ""), str(message)[:500]


def _quoted(value: str) -> str:
    """A search-filter string literal."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise InvalidParameterError(f"Cannot search the tracking server for {value!r}: it has both quote kinds")


