"""The MLflow tracking gateway: tracking routes under ``/mlflow`` (and at the root) go to the tracking server.

Calabi authenticates the caller first (GET/HEAD: viewer, other methods: engineer), then streams
the request to ``CALABI_MLFLOW_TRACKING_URL`` and the answer back, bodies never held in memory.
Registry paths are never forwarded (the tracking server's own registry must stay unused), and the
``calabi-registry`` artifact namespace is answered by Calabi itself, also when tracking is down.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from calabi.api.deps import request_actor, request_id
from calabi.api.errors import error_response
from calabi.api.registry_artifacts import serve_registry_artifacts
from calabi.bootstrap import Services
from registry_store.redaction import redact_url
from registry_store.users import require_role

__all__ = ["TrackingGateway", "gateway_lifespan", "gateway_router"]

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "trailers", "upgrade", "proxy-connection"}
)
_REQUEST_DROPPED = HOP_BY_HOP | {"host", "authorization", "expect", "x-request-id"}
_RESPONSE_DROPPED = HOP_BY_HOP | {"date", "server", "x-request-id"}
_REGISTRY_OWNED = re.compile(r"^/(?:ajax-)?api/[^/]+/mlflow/(?:registered-models|model-versions|webhooks)(?:/|$)")
_VIEWER_POSTS = frozenset(
    f"/api/2.0/mlflow/{what}/search" for what in ("runs", "experiments", "logged-models")
)
SERVER_INFO = "/api/3.0/mlflow/server-info"
TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=600.0, pool=30.0)


class TrackingGateway:
    """One ``httpx.AsyncClient`` per app (per event loop), created on first use."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        """The shared client (a new one if the event loop changed, as under Starlette's TestClient)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the client (at shutdown)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None


@asynccontextmanager
async def gateway_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Close the gateway's client on shutdown."""
    try:
        yield
    finally:
        gateway: TrackingGateway | None = getattr(app.state, "tracking_gateway", None)
        if gateway is not None:
            await gateway.aclose()


def gateway_router() -> APIRouter:
    """Catch-all routes; include them after every Calabi route so registry routes keep winning."""
    router = APIRouter(include_in_schema=False)
    paths = ["/mlflow", "/mlflow/{rest:path}", "/api/2.0/mlflow/{rest:path}", "/api/3.0/mlflow/{rest:path}",
             "/api/2.0/mlflow-artifacts/{rest:path}"]
    for path in paths:
        router.add_api_route(path, gateway, methods=METHODS, name=f"tracking_gateway{path}")
    return router


async def gateway(request: Request) -> Response:
    """Refuse registry paths, serve ``calabi-registry/…``, forward everything else to the tracking server."""
    path = request.url.path
    upstream_path = (path[len("/mlflow"):] if path == "/mlflow" or path.startswith("/mlflow/") else path) or "/"
    if _REGISTRY_OWNED.match(upstream_path):
        return error_response(
            404, "ENDPOINT_NOT_FOUND",
            f"Calabi's model registry has no route {request.method} {path}; registry requests are never "
            "forwarded to the tracking server.",
        )
    if any(segment in (".", "..") for segment in upstream_path.split("/")) or "//" in upstream_path:
        return error_response(400, "INVALID_PARAMETER_VALUE", f"Path '{path}' has empty, '.' or '..' segments.")
    served = await serve_registry_artifacts(request, upstream_path)
    if served is not None:
        return served
    services: Services = request.app.state.services
    actor = await request_actor(request, services)
    if request.method in ("GET", "HEAD", "OPTIONS") or (request.method == "POST" and upstream_path in _VIEWER_POSTS):
        require_role(actor, "viewer", "read from the MLflow tracking server")
    else:
        require_role(actor, "engineer", "write to the MLflow tracking server")
    return await _forward(request, services, upstream_path)


async def _forward(request: Request, services: Services, upstream_path: str) -> Response:
    base = services.settings.mlflow_tracking_url
    if not base:
        return error_response(
            501, "NOT_IMPLEMENTED",
            "No MLflow tracking server is configured (CALABI_MLFLOW_TRACKING_URL); "
            f"Calabi serves only the model registry, so {request.method} {request.url.path} has nowhere to go.",
        )
    base = base.rstrip("/")
    caller_request = request_id(request)
    url = httpx.URL(base + quote(upstream_path, safe="/!$&'()*+,;=:@-._~"), query=request.scope["query_string"])
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    gateway_state: TrackingGateway = request.app.state.tracking_gateway
    client = gateway_state.client()
    upstream_request = client.build_request(
        request.method, url, headers=_request_headers(request, services, caller_request),
        content=request.stream() if has_body else None,
    )
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        return error_response(
            503, "TEMPORARILY_UNAVAILABLE",
            redact_url(f"MLflow tracking server at {base} is unavailable: {type(exc).__name__}: {exc}".rstrip(": ")),
        )
    except ClientDisconnect:
        return error_response(400, "INVALID_PARAMETER_VALUE", "The client disconnected during the upload.")
    if request.method == "GET" and upstream_path == SERVER_INFO and upstream.status_code == 200:
        return await _server_info(upstream, caller_request)
    return _UpstreamResponse(upstream, _response_headers(upstream, caller_request))


def _request_headers(request: Request, services: Services, caller_request: str) -> list[tuple[str, str]]:
    listed = _connection_listed(request.headers.getlist("connection"))
    headers = [
        (name, value) for name, value in request.headers.items()
        if name not in _REQUEST_DROPPED and name not in listed and not name.startswith("proxy-")
    ]
    if "accept-encoding" not in request.headers:  # else httpx asks for gzip the caller never agreed to
        headers.append(("accept-encoding", "identity"))
    headers.append(("x-request-id", caller_request))
    if (secret := services.settings.mlflow_tracking_token) is not None:
        headers.append(("authorization", f"Bearer {secret.get_secret_value()}"))
    return headers


def _response_headers(upstream: httpx.Response, caller_request: str) -> list[tuple[bytes, bytes]]:
    """Upstream headers minus hop-by-hop ones; content-length and content-encoding stay (the body is raw)."""
    listed = _connection_listed(upstream.headers.get_list("connection"))
    kept = [
        (name.lower(), value) for name, value in upstream.headers.raw
        if (lowered := name.decode("latin-1").lower()) not in _RESPONSE_DROPPED and lowered not in listed
        and not lowered.startswith("proxy-")
    ]
    return [*kept, (b"x-request-id", caller_request.encode("latin-1"))]


def _connection_listed(values: list[str]) -> set[str]:
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


async def _server_info(upstream: httpx.Response, caller_request: str) -> Response:
    """server-info with multipart downloads off: ``calabi-registry/…`` has no presigned URLs (the client
    would fail rather than fall back), so loaders always download through the gateway."""
    try:
        document = json.loads(await upstream.aread())
    finally:
        await upstream.aclose()
    if isinstance(document, dict):
        document["multipart_downloads_enabled"] = False
    return JSONResponse(document, headers={"X-Request-ID": caller_request})


class _UpstreamResponse(StreamingResponse):
    """The upstream body as it arrived (``aiter_raw``: no decompression); the upstream is closed at the end."""

    def __init__(self, upstream: httpx.Response, raw_headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(upstream.aiter_raw(), status_code=upstream.status_code)
        self.raw_headers = raw_headers
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._upstream.aclose()
