"""The ``calabi-registry`` namespace of ``/api/2.0/mlflow-artifacts``: registry copies served to loaders.

``get-download-uri`` answers ``mlflow-artifacts:/calabi-registry/<artifact id>``; the mlflow client
resolves it against its tracking URI and lists (``GET …/artifacts?path=calabi-registry/<id>/<dir>``)
and downloads (``GET …/artifacts/calabi-registry/<id>/<file>``) here. The namespace is read-only.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from calabi.api.deps import request_actor, request_id
from calabi.api.errors import error_response
from calabi.bootstrap import Services
from registry_store.artifact_service import VerifiedFile
from registry_store.artifacts._tree import CHUNK_SIZE
from registry_store.errors import NotFoundError

__all__ = ["NAMESPACE", "serve_registry_artifacts"]

NAMESPACE = "calabi-registry"
_ARTIFACTS = re.compile(r"^/(?:ajax-)?api/2\.0/mlflow-artifacts/(?P<tail>.*)$")
_READ = ("GET", "HEAD")


async def serve_registry_artifacts(request: Request, path: str) -> Response | None:
    """Answer a request aimed at ``calabi-registry/…`` (``path`` without ``/mlflow``); None for any other path."""
    target = _namespace_target(request, path)
    if target is None:
        return None
    op, parts = target
    if request.method not in _READ:
        return error_response(
            403, "PERMISSION_DENIED",
            f"'{NAMESPACE}/…' holds Calabi's registry copies and is read-only; register a new model version "
            "instead of uploading or deleting artifacts there.",
        )
    if op == "presigned":  # 501 makes a client that forced multipart downloads fall back to the proxy
        return error_response(501, "NOT_IMPLEMENTED", f"'{NAMESPACE}/…' is served through this API only.")
    if op != "artifacts":
        return error_response(404, "ENDPOINT_NOT_FOUND", f"No {request.method} route {path} for '{NAMESPACE}/…'.")
    if len(parts) < 2 or not parts[1]:
        raise NotFoundError(f"Name a registry artifact id: '{NAMESPACE}/<artifact id>/…'.")
    artifact_id, rest = parts[1], "/".join(parts[2:])
    services: Services = request.app.state.services
    actor = await request_actor(request, services)
    if path.endswith("/mlflow-artifacts/artifacts"):
        entries = await run_in_threadpool(services.registry.artifacts.list_registry_artifacts, actor, artifact_id, rest)
        files = [
            {"path": e.path, "is_dir": e.is_dir, **({} if e.file_size is None else {"file_size": e.file_size})}
            for e in entries
        ]
        return JSONResponse({"files": files}, headers={"X-Request-ID": request_id(request)})
    if not rest:
        raise NotFoundError(f"'{NAMESPACE}/{artifact_id}' is a directory; name a file below it.")
    verified = await run_in_threadpool(services.registry.artifacts.open_registry_artifact, actor, artifact_id, rest)
    return _VerifiedFileResponse(verified, request_id(request))


def _namespace_target(request: Request, path: str) -> tuple[str, list[str]] | None:
    """``(operation, ["calabi-registry", id, …])`` when the request addresses the namespace."""
    match = _ARTIFACTS.match(path)
    if match is None:
        return None
    segments = match["tail"].split("/")
    op_length = 2 if segments[0] == "mpu" else 1
    op, parts = "/".join(segments[:op_length]), segments[op_length:]
    if op == "artifacts" and not parts:  # listing (GET) or deleting (DELETE) by ?path=
        parts = request.query_params.get("path", "").split("/")
    if not parts or parts[0] != NAMESPACE:
        return None
    return op, parts


class _VerifiedFileResponse(StreamingResponse):
    """Streams a verified spool in chunks (in the threadpool) and always closes it."""

    def __init__(self, verified: VerifiedFile, caller_request: str) -> None:
        media_type = mimetypes.guess_type(verified.relpath)[0] or "application/octet-stream"
        super().__init__(
            _chunks(verified), media_type=media_type,
            headers={"Content-Length": str(verified.size), "X-Request-ID": caller_request},
        )
        self._verified = verified

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._verified.close()


def _chunks(verified: VerifiedFile) -> Iterator[bytes]:
    while chunk := verified.stream.read(CHUNK_SIZE):
        yield chunk
