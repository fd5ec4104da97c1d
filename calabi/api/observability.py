"""Per-request observation (request id, metrics by route template, the access log line) and ``/metrics``."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from calabi.api.deps import ServicesDep, request_actor
from calabi.metrics import HTTP_DURATION, HTTP_REQUESTS, UNMATCHED_ROUTE, PromotionsByStatus, exposition
from calabi.request_context import REQUEST_ID_KEY, ROUTE_KEY, end_request, start_request
from registry_store.users import require_role

__all__ = ["RequestObservation", "metrics_router", "route_template"]

access_log = logging.getLogger("calabi.access")


def route_template(scope: Scope) -> str:
    """The template of the route that answered (``/api/v1/models/{name}``), never the raw path: a label with a
    bounded set of values. A request no route matched is ``<unmatched>``."""
    explicit = scope.get(ROUTE_KEY)
    if isinstance(explicit, str):
        return explicit
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestObservation:
    """ASGI middleware (outermost): gives each request its id, counts and times it by route template, and
    writes one ``calabi.access`` log line (INFO) while the request is current for the log records."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = (headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex)[:64]
        scope[REQUEST_ID_KEY] = request_id
        context, token = start_request(request_id)
        status = 500
        started = time.perf_counter()

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            route, method = route_template(scope), scope["method"]
            context.route = route
            HTTP_REQUESTS.labels(route=route, method=method, status=str(status)).inc()
            HTTP_DURATION.labels(route=route, method=method).observe(elapsed)
            access_log.info("%s %s %d %.1f ms", method, route, status, elapsed * 1000)
            end_request(token)


def metrics_router() -> APIRouter:
    """``GET /metrics``: public with ``CALABI_METRICS_PUBLIC=true``, else for an admin's token."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request, services: ServicesDep) -> Response:
        if not services.settings.metrics_public:
            require_role(await request_actor(request, services), "admin", "read the metrics")
        collector = PromotionsByStatus(services.registry.promotions.status_counts)
        body: Any = await run_in_threadpool(exposition, collector)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
