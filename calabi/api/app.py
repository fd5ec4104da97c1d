"""The FastAPI application: MLflow routes (root and ``/mlflow``, served ahead of the router), ``/api/v1``,
pages, /health, /ready, /metrics and, last, the tracking gateway (its catch-all routes must come after every
Calabi route). Every request passes ``RequestObservation`` first (request id, metrics, access log)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from calabi.api.access_routes import access_router
from calabi.api.errors import install_error_handlers
from calabi.api.mlflow_routes import MlflowRegistryRoutes, mlflow_openapi_paths
from calabi.api.observability import RequestObservation, metrics_router
from calabi.api.pages import pages_router, pages_static
from calabi.api.promotion_routes import promotion_router
from calabi.api.review_routes import review_router
from calabi.api.tracking_gateway import TrackingGateway, gateway_lifespan, gateway_router
from calabi.api.upload_routes import upload_router
from calabi.api.v1_routes import v1_router
from calabi.api.webhook_routes import webhook_router
from calabi.bootstrap import Services
from calabi.readiness import readiness
from calabi.tracing import instrument_app

__all__ = ["create_app"]


def create_app(services: Services) -> FastAPI:
    """Build the app around already-built services."""
    app = FastAPI(
        title="Calabi Registry", version="0.1.0", docs_url="/docs", redoc_url=None, lifespan=gateway_lifespan
    )
    app.state.services = services
    app.state.tracking_gateway = TrackingGateway()
    install_error_handlers(app)
    app.add_middleware(MlflowRegistryRoutes, services=services)
    app.add_middleware(RequestObservation)  # outermost: sees every request, the MLflow routes' too
    app.include_router(v1_router)
    app.include_router(access_router)
    app.include_router(promotion_router)
    app.include_router(review_router)
    app.include_router(upload_router)
    app.include_router(webhook_router)
    app.mount("/ui/static", pages_static, name="ui-static")  # before pages_router: its /ui/{rest} is the 404 page
    app.include_router(pages_router)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        state = await readiness(services)
        return JSONResponse(state.as_json(), status_code=200 if state.ready else 503)

    app.include_router(metrics_router())
    app.include_router(gateway_router())  # last: forwards what no route above claimed

    def openapi() -> dict[str, Any]:
        schema = app.openapi_schema
        if schema is None:  # FastAPI.openapi builds the schema and caches it on the app
            schema = FastAPI.openapi(app)
            schema["paths"] = mlflow_openapi_paths() | schema["paths"]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    instrument_app(app)
    return app
