"""The 21 MLflow model-registry routes: parse MLflow's request, call RegistryService, shape the reply.

The table at the bottom is the single source of truth for paths and methods; ``MlflowRegistryRoutes``
serves it at the root and under ``/mlflow``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from calabi.api.deps import client_address, note_actor, request_id, token_from_header
from calabi.api.errors import registry_error_response, unstorable_text_response
from calabi.api.mlflow_json import model_json, version_json
from calabi.api.mlflow_params import Params, read_params
from calabi.bootstrap import Services
from calabi.request_context import ROUTE_KEY
from policies.identity import PRODUCTION
from registry_store.audit import Actor
from registry_store.errors import RegistryError
from registry_store.service import RegistryService

__all__ = ["MLFLOW_ROUTES", "MlflowRegistryRoutes", "mlflow_openapi_paths"]

PREFIX = "/api/2.0/mlflow"


Handler = Callable[[RegistryService, Actor, Params], dict[str, Any]]


# ---------------------------------------------------------------------- handlers


def create_registered_model(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    rm = svc.models.create_registered_model(actor, name=p.require("name"), description=p.get("description"),
                                     tags=p.tags())
    return {"registered_model": model_json(rm)}


def get_registered_model(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    return {"registered_model": model_json(svc.models.get_registered_model(actor, p.require("name")))}


def rename_registered_model(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    rm = svc.models.rename_registered_model(actor, name=p.require("name"), new_name=p.require("new_name"))
    return {"registered_model": model_json(rm)}


def update_registered_model(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    rm = svc.models.update_registered_model(actor, name=p.require("name"), description=p.get("description"))
    return {"registered_model": model_json(rm)}


def delete_registered_model(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    svc.models.delete_registered_model(actor, p.require("name"))
    return {}


def search_registered_models(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    page = svc.models.search_registered_models(
        actor, filter_string=p.string("filter"), max_results=p.get("max_results") or 100,
        order_by=[str(o) for o in p.repeated("order_by")], page_token=p.string("page_token"),
    )
    body: dict[str, Any] = {"registered_models": [model_json(rm) for rm in page.items]}
    if page.next_page_token:
        body["next_page_token"] = page.next_page_token
    return body


def get_latest_versions(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    versions = svc.versions.get_latest_versions(actor, name=p.require("name"), stages=p.repeated("stages"))
    return {"model_versions": [version_json(v) for v in versions]}


def set_registered_model_tag(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    svc.models.set_registered_model_tag(actor, name=p.require("name"), key=p.require("key"), value=p.get("value"))
    return {}


def delete_registered_model_tag(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    svc.models.delete_registered_model_tag(actor, name=p.require("name"), key=p.require("key"))
    return {}


def set_registered_model_alias(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    svc.aliases.set_alias(actor, name=p.require("name"), alias=p.require("alias"), version=p.require("version"))
    return {}


def delete_registered_model_alias(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    svc.aliases.delete_alias(actor, name=p.require("name"), alias=p.require("alias"))
    return {}


def get_model_version_by_alias(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    mv = svc.aliases.get_version_by_alias(actor, name=p.require("name"), alias=p.require("alias"))
    return {"model_version": version_json(mv)}


def create_model_version(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    mv = svc.registration.create_model_version(
        actor, name=p.require("name"), source=p.require("source"), run_id=p.get("run_id"),
        tags=p.tags(), run_link=p.get("run_link"), description=p.get("description"), model_id=p.get("model_id"),
    )
    return {"model_version": version_json(mv)}


def get_model_version(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    mv = svc.versions.get_model_version(actor, name=p.require("name"), version=p.require("version"))
    return {"model_version": version_json(mv)}


def update_model_version(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    mv = svc.versions.update_model_version(actor, name=p.require("name"), version=p.require("version"),
                                  description=p.get("description"))
    return {"model_version": version_json(mv)}


def delete_model_version(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    svc.versions.delete_model_version(actor, name=p.require("name"), version=p.require("version"))
    return {}


def transition_model_version_stage(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    mv = svc.stages.transition_stage(
        actor, name=p.require("name"), version=p.require("version"), stage=p.require("stage"),
        archive_existing_versions=p.boolean("archive_existing_versions"),
    )
    return {"model_version": version_json(mv)}


def search_model_versions(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    page = svc.versions.search_model_versions(
        actor, filter_string=p.string("filter"), max_results=p.get("max_results") or 10_000,
        order_by=[str(o) for o in p.repeated("order_by")], page_token=p.string("page_token"),
    )
    body: dict[str, Any] = {"model_versions": [version_json(v, with_aliases=False) for v in page.items]}
    if page.next_page_token:
        body["next_page_token"] = page.next_page_token
    return body


def get_model_version_download_uri(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    return {"artifact_uri": svc.versions.get_download_uri(actor, name=p.require("name"), version=p.require("version"))}


def set_model_version_tag(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    svc.versions.set_model_version_tag(actor, name=p.require("name"), version=p.require("version"),
                              key=p.require("key"), value=p.get("value"))
    return {}


def delete_model_version_tag(svc: RegistryService, actor: Actor, p: Params) -> dict[str, Any]:
    svc.versions.delete_model_version_tag(actor, name=p.require("name"), version=p.require("version"),
                                 key=p.require("key"))
    return {}


MLFLOW_ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/registered-models/create", create_registered_model),
    ("GET", "/registered-models/get", get_registered_model),
    ("POST", "/registered-models/rename", rename_registered_model),
    ("PATCH", "/registered-models/update", update_registered_model),
    ("DELETE", "/registered-models/delete", delete_registered_model),
    ("GET", "/registered-models/search", search_registered_models),
    ("POST", "/registered-models/get-latest-versions", get_latest_versions),
    ("GET", "/registered-models/get-latest-versions", get_latest_versions),
    ("POST", "/registered-models/set-tag", set_registered_model_tag),
    ("DELETE", "/registered-models/delete-tag", delete_registered_model_tag),
    ("POST", "/registered-models/alias", set_registered_model_alias),
    ("DELETE", "/registered-models/alias", delete_registered_model_alias),
    ("GET", "/registered-models/alias", get_model_version_by_alias),
    ("POST", "/model-versions/create", create_model_version),
    ("GET", "/model-versions/get", get_model_version),
    ("PATCH", "/model-versions/update", update_model_version),
    ("DELETE", "/model-versions/delete", delete_model_version),
    ("POST", "/model-versions/transition-stage", transition_model_version_stage),
    ("GET", "/model-versions/search", search_model_versions),
    ("GET", "/model-versions/get-download-uri", get_model_version_download_uri),
    ("POST", "/model-versions/set-tag", set_model_version_tag),
    ("DELETE", "/model-versions/delete-tag", delete_model_version_tag),
]


POINT_READS: frozenset[Handler] = frozenset(
    {get_registered_model, get_latest_versions, get_model_version_by_alias, get_model_version,
     get_model_version_download_uri}
)
"""Reads of a bounded handful of rows (searches are not: they may return thousands)."""

EVIDENCE_WRITES: frozenset[Handler] = frozenset({update_model_version, set_model_version_tag, delete_model_version_tag})
"""Writes that can change a promotion candidate's evidence: its live promotions are told once the reply is ready."""


class MlflowRegistryRoutes:
    """ASGI middleware serving the table at the root and under ``/mlflow`` before FastAPI's router.

    One dict lookup on the exact path and method replaces a scan over every route of the app, and the
    handler runs without FastAPI's dependency machinery: these are the hottest routes. Anything else,
    a known path with another method included, goes on to the app (whose gateway answers 404 for it).

    On SQLite the point reads run on the event loop itself: in WAL mode a reader never waits for a
    writer, so they take a fraction of a millisecond of CPU and the two thread hand-offs would cost
    about as much again. Writes (which may wait for SQLite's write lock or copy artifacts), searches
    and every request on PostgreSQL (network round trips) run in the thread pool.
    """

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.inline: frozenset[Handler] = frozenset() if services.db.is_postgres else POINT_READS
        self.routes: dict[tuple[str, str], Handler] = {
            (method, root + PREFIX + path): handler
            for root in ("", "/mlflow")
            for method, path, handler in MLFLOW_ROUTES
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope[ROUTE_KEY] = scope["path"]  # a fixed path: its own template
        request = Request(scope, receive)
        try:
            params = await read_params(request)
            result = await self._run(request, handler, params)
            response: Response = JSONResponse(result)
            if handler in EVIDENCE_WRITES:
                response.background = BackgroundTask(self.services.promotions.evidence_may_have_changed,
                                                     str(params.require("name")), params.require("version"))
            elif handler is transition_model_version_stage and result["model_version"]["current_stage"] == PRODUCTION:
                response.background = BackgroundTask(self.services.promotions.start_reviews,  # break-glass review
                                                     result["model_version"]["name"])
            elif handler is create_model_version:  # once registered: its model evidence, in the background
                registered = result["model_version"]
                response.background = BackgroundTask(self.services.promotions.start_model_evidence,
                                                     registered["name"], registered["version"])
        except RegistryError as exc:
            response = registry_error_response(exc)
        except UnicodeEncodeError as exc:
            response = unstorable_text_response(exc)
        await response(scope, receive, send)

    async def _run(self, request: Request, handler: Handler, params: Params) -> dict[str, Any]:
        token = token_from_header(request.headers.get("authorization"))
        caller_request, client = request_id(request), client_address(request)
        services = self.services

        def call() -> dict[str, Any]:
            actor = note_actor(services.users.authenticate(token, request_id=caller_request, client=client))
            return handler(services.registry, actor, params)

        if handler in self.inline:
            return call()
        return await run_in_threadpool(call)


def mlflow_openapi_paths() -> dict[str, dict[str, Any]]:
    """OpenAPI entries for the root routes (MLflow's REST API 2.0 documents their messages)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in MLFLOW_ROUTES:
        paths.setdefault(PREFIX + path, {})[method.lower()] = {
            "tags": ["mlflow"],
            "summary": handler.__name__.replace("_", " ").capitalize(),
            "operationId": f"{handler.__name__}_{method.lower()}",
            "description": "MLflow model-registry REST API 2.0: request and response as MLflow documents them.",
            "responses": {"200": {"description": "MLflow's response message"}},
        }
    return paths
