"""The models list and the model page (versions, description, tags, serving schema, history)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from calabi.api.pages.present import signature_columns, timeline
from calabi.api.pages.templating import path_segment
from calabi.api.pages.web import PageRoute, PostedForm, SignedIn, page_services, render, see_other
from registry_store.entities import AuditEvent, ModelVersion, Page, ProductionHistory, Promotion, RegisteredModel
from registry_store.errors import InvalidParameterError

__all__ = ["models_router", "name_filter"]

models_router = APIRouter(route_class=PageRoute, include_in_schema=False)
MODELS_PER_PAGE = 25
VERSIONS_PER_PAGE = 50
HISTORY_EVENTS = 500
_FILTER_MARKERS = ("=", "<", ">", " like ", " ilike ", " in ", "`", '"')
ORDERS = {"name": ["name ASC"], "updated": ["last_updated_timestamp DESC"]}


def name_filter(query: str) -> str | None:
    """A search box value as an MLflow filter: plain words search names (case-insensitively)."""
    text = query.strip()
    if not text:
        return None
    if any(marker in f" {text.lower()} " for marker in _FILTER_MARKERS):
        return text
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("'", "''")
    return f"name ILIKE '%{escaped}%'"


@models_router.get("/ui/models", response_model=None)
async def models_list(
    request: Request, user: SignedIn, q: str = "", sort: str = "name", page_token: str | None = None
) -> Response:
    """Registered models with search (the MLflow filter grammar), paging and sorting."""
    services = page_services(request)
    error = ""
    page: Page[RegisteredModel] = Page(items=[])
    try:
        page = await run_in_threadpool(
            services.registry.models.search_registered_models, user.actor, filter_string=name_filter(q),
            max_results=MODELS_PER_PAGE, order_by=ORDERS.get(sort, ORDERS["name"]), page_token=page_token or None,
        )
    except InvalidParameterError as exc:
        error = exc.message
    return render(request, "models.html", user=user, status=400 if error else 200, models=page.items,
                  next_page_token=page.next_page_token, q=q, sort=sort, error=error, first_page=not page_token,
                  nav="models")


@dataclass(frozen=True)
class _ModelPage:
    model: RegisteredModel
    versions: Page[ModelVersion]
    serving_schema: str
    events: list[AuditEvent]
    production: ProductionHistory
    promotions: Page[Promotion]


@models_router.get("/ui/models/{name}", response_model=None)
async def model_page(request: Request, user: SignedIn, name: str, page_token: str | None = None) -> Response:
    """The model: versions table, aliases, description and tags, serving schema and its history."""
    registry = page_services(request).registry

    def load() -> _ModelPage:
        model = registry.models.get_registered_model(user.actor, name)
        return _ModelPage(
            model=model,
            versions=registry.versions.list_model_versions(user.actor, name=name, max_results=VERSIONS_PER_PAGE,
                                                  page_token=page_token or None),
            serving_schema=registry.schemas.get_serving_schema(user.actor, name),
            events=registry.audit.list_audit_events(user.actor, model_name=model.name, limit=HISTORY_EVENTS,
                                              newest_first=True),
            production=registry.production.production_history(user.actor, model.name),
            promotions=registry.promotions.list_promotions(user.actor, model=model.name, max_results=10),
        )

    data = await run_in_threadpool(load)
    aliases_by_version: dict[int, list[str]] = {}
    for ref in data.model.aliases:
        aliases_by_version.setdefault(ref.version, []).append(ref.alias)
    return render(
        request, "model.html", user=user, model=data.model, versions=data.versions.items,
        next_page_token=data.versions.next_page_token, first_page=not page_token,
        aliases_by_version=aliases_by_version, serving_schema=data.serving_schema,
        schema_columns=signature_columns(data.serving_schema), timeline=timeline(data.events),
        production=data.production.stints, history_truncated=len(data.events) >= HISTORY_EVENTS,
        promotions=data.promotions.items, nav="models",
    )


def _model_url(name: str) -> str:
    return f"/ui/models/{path_segment(name)}"


@models_router.post("/ui/models/{name}/description", response_model=None)
async def edit_model_description(request: Request, user: SignedIn, form: PostedForm, name: str) -> Response:
    """Replace the model's description."""
    await run_in_threadpool(page_services(request).registry.models.update_registered_model, user.actor, name=name,
                            description=form.get("description"))
    return see_other(request, _model_url(name), flash="Description saved.")


@models_router.post("/ui/models/{name}/tags", response_model=None)
async def set_model_tag(request: Request, user: SignedIn, form: PostedForm, name: str) -> Response:
    """Set (or overwrite) a model tag."""
    key = form.get("key").strip()
    await run_in_threadpool(page_services(request).registry.models.set_registered_model_tag, user.actor, name=name,
                            key=key, value=form.get("value"))
    return see_other(request, _model_url(name), flash=f"Tag {key} saved.")


@models_router.post("/ui/models/{name}/tags/delete", response_model=None)
async def delete_model_tag(request: Request, user: SignedIn, form: PostedForm, name: str) -> Response:
    """Remove a model tag."""
    key = form.get("key")
    await run_in_threadpool(page_services(request).registry.models.delete_registered_model_tag, user.actor, name=name,
                            key=key)
    return see_other(request, _model_url(name), flash=f"Tag {key} removed.")


@models_router.post("/ui/models/{name}/rollback", response_model=None)
async def rollback(request: Request, user: SignedIn, form: PostedForm, name: str) -> Response:
    """Request re-promotion of the previous Production version (the rollback policy)."""
    promotion = await page_services(request).promotions.rollback(
        user.actor, model=name, justification=form.get("justification"))
    return see_other(request, f"/ui/promotions/{promotion.id}",
                     flash=f"Rollback to version {promotion.version} requested.")


def _deletion(model: RegisteredModel, versions: list[ModelVersion]) -> dict[str, Any]:
    return {"model": model, "versions": versions}


@models_router.get("/ui/models/{name}/delete", response_model=None)
async def confirm_delete_model(request: Request, user: SignedIn, name: str) -> Response:
    """The no-JavaScript confirmation page for deleting a model."""
    registry = page_services(request).registry
    model = await run_in_threadpool(registry.models.get_registered_model, user.actor, name)
    versions = await run_in_threadpool(registry.versions.list_model_versions, user.actor, name=name, max_results=1000)
    return render(request, "confirm_delete_model.html", user=user, **_deletion(model, list(versions.items)),
                  nav="models")


@models_router.post("/ui/models/{name}/delete", response_model=None)
async def delete_model(request: Request, user: SignedIn, _form: PostedForm, name: str) -> Response:
    """Delete the model, all its versions and their artifacts."""
    await run_in_threadpool(page_services(request).registry.models.delete_registered_model, user.actor, name)
    return see_other(request, "/ui/models", flash=f"Model {name} and all its versions were deleted.")
