"""The version page: details, Stage transitions (dialog or confirmation page), description, aliases, tags, delete."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, BackgroundTasks, Request, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from calabi.api.pages.present import signature_columns
from calabi.api.pages.templating import path_segment
from calabi.api.pages.web import (
    PageRoute,
    PageUser,
    PostedForm,
    SignedIn,
    page_services,
    render,
    see_other,
)
from calabi.bootstrap import Services
from registry_store.entities import ModelVersion, RegisteredModel
from registry_store.errors import InvalidParameterError
from registry_store.stages import PRODUCTION, canonical_stage
from registry_store.transition_plans import TransitionPlan

__all__ = ["versions_router"]

versions_router = APIRouter(route_class=PageRoute, include_in_schema=False)
ALL_VERSIONS = 1000


def version_url(name: str, version: int | str) -> str:
    """The page of one version."""
    return f"/ui/models/{path_segment(name)}/versions/{path_segment(version)}"


@dataclass(frozen=True)
class _Loaded:
    model: RegisteredModel
    version: ModelVersion
    versions: list[ModelVersion]
    serving_schema: str
    plans: list[TransitionPlan]


def _load(services: Services, user: PageUser, name: str, version: str) -> _Loaded:
    registry = services.registry
    found = registry.versions.get_model_version(user.actor, name=name, version=version)
    return _Loaded(
        model=registry.models.get_registered_model(user.actor, name),
        version=found,
        versions=list(registry.versions.list_model_versions(user.actor, name=name, max_results=ALL_VERSIONS).items),
        serving_schema=registry.schemas.get_serving_schema(user.actor, name),
        plans=registry.stages.plan_transitions(user.actor, name=name, version=found.version),
    )


@versions_router.get("/ui/models/{name}/versions/{version}", response_model=None)
async def version_page(request: Request, user: SignedIn, name: str, version: str) -> Response:
    """Source, digest, run, signature, metrics snapshot, tags, aliases; the Stage menu and its dialogs."""
    loaded = await run_in_threadpool(_load, page_services(request), user, name, version)
    evidence = loaded.version.evidence
    return render(
        request, "version.html", user=user, model=loaded.model, v=loaded.version, plans=loaded.plans,
        signature=signature_columns(loaded.version.signature),
        metrics=evidence.get("metrics") if isinstance(evidence.get("metrics"), dict) else {},
        importances=evidence.get("feature_importances")
        if isinstance(evidence.get("feature_importances"), dict) else {},
        params=evidence.get("run_params") if isinstance(evidence.get("run_params"), dict) else {},
        tracking=page_services(request).tracking is not None,
        serving_schema=loaded.serving_schema, nav="models",
    )


@versions_router.get("/ui/models/{name}/versions/{version}/stage", response_model=None)
async def confirm_transition(request: Request, user: SignedIn, name: str, version: str, target: str) -> Response:
    """The Stage dialog as a page of its own (for browsers without JavaScript)."""
    stage = canonical_stage(target)
    loaded = await run_in_threadpool(_load, page_services(request), user, name, version)
    plan = next((p for p in loaded.plans if p.target == stage), None)
    if plan is None:
        raise InvalidParameterError(f"Version {loaded.version.version} is already in {stage}.")
    return render(request, "confirm_transition.html", user=user, model=loaded.model, v=loaded.version, plan=plan,
                  nav="models")


@versions_router.post("/ui/models/{name}/versions/{version}/stage", response_model=None)
async def transition(request: Request, user: SignedIn, form: PostedForm, name: str, version: str) -> Response:
    """Move the version to another stage directly (governed targets go through /ui/promotions)."""
    services = page_services(request)
    moved = await run_in_threadpool(
        services.registry.stages.transition_stage, user.actor, name=name, version=version,
        stage=form.get("stage"), archive_existing_versions=form.flag("archive_existing_versions"),
        reason=form.get("reason"),
    )
    response = see_other(request, version_url(moved.name, moved.version),
                         flash=f"Version {moved.version} is now in {moved.current_stage}.")
    if moved.current_stage == PRODUCTION:  # break-glass: its post-implementation review's workflow
        response.background = BackgroundTask(services.promotions.start_reviews, moved.name)
    return response


@versions_router.post("/ui/models/{name}/versions/{version}/description", response_model=None)
async def edit_description(request: Request, user: SignedIn, form: PostedForm, name: str, version: str,
                           background: BackgroundTasks) -> Response:
    """Replace the version's description (its live promotions re-verify their evidence)."""
    services = page_services(request)
    updated = await run_in_threadpool(
        services.registry.versions.update_model_version, user.actor, name=name, version=version,
        description=form.get("description"),
    )
    background.add_task(services.promotions.evidence_may_have_changed, updated.name, updated.version)
    return see_other(request, version_url(updated.name, updated.version), flash="Description saved.")


@versions_router.post("/ui/models/{name}/versions/{version}/aliases", response_model=None)
async def set_alias(request: Request, user: SignedIn, form: PostedForm, name: str, version: str) -> Response:
    """Point an alias at this version."""
    alias = form.get("alias").strip()
    await run_in_threadpool(page_services(request).registry.aliases.set_alias, user.actor, name=name, alias=alias,
                            version=version)
    return see_other(request, version_url(name, version), flash=f"Alias {alias} now points at version {version}.")


@versions_router.post("/ui/models/{name}/versions/{version}/aliases/delete", response_model=None)
async def delete_alias(request: Request, user: SignedIn, form: PostedForm, name: str, version: str) -> Response:
    """Remove an alias of this version."""
    alias = form.get("alias")
    await run_in_threadpool(page_services(request).registry.aliases.delete_alias, user.actor, name=name, alias=alias)
    return see_other(request, version_url(name, version), flash=f"Alias {alias} removed.")


@versions_router.post("/ui/models/{name}/versions/{version}/tags", response_model=None)
async def set_tag(request: Request, user: SignedIn, form: PostedForm, name: str, version: str,
                  background: BackgroundTasks) -> Response:
    """Set (or overwrite) a version tag (its live promotions re-verify their evidence)."""
    key = form.get("key").strip()
    services = page_services(request)
    await run_in_threadpool(services.registry.versions.set_model_version_tag, user.actor, name=name,
                            version=version, key=key, value=form.get("value"))
    background.add_task(services.promotions.evidence_may_have_changed, name, version)
    return see_other(request, version_url(name, version), flash=f"Tag {key} saved.")


@versions_router.post("/ui/models/{name}/versions/{version}/tags/delete", response_model=None)
async def delete_tag(request: Request, user: SignedIn, form: PostedForm, name: str, version: str,
                     background: BackgroundTasks) -> Response:
    """Remove a version tag (its live promotions re-verify their evidence)."""
    key = form.get("key")
    services = page_services(request)
    await run_in_threadpool(services.registry.versions.delete_model_version_tag, user.actor, name=name,
                            version=version, key=key)
    background.add_task(services.promotions.evidence_may_have_changed, name, version)
    return see_other(request, version_url(name, version), flash=f"Tag {key} removed.")


@versions_router.get("/ui/models/{name}/versions/{version}/delete", response_model=None)
async def confirm_delete(request: Request, user: SignedIn, name: str, version: str) -> Response:
    """The no-JavaScript confirmation page for deleting a version."""
    found = await run_in_threadpool(page_services(request).registry.versions.get_model_version, user.actor, name=name,
                                    version=version)
    return render(request, "confirm_delete_version.html", user=user, v=found, nav="models")


@versions_router.post("/ui/models/{name}/versions/{version}/delete", response_model=None)
async def delete_version(request: Request, user: SignedIn, _form: PostedForm, name: str, version: str) -> Response:
    """Delete the version, its aliases and tags and its artifact copy."""
    await run_in_threadpool(page_services(request).registry.versions.delete_model_version, user.actor, name=name,
                            version=version)
    return see_other(request, f"/ui/models/{path_segment(name)}",
                     flash=f"Version {version} of {name} was deleted for good.")
