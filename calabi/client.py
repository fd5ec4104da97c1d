"""Fetch a registered model's files from Calabi without MLflow: ``fetch_model("models:/churn-predictor/3", dest)``.

For code that does not load models through an MLflow flavor (other languages' runtimes, plain
pickles, ONNX files); no mlflow needed, only ``httpx``. The model URI is resolved through Calabi's MLflow
registry routes, every file of the version is streamed from Calabi's artifact route (the same
one ``mlflow.<flavor>.load_model`` uses, so no storage credentials are needed) and the tree is
checked against the sha256 digest Calabi recorded at registration before it appears at ``dest``::

    from calabi.client import fetch_model
    model = fetch_model("models:/churn-predictor@champion", Path("/srv/models/churn"))
    print(model.version, model.digest, model.path)

The tracking URI and token default to ``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_TOKEN``
(``https://calabi.<domain>/mlflow`` or the server root; both work).
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
    "STAGES",
    "CalabiClientError",
    "FetchedModel",
    "IntegrityError",
    "ModelReference",
    "fetch_model",
    "parse_model_uri",
]

STAGES = ("None", "Staging", "Production", "Archived")
"""The registry's stages, as ``registry_store.stages.ALL_STAGES`` (a test keeps them equal; this needs httpx only)."""
_STAGE_BY_LOWER = {stage.lower(): stage for stage in STAGES}
_MLFLOW_ARTIFACTS = "mlflow-artifacts:/"
_CHUNK = 1024 * 1024
_MAX_DEPTH = 64
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class CalabiClientError(Exception):
    """A request to Calabi failed; the message carries MLflow's ``error_code`` and message when there is one."""


class IntegrityError(CalabiClientError):
    """The downloaded files do not match the digest Calabi recorded at registration (nothing was kept)."""


@dataclass(frozen=True)
class ModelReference:
    """A parsed ``models:/`` URI: exactly one of ``version``, ``stage``, ``alias`` or ``latest`` is set."""

    name: str
    version: int | None = None
    stage: str | None = None
    alias: str | None = None
    latest: bool = False


@dataclass(frozen=True)
class FetchedModel:
    """A downloaded and verified model version."""

    name: str
    version: int
    digest: str
    path: Path


def parse_model_uri(uri: str) -> ModelReference:
    """Parse ``models:/<name>/<version>``, ``/<stage>`` (any case), ``/latest`` or ``models:/<name>@<alias>``.

    Raises ValueError with a one-line message for anything else.
    """
    usage = "expected models:/<name>/<version>, models:/<name>/<stage>, models:/<name>/latest or models:/<name>@<alias>"
    if not isinstance(uri, str) or not uri.startswith("models:/") or uri.startswith("models://"):
        raise ValueError(f"Invalid model URI {uri!r}: {usage}")
    path = uri[len("models:/") :]
    parts = path.split("/")
    if len(parts) == 2:
        name, suffix = parts
        if not name.strip() or "@" in name or not suffix.strip():
            raise ValueError(f"Invalid model URI {uri!r}: {usage}")
        if suffix.isdigit():
            if int(suffix) < 1:
                raise ValueError(f"Invalid model URI {uri!r}: version numbers start at 1")
            return ModelReference(name, version=int(suffix))
        if suffix.lower() == "latest":
            return ModelReference(name, latest=True)
        if (stage := _STAGE_BY_LOWER.get(suffix.lower())) is not None:
            return ModelReference(name, stage=stage)
        raise ValueError(f"Invalid model URI {uri!r}: {suffix!r} is not a version, a stage ({', '.join(STAGES)}) "
                         "or 'latest'")
    if len(parts) == 1 and "@" in path:
        name, _, alias = path.rpartition("@")
        if name.strip() and "@" not in name and alias.strip():
            return ModelReference(name, alias=alias)
    raise ValueError(f"Invalid model URI {uri!r}: {usage}")


def fetch_model(
    uri: str, dest: Path, *, tracking_uri: str | None = None, token: str | None = None
) -> FetchedModel:
    """Resolve ``uri``, download the version's files to the new directory ``dest`` and verify their digest.

    ``dest`` must not exist (or be an empty directory). On any failure nothing is left at ``dest``;
    a digest mismatch raises :class:`IntegrityError`, a failed request :class:`CalabiClientError`.
    """
    ref = parse_model_uri(uri)
    base = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"Need the Calabi tracking URI (http(s)://…): pass tracking_uri or set MLFLOW_TRACKING_URI "
                         f"(got {base or 'nothing'!r})")
    token = token or os.environ.get("MLFLOW_TRACKING_TOKEN")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} already exists and is not an empty directory")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(headers=headers, timeout=_TIMEOUT, follow_redirects=True) as http:
        client = _Calabi(http, base)
        version = client.resolve(ref)
        artifact_path = client.artifact_path(ref.name, version)
        digest = client.recorded_digest(ref.name, version)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".{dest.name}.partial-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            client.download_tree(artifact_path, staging)
            _verify(staging, digest, f"Model '{ref.name}' version {version}")
            if dest.exists():
                dest.rmdir()
            staging.rename(dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return FetchedModel(ref.name, version, digest, dest)


def _verify(tree: Path, expected: str, what: str) -> None:
    from registry_store.artifacts.digest import manifest_digest, tree_manifest

    found = manifest_digest(tree_manifest(tree))
    if found != expected:
        raise IntegrityError(f"{what}: the downloaded files have digest {found}, Calabi recorded {expected} at "
                             "registration; nothing was kept")


class _Calabi:
    """The few requests ``fetch_model`` makes, with MLflow's error messages surfaced."""

    def __init__(self, http: httpx.Client, tracking_uri: str) -> None:
        self.http = http
        self.registry = f"{tracking_uri}/api/2.0/mlflow"
        self.artifacts = f"{tracking_uri}/api/2.0/mlflow-artifacts/artifacts"
        # Calabi's own API lives at the server root, also when the tracking URI ends in /mlflow.
        self.v1 = f"{re.sub(r'/mlflow$', '', tracking_uri)}/api/v1"

    def resolve(self, ref: ModelReference) -> int:
        """The version number ``ref`` names now."""
        if ref.version is not None:
            return ref.version
        if ref.alias is not None:
            found = self._json("GET", f"{self.registry}/registered-models/alias", name=ref.name, alias=ref.alias)
            return int(found["model_version"]["version"])
        body: dict[str, Any] = {"name": ref.name, **({"stages": [ref.stage]} if ref.stage else {})}
        latest = self._json("POST", f"{self.registry}/registered-models/get-latest-versions", json=body)
        versions = [int(v["version"]) for v in latest.get("model_versions", [])]
        if not versions:
            where = f"in stage '{ref.stage}'" if ref.stage else "at all"
            raise CalabiClientError(f"Model '{ref.name}' has no version {where}")
        return max(versions)

    def artifact_path(self, name: str, version: int) -> str:
        """The version's path in the ``mlflow-artifacts`` namespace Calabi serves."""
        found = self._json("GET", f"{self.registry}/model-versions/get-download-uri", name=name, version=str(version))
        uri = str(found.get("artifact_uri", ""))
        if not uri.startswith(_MLFLOW_ARTIFACTS) or not uri[len(_MLFLOW_ARTIFACTS) :].strip("/"):
            raise CalabiClientError(f"Model '{name}' version {version}: Calabi answered download URI {uri!r}, "
                                    f"not an {_MLFLOW_ARTIFACTS} URI it serves")
        return uri[len(_MLFLOW_ARTIFACTS) :].strip("/")

    def recorded_digest(self, name: str, version: int) -> str:
        """The tree digest Calabi recorded at registration."""
        found = self._json("GET", f"{self.v1}/models/{quote(name, safe='')}/versions/{version}")
        return str(found["digest"])

    def download_tree(self, root: str, target: Path) -> None:
        """Stream every file below ``root`` into ``target`` (directories walked with an explicit stack)."""
        pending = [""]
        while pending:
            rel = pending.pop()
            listed = self._json("GET", self.artifacts, path=posixpath.join(root, rel) if rel else root)
            for entry in listed.get("files", []):
                name = posixpath.basename(str(entry["path"]).rstrip("/"))
                if name in ("", ".", "..") or "\\" in name:
                    raise CalabiClientError(f"Calabi listed an unsafe artifact name {entry['path']!r}")
                child = f"{rel}/{name}" if rel else name
                if child.count("/") >= _MAX_DEPTH:
                    raise CalabiClientError(f"Artifact tree deeper than {_MAX_DEPTH} levels at {child!r}")
                if entry.get("is_dir"):
                    pending.append(child)
                else:
                    self._download(f"{root}/{child}", target / child)

    def _download(self, path: str, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        url = f"{self.artifacts}/{quote(path)}"
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    raise _error(response)
                with out.open("wb") as handle:
                    for chunk in response.iter_bytes(_CHUNK):
                        handle.write(chunk)
        except httpx.TransportError as exc:
            raise CalabiClientError(f"GET {url}: {type(exc).__name__}: {exc}") from exc

    def _json(self, method: str, url: str, *, json: Any = None, **params: str) -> dict[str, Any]:
        try:
            response = self.http.request(method, url, params=params or None, json=json)
        except httpx.TransportError as exc:
            raise CalabiClientError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise _error(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CalabiClientError(f"{method} {url}: expected a JSON object, got {response.text[:200]!r}")
        return body


def _error(response: httpx.Response) -> CalabiClientError:
    """MLflow's ``error_code: message`` (or the start of the body) for a failed request; DATA_LOSS is IntegrityError."""
    request = response.request
    code, message = "", " ".join(response.text.split())[:300]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code, message = str(body.get("error_code", "")), body["message"]
    kind = IntegrityError if code == "DATA_LOSS" else CalabiClientError
    prefix = f"{code}: " if code else ""
    return kind(f"{request.method} {request.url.copy_with(query=None)} answered {response.status_code}: "
                f"{prefix}{message}")
