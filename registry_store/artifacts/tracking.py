"""MLflow tracking sources: a small REST client for a tracking server, and the resolver that copies
``runs:/…``, ``models:/m-…`` and ``mlflow-artifacts:/…`` sources into a staging directory.

Artifacts stored behind the tracking server's proxy (``mlflow-artifacts:``) are downloaded through
``/api/2.0/mlflow-artifacts/artifacts``; other artifact locations (``s3://``, allowed local paths)
are handed back to the :class:`~registry_store.artifacts.sources.SourceFetcher`, so the registry's
own rules for them apply. Run and logged-model numbers come back as evidence.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from registry_store.artifacts._tree import CHUNK_SIZE, ProgressCallback, safe_relpath
from registry_store.artifacts.mlmodel import MLMODEL_FILE
from registry_store.artifacts.sources import SourceFacts
from registry_store.errors import InvalidParameterError, NotFoundError, UnavailableError

__all__ = [
    "ArtifactEntry",
    "CopySource",
    "Experiment",
    "LoggedModel",
    "Run",
    "TrackingClient",
    "TrackingSourceResolver",
]

_API = "/api/2.0/mlflow"
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MAX_PAGES = 20
"""Upper bound on the pages followed for one paged listing."""
MAX_FILES = 10_000
"""Upper bound on the files of one downloaded tree."""
MAX_DEPTH = 64
"""Upper bound on the directory depth of one downloaded tree."""
MAX_EVIDENCE_KEYS = 200
"""Metrics or params kept per evidence section."""
MAX_PARAM_CHARS = 1000
"""Longest param value kept in the evidence."""

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_MODEL_ID = re.compile(r"^m-[A-Za-z0-9_-]{1,64}$")
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
    """A run: its info, latest finite metrics, params and the logged models it output (id → step)."""

    run_id: str
    experiment_id: str
    run_name: str = ""
    status: str = ""
    start_time: int | None = None
    end_time: int | None = None
    artifact_uri: str = ""
    lifecycle_stage: str = ""
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
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
            raise UnavailableError(
                f"MLflow tracking server at {self.base_url} refused Calabi's credentials (HTTP {status}); "
                f"check {_TOKEN_HINT}"
            )
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
        return UnavailableError(f"MLflow tracking server at {self.base_url} is unavailable: {detail}")


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


# -- resolver --------------------------------------------------------------------------------

CopySource = Callable[[str, Path, ProgressCallback | None], object]
"""Copies an ``s3://`` or local source into an empty directory with the registry's rules."""


class TrackingSourceResolver:
    """Copies ``runs:/``, ``models:/m-…`` and ``mlflow-artifacts:/`` sources (a ``TrackingResolver``)."""

    def __init__(self, client: TrackingClient, copy: CopySource) -> None:
        self.client = client
        self._copy = copy

    def __call__(self, source: str, dest: Path, progress: ProgressCallback | None = None) -> SourceFacts:
        """Copy ``source`` into the empty ``dest``; say which run and logged model it belongs to."""
        scheme = source.partition(":")[0].lower()
        with self._naming(source):
            if scheme == "mlflow-artifacts":
                self._download_tree(source, self._artifacts_path(source), dest, progress)
                return SourceFacts(require_mlmodel=True)
            if scheme == "runs":
                return self._resolve_run(source, dest, progress)
            if scheme == "models":
                return self._resolve_logged_model(source, _logged_model_id(source), dest, progress)
        if scheme in ("http", "https"):
            raise InvalidParameterError(f"Source '{source}' is a URL; the registry does not fetch arbitrary URLs")
        raise InvalidParameterError(f"Source '{source}' is not a runs:/, models:/ or mlflow-artifacts:/ URI")

    # -- the three kinds

    def _resolve_run(self, source: str, dest: Path, progress: ProgressCallback | None) -> SourceFacts:
        run_id, path = _parse_runs_uri(source)
        run = self.client.get_run(run_id)
        evidence = _run_evidence(run)
        listing = self.client.list_run_artifacts(run_id, path)
        if path and not any(entry.path.rsplit("/", 1)[-1] == MLMODEL_FILE for entry in listing):
            model = self._run_logged_model(run, path)  # like MLflow: no MLmodel there, so a logged model?
            if model is not None:
                self._copy_location(source, model.artifact_location, "", dest, progress)
                return SourceFacts(
                    run_id=run_id, model_id=model.model_id, evidence={**evidence, **_model_evidence(model)},
                    require_mlmodel=True,
                )
        if not listing:
            raise InvalidParameterError(
                f"Source '{source}': run '{run_id}' has no artifacts at '{path}' and no logged model named '{path}'"
                if path else f"Source '{source}': run '{run_id}' has no artifacts"
            )
        self._copy_location(source, run.artifact_uri, path, dest, progress)
        return SourceFacts(run_id=run_id, evidence=evidence, require_mlmodel=True)

    def _run_logged_model(self, run: Run, name: str) -> LoggedModel | None:
        """The run's logged model called ``name``; of several, the highest step, then the newest."""
        models = self.client.search_logged_models([run.experiment_id], source_run_id=run.run_id, name=name)
        if not models:
            return None
        return max(models, key=lambda m: (run.model_outputs.get(m.model_id, -1), m.creation_timestamp or 0))

    def _resolve_logged_model(
        self, source: str, model_id: str, dest: Path, progress: ProgressCallback | None
    ) -> SourceFacts:
        model = self.client.get_logged_model(model_id)
        if model.status == "LOGGED_MODEL_UPLOAD_FAILED":
            raise InvalidParameterError(f"Source '{source}': the upload of logged model '{model_id}' failed")
        evidence = _model_evidence(model)
        if model.source_run_id:
            try:
                evidence = {**_run_evidence(self.client.get_run(model.source_run_id)), **evidence}
            except NotFoundError:
                pass  # the run is gone; the model's own numbers remain
        self._copy_location(source, model.artifact_location, "", dest, progress)
        return SourceFacts(
            run_id=model.source_run_id, model_id=model.model_id, evidence=evidence, require_mlmodel=True
        )

    # -- copying

    def _copy_location(
        self, source: str, location: str, subpath: str, dest: Path, progress: ProgressCallback | None
    ) -> None:
        """Copy ``<location>/<subpath>``: through the proxy for ``mlflow-artifacts:``, else via the fetcher."""
        scheme = location.partition(":")[0].lower() if ":" in location else ""
        if scheme == "mlflow-artifacts":
            root = _artifacts_uri_path(source, location)
            self._download_tree(source, "/".join(p for p in (root, subpath) if p), dest, progress)
            return
        if scheme not in ("s3", "file") and not location.startswith("/"):
            raise InvalidParameterError(
                f"Source '{source}' is stored at '{location}', which the registry cannot read "
                "(it reads mlflow-artifacts:, s3:// and allowed local locations)"
            )
        target = f"{location.rstrip('/')}/{subpath}" if subpath else location
        try:
            self._copy(target, dest, progress)
        except InvalidParameterError as exc:
            raise InvalidParameterError(f"Source '{source}' is stored at '{target}': {exc.message}") from exc

    def _download_tree(self, source: str, path: str, dest: Path, progress: ProgressCallback | None) -> None:
        """Download a directory (recursively) or a single file of the proxied artifact store into ``dest``."""
        files = self._walk(source, path)
        if files:
            for rel in files:
                self.client.download_file(f"{path}/{rel}", dest.joinpath(*rel.parts), progress)
            return
        try:
            self.client.download_file(path, dest / posixpath.basename(path), progress)
        except (NotFoundError, InvalidParameterError):
            raise InvalidParameterError(f"Source '{source}' is empty or does not exist") from None

    def _walk(self, source: str, root: str) -> list[PurePosixPath]:
        """The files below ``root``, as sorted relative paths; bounded in files and depth."""
        found: list[PurePosixPath] = []
        pending: list[PurePosixPath] = [PurePosixPath()]
        while pending:
            directory = pending.pop()
            listed = self.client.list_artifacts(f"{root}/{directory}" if directory.parts else root)
            for entry in listed:
                rel = directory / _entry_name(source, entry.path)
                if len(rel.parts) > MAX_DEPTH:
                    raise InvalidParameterError(f"Source '{source}' is nested deeper than {MAX_DEPTH} directories")
                (pending if entry.is_dir else found).append(rel)
            if len(found) > MAX_FILES:
                raise InvalidParameterError(f"Source '{source}' has more than {MAX_FILES} files")
        return sorted(found)

    # -- source URIs

    def _artifacts_path(self, source: str) -> str:
        """The store path of a client's ``mlflow-artifacts:`` source; only the configured server's host."""
        parts = _split(source)
        if parts.netloc and not _same_host(parts, urlsplit(self.client.base_url)):
            raise InvalidParameterError(
                f"Source '{source}' names another tracking server; the registry reads mlflow-artifacts: "
                f"only through its own ({self.client.base_url})"
            )
        return _artifacts_uri_path(source, source)

    @contextmanager
    def _naming(self, source: str) -> Iterator[None]:
        """A run, logged model or artifact the tracking server does not have is a bad source."""
        try:
            yield
        except NotFoundError as exc:
            raise InvalidParameterError(f"Source '{source}': {exc.message}") from exc


def _split(source: str) -> SplitResult:
    try:
        parts = urlsplit(source)
        _ = parts.port
    except ValueError:
        raise InvalidParameterError(f"Source '{source}' is not a valid URI") from None
    if parts.query or parts.fragment:
        raise InvalidParameterError(f"Source '{source}' must not have a query or fragment")
    return parts


def _same_host(parts: SplitResult, base: SplitResult) -> bool:
    default = 443 if base.scheme == "https" else 80
    return bool(
        parts.hostname == base.hostname and (parts.port or default) == (base.port or default)
    )


def _artifacts_uri_path(source: str, uri: str) -> str:
    """The decoded, checked store path of an ``mlflow-artifacts:`` URI."""
    path = _checked_path(source, unquote(_split(uri).path).strip("/"))
    if not path:
        raise InvalidParameterError(f"Source '{source}' must name a path below the artifact root")
    return path


def _checked_path(source: str, path: str) -> str:
    """``path`` (possibly empty) unless it has NUL, ``.``, ``..`` or empty segments, also when decoded."""
    if not path:
        return ""
    try:
        safe_relpath(path)
        safe_relpath(unquote(path))
    except InvalidParameterError:
        raise InvalidParameterError(
            f"Source '{source}' has an invalid path: no '..', '.', empty segments or NUL bytes allowed"
        ) from None
    return path


def _entry_name(source: str, path: str) -> str:
    name = posixpath.basename(path)
    try:
        safe_relpath(name)
    except InvalidParameterError:
        raise InvalidParameterError(f"Source '{source}' lists an artifact that cannot be a file: {path!r}") from None
    return name


def _parse_runs_uri(source: str) -> tuple[str, str]:
    """``runs:/<run_id>/<path>`` → run id and the (possibly empty) run-relative path."""
    parts = _split(source)
    run_id, _, path = parts.path.removeprefix("/").partition("/")
    if parts.netloc or not parts.path.startswith("/") or not _RUN_ID.match(run_id):
        raise InvalidParameterError(f"Source '{source}' is not a runs:/<run_id>/<path> URI")
    return run_id, _checked_path(source, path.rstrip("/"))


def _logged_model_id(source: str) -> str:
    """The id of a ``models:/m-<id>`` source; registry URIs (``models:/<name>/<version>``, ``@alias``) are refused."""
    parts = _split(source)
    segments = parts.path.removeprefix("/").rstrip("/").split("/")
    if not parts.netloc and len(segments) == 1 and _MODEL_ID.match(segments[0]):
        return segments[0]
    if len(segments) == 2 or "@" in parts.path:
        raise InvalidParameterError(
            f"Source '{source}' names a registered model version; register from its source or the run instead"
        )
    raise InvalidParameterError(f"Source '{source}' is not a logged-model URI (models:/m-<id>)")


# -- evidence --------------------------------------------------------------------------------


def _run_evidence(run: Run) -> dict[str, Any]:
    return _evidence(run_metrics=_numbers(run.metrics), run_params=_strings(run.params))


def _model_evidence(model: LoggedModel) -> dict[str, Any]:
    return _evidence(model_metrics=_numbers(model.metrics), model_params=_strings(model.params))


def _evidence(**sections: dict[str, Any]) -> dict[str, Any]:
    return {name: values for name, values in sections.items() if values}


def _numbers(values: dict[str, float]) -> dict[str, float]:
    finite = {k: float(v) for k, v in sorted(values.items()) if math.isfinite(v)}
    return dict(list(finite.items())[:MAX_EVIDENCE_KEYS])


def _strings(values: dict[str, str]) -> dict[str, str]:
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in sorted(values.items())[:MAX_EVIDENCE_KEYS]}

