"""The MLflow tracking gateway: allow-listed tracking routes under ``/mlflow`` (and at the root) reach the tracker.

Calabi authenticates the caller first (reads: viewer, writes: engineer), then streams the request to
``CALABI_MLFLOW_TRACKING_URL`` and the answer back. Only the routes of ``tracking_routes.ROUTES`` are
forwarded (any other is ``404 ENDPOINT_NOT_FOUND``); the JSON body of a write is read (bounded),
checked (no client-chosen artifact location) and forwarded as parsed; artifact bytes are streamed,
never held in memory. The tracking server sees the caller's address (``X-Forwarded-For``/``-Proto``),
never its cookies or token, and every successful write is an audit event. Registry paths are never
forwarded, and the ``calabi-registry`` artifact namespace is answered by Calabi itself. A run created
through the gateway has the signed-in user as its author (``policies.run_authorship``: ``user_id``,
``mlflow.user`` and ``calabi.author`` stamped, whatever the client sent); later writes of ``mlflow.user``
or any ``calabi.*`` run tag are refused (403).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from calabi.api.deps import request_actor, request_id
from calabi.api.errors import error_response
from calabi.api.registry_artifacts import serve_registry_artifacts
from calabi.api.tracking_routes import artifact_location_problem, match_route, run_operation, written_ids
from calabi.bootstrap import Services
from calabi.metrics import GATEWAY_UPSTREAM_ERRORS
from policies.run_authorship import reserved_tag_refusal, stamped_run_create
from registry_store.redaction import redact_url
from registry_store.users import require_role

__all__ = ["TrackingGateway", "gateway_lifespan", "gateway_router"]

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "trailers", "upgrade", "proxy-connection"}
)
_REQUEST_DROPPED = HOP_BY_HOP | {"host", "authorization", "cookie", "expect", "x-request-id", "forwarded", "x-real-ip"}
_BODY_HEADERS = frozenset({"content-length", "content-type", "content-encoding", "accept-encoding"})
"""Headers of a caller's JSON body, replaced when the gateway forwards the parsed body instead."""
_RESPONSE_DROPPED = HOP_BY_HOP | {"date", "server", "set-cookie", "x-request-id"}
_REGISTRY_OWNED = re.compile(r"^/(?:ajax-)?api/[^/]+/mlflow/(?:registered-models|model-versions|webhooks)(?:/|$)")
SERVER_INFO = "/api/3.0/mlflow/server-info"
MAX_JSON_BODY = 4 * 1024 * 1024
"""Largest JSON body of a tracking write (a full ``log-batch`` is under 2 MB)."""
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
            no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # shared by all callers
            self._client = httpx.AsyncClient(
                timeout=TIMEOUT, follow_redirects=False, trust_env=False, cookies=no_cookies
            )
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
    """Refuse registry paths, serve ``calabi-registry/…``, forward allow-listed tracking routes."""
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
    allowed = match_route(request.method, upstream_path)
    if allowed is None:
        return error_response(
            404, "ENDPOINT_NOT_FOUND",
            f"No route {request.method} {path}: Calabi's tracking gateway forwards only experiments, runs, "
            "metrics, params, tags, logged models and run artifacts to the tracking server.",
        )
    route, found = allowed
    services: Services = request.app.state.services
    actor = await request_actor(request, services)
    if not route.write:
        require_role(actor, "viewer", "read from the MLflow tracking server")
        return await _forward(request, services, upstream_path)
    require_role(actor, "engineer", "write to the MLflow tracking server")
    body: dict[str, Any] = {}
    if route.json_body:
        read = await _json_body(request)
        if isinstance(read, Response):
            return read
        if (problem := artifact_location_problem(read)) is not None:
            return error_response(400, "INVALID_PARAMETER_VALUE", problem)
        operation = run_operation(upstream_path)
        if (refused := reserved_tag_refusal(operation, read)) is not None:
            return error_response(403, "PERMISSION_DENIED", refused)
        body = stamped_run_create(read, actor.name) if operation == "create" else read
    sent = await _send(request, services, upstream_path, body if route.json_body else None)
    if isinstance(sent, Response):
        return sent
    answer = await _buffered(sent, request_id(request)) if route.json_body else None
    if sent.is_success:
        ids = written_ids(found, body, bytes(answer.body) if answer is not None else b"")
        await run_in_threadpool(
            services.registry.audit.record_tracking_write, actor, f"{request.method} {upstream_path}",
            run_id=ids.run_id, experiment_id=ids.experiment_id, model_id=ids.model_id,
        )
    return answer if answer is not None else _UpstreamResponse(sent, _response_headers(sent, request_id(request)))


async def _json_body(request: Request) -> dict[str, Any] | Response:
    """The JSON object of a write (at most ``MAX_JSON_BODY`` bytes; none is ``{}``), or the refusal."""
    too_big = error_response(
        413, "INVALID_PARAMETER_VALUE", f"A tracking request body may be at most {MAX_JSON_BODY} bytes."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BODY:
        return too_big
    data = bytearray()
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_JSON_BODY:
                return too_big
    except ClientDisconnect:
        return error_response(400, "INVALID_PARAMETER_VALUE", "The client disconnected during the upload.")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return error_response(400, "INVALID_PARAMETER_VALUE", "The request body must be a JSON object.")
    return body


async def _forward(request: Request, services: Services, upstream_path: str) -> Response:
    """A read: the upstream answer streamed back (server-info with multipart downloads off)."""
    sent = await _send(request, services, upstream_path, None)
    if isinstance(sent, Response):
        return sent
    caller_request = request_id(request)
    if request.method == "GET" and upstream_path == SERVER_INFO and sent.status_code == 200:
        return await _server_info(sent, caller_request)
    return _UpstreamResponse(sent, _response_headers(sent, caller_request))


async def _send(
    request: Request, services: Services, upstream_path: str, json_body: dict[str, Any] | None
) -> httpx.Response | Response:
    """Send the request upstream (``json_body`` instead of the caller's bytes when given); the streamed answer."""
    base = services.settings.mlflow_tracking_url
    if not base:
        return error_response(
            501, "NOT_IMPLEMENTED",
            "No MLflow tracking server is configured (CALABI_MLFLOW_TRACKING_URL); "
            f"Calabi serves only the model registry, so {request.method} {request.url.path} has nowhere to go.",
        )
    base = base.rstrip("/")
    url = httpx.URL(base + quote(upstream_path, safe="/!$&'()*+,;=:@-._~"), query=request.scope["query_string"])
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    content: bytes | AsyncIterator[bytes] | None = request.stream() if has_body else None
    if json_body is not None:
        content = json.dumps(json_body).encode()
    gateway_state: TrackingGateway = request.app.state.tracking_gateway
    client = gateway_state.client()
    headers = _request_headers(request, services, request_id(request), json_body=json_body is not None)
    try:
        sent = await client.send(client.build_request(request.method, url, headers=headers, content=content),
                                 stream=True)
    except httpx.HTTPError as exc:
        GATEWAY_UPSTREAM_ERRORS.labels(kind="unreachable").inc()
        return error_response(
            503, "TEMPORARILY_UNAVAILABLE",
            redact_url(f"MLflow tracking server at {base} is unavailable: {type(exc).__name__}: {exc}".rstrip(": ")),
        )
    except ClientDisconnect:
        return error_response(400, "INVALID_PARAMETER_VALUE", "The client disconnected during the upload.")
    if sent.status_code >= 500:
        GATEWAY_UPSTREAM_ERRORS.labels(kind="status_5xx").inc()
    return sent


async def _buffered(upstream: httpx.Response, caller_request: str) -> Response:
    """A write's (small JSON) answer read whole, so the ids it names can be audited."""
    try:
        data = b"".join([chunk async for chunk in upstream.aiter_raw()])
    finally:
        await upstream.aclose()
    response = Response(data, status_code=upstream.status_code)
    kept = [h for h in _response_headers(upstream, caller_request) if h[0] != b"content-length"]
    response.raw_headers = [*kept, (b"content-length", str(len(data)).encode())]
    return response


def _request_headers(
    request: Request, services: Services, caller_request: str, *, json_body: bool
) -> list[tuple[str, str]]:
    """The caller's end-to-end headers minus credentials, cookies and forwarding claims, plus Calabi's own."""
    listed = _connection_listed(request.headers.getlist("connection"))
    dropped = _REQUEST_DROPPED | (_BODY_HEADERS if json_body else frozenset())
    headers = [
        (name, value) for name, value in request.headers.items()
        if name not in dropped and name not in listed and not name.startswith(("proxy-", "x-forwarded-"))
    ]
    if json_body:  # the answer is read whole and must be the bytes sent: no compression
        headers.append(("content-type", "application/json"))
    if json_body or "accept-encoding" not in request.headers:  # else httpx asks for gzip the caller never agreed to
        headers.append(("accept-encoding", "identity"))
    if request.client is not None:
        headers.append(("x-forwarded-for", request.client.host))
    headers += [("x-forwarded-proto", request.url.scheme), ("x-request-id", caller_request)]
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
