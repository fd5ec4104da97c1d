"""Registration sources resolved through the MLflow tracking server: ``runs:/…``, ``models:/m-…`` and
``mlflow-artifacts:/…`` are copied into a staging directory.

Artifacts stored behind the tracking server's proxy (``mlflow-artifacts:``) are downloaded through
it; other artifact locations (``s3://``, allowed local paths) are handed back to the
:class:`~registry_store.artifacts.sources.SourceFetcher`, so the registry's own rules for them
apply. Run and logged-model numbers come back as evidence.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from registry_store.artifacts._tree import ProgressCallback, safe_relpath
from registry_store.artifacts.mlmodel import MLMODEL_FILE
from registry_store.artifacts.sources import SourceFacts
from registry_store.artifacts.tracking_client import LoggedModel, Run, TrackingClient
from registry_store.errors import InvalidParameterError, NotFoundError

__all__ = ["CopySource", "TrackingSourceResolver"]

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
        if not model.registrable:
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
    return parts.hostname == base.hostname and (parts.port or default) == (base.port or default)


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
    """The first MAX_EVIDENCE_KEYS by name (the client kept only finite values)."""
    return dict(sorted(values.items())[:MAX_EVIDENCE_KEYS])


def _strings(values: dict[str, str]) -> dict[str, str]:
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in sorted(values.items())[:MAX_EVIDENCE_KEYS]}

