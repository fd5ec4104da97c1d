"""The tracking gateway's allow-list: which MLflow tracking routes Calabi forwards, and what a write names.

Only what the seed's ``mlflow`` client needs is on the list: experiments, runs (metrics, params,
tags, inputs, outputs), metric history, logged models, server-info and run artifacts through the
tracking server's ``mlflow-artifacts`` proxy. MLflow's assistant, AI gateway, jobs, traces,
datasets, scorers, workspaces, presigned URLs, multipart uploads, ``ajax-api`` and its web UI are not.
A client may not choose where the tracking server writes: an ``artifact_location`` (or
``artifact_uri``) other than an ``mlflow-artifacts:/`` path of the proxy is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from calabi.api.registry_artifacts import NAMESPACE

__all__ = ["TrackingRoute", "TrackingWrite", "artifact_location_problem", "match_route", "run_operation", "written_ids"]

_V2 = r"/api/2\.0/mlflow"
_ID = r"[^/]+"
_ARTIFACT_PATH = r"/api/2\.0/mlflow-artifacts/artifacts/(?P<artifact>.+)"
_RUN_OPERATION = re.compile(rf"^{_V2}/runs/(?P<operation>[^/]+)$")


@dataclass(frozen=True)
class TrackingRoute:
    """Forwarded methods of one path pattern; ``write`` routes need the engineer role and are audited."""

    methods: frozenset[str]
    pattern: re.Pattern[str]
    write: bool

    @property
    def json_body(self) -> bool:
        """A write whose body is an MLflow JSON request (checked before it is forwarded), not artifact bytes."""
        return self.write and "artifact" not in self.pattern.groupindex


def _route(methods: str, pattern: str, *, write: bool) -> TrackingRoute:
    return TrackingRoute(frozenset(methods.split()), re.compile(f"^{pattern}$"), write)


ROUTES = (
    _route("GET", rf"{_V2}/experiments/(?:get|get-by-name|search)", write=False),
    _route("GET", rf"{_V2}/(?:runs/get|metrics/get-history|metrics/get-history-bulk-interval|artifacts/list)",
           write=False),
    _route("GET", rf"{_V2}/logged-models/(?P<model>{_ID})(?:/artifacts/directories)?", write=False),
    _route("POST", rf"{_V2}/(?:experiments|runs|logged-models)/search", write=False),
    _route("GET", r"/api/3\.0/mlflow/server-info", write=False),
    _route("GET", r"/api/2\.0/mlflow-artifacts/artifacts", write=False),
    _route("GET", _ARTIFACT_PATH, write=False),
    _route("POST", rf"{_V2}/experiments/(?:create|update|delete|restore|set-experiment-tag|delete-experiment-tag)",
           write=True),
    _route("POST", rf"{_V2}/runs/(?:create|update|delete|restore|log-metric|log-parameter|log-batch|log-model|"
                   r"log-inputs|outputs|set-tag|delete-tag)", write=True),
    _route("POST", rf"{_V2}/logged-models", write=True),
    _route("PATCH DELETE", rf"{_V2}/logged-models/(?P<model>{_ID})", write=True),
    _route("POST", rf"{_V2}/logged-models/(?P<model>{_ID})/params", write=True),
    _route("PATCH", rf"{_V2}/logged-models/(?P<model>{_ID})/tags", write=True),
    _route("DELETE", rf"{_V2}/logged-models/(?P<model>{_ID})/tags/{_ID}", write=True),
    _route("PUT DELETE", _ARTIFACT_PATH, write=True),
)
"""The allow-list (paths as the tracking server sees them, without ``/mlflow``)."""

_LOCATION_FIELDS = frozenset({"artifactlocation", "artifacturi"})
"""Body fields naming where artifacts go, compared without ``_`` and case (protobuf's parser takes both spellings)."""


def match_route(method: str, path: str) -> tuple[TrackingRoute, re.Match[str]] | None:
    """The allow-listed route of ``method path`` and its match, or None."""
    for route in ROUTES:
        if method in route.methods and (found := route.pattern.match(path)) is not None:
            return route, found
    return None


def run_operation(path: str) -> str:
    """The run operation a path names (``create``, ``set-tag``, ``log-batch`` …), or ``""``."""
    found = _RUN_OPERATION.match(path)
    return found["operation"] if found else ""


def artifact_location_problem(body: dict[str, Any]) -> str | None:
    """Why a request body's artifact location is refused (None: absent, or an ``mlflow-artifacts:/`` path)."""
    for key, value in body.items():
        if key.replace("_", "").lower() not in _LOCATION_FIELDS or value in (None, ""):
            continue
        if not isinstance(value, str):
            return f"'{key}' must be a string."
        parts = urlsplit(value)
        segments = parts.path.split("/")
        if parts.scheme != "mlflow-artifacts" or parts.netloc or parts.query or parts.fragment or "\\" in value:
            return (f"'{key}' may only be an 'mlflow-artifacts:/…' path of the tracking server's artifact proxy "
                    f"(or left out), not '{value}': the tracking server writes artifacts only under its own root.")
        if any(s in (".", "..") for s in segments) or (segments[1:2] == [NAMESPACE]):
            return f"'{key}' may not contain '.' or '..' segments or name the '{NAMESPACE}' namespace: '{value}'."
    return None


@dataclass(frozen=True)
class TrackingWrite:
    """What an audited tracking write names."""

    run_id: str = ""
    experiment_id: str = ""
    model_id: str = ""


def written_ids(found: re.Match[str], request_body: dict[str, Any], answer: bytes) -> TrackingWrite:
    """The run, experiment and logged model a successful write touched (from its path, request and answer)."""
    groups = found.groupdict()
    try:
        response_body = json.loads(answer) if answer else {}
    except ValueError:
        response_body = {}
    if not isinstance(response_body, dict):
        response_body = {}
    run_id = _text(request_body.get("run_id") or request_body.get("run_uuid"))
    experiment_id = _text(request_body.get("experiment_id") or response_body.get("experiment_id"))
    model_id = groups.get("model") or ""
    info = _section(_section(response_body, "run"), "info") or _section(_section(response_body, "model"), "info")
    run_id = run_id or _text(info.get("run_id"))
    experiment_id = experiment_id or _text(info.get("experiment_id"))
    model_id = model_id or _text(info.get("model_id"))
    if artifact := groups.get("artifact"):  # <experiment>/<run>/artifacts/… or <experiment>/models/<model>/…
        parts = artifact.split("/")
        experiment_id = parts[0]
        if parts[1:2] == ["models"] and len(parts) > 2:
            model_id = parts[2]
        elif len(parts) > 2 and parts[2] == "artifacts":
            run_id = parts[1]
    return TrackingWrite(run_id=run_id, experiment_id=experiment_id, model_id=model_id)


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
