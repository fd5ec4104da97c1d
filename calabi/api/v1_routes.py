"""Calabi's own REST API under ``/api/v1``: thin adapters over the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Response
from pydantic import BaseModel, Field

from calabi.api.deps import CurrentActor, ServicesDep
from policies.identity import PRODUCTION
from registry_store.entities import (
    AuditEvent,
    AuditVerification,
    ModelVersion,
    PersonalToken,
    ProductionAt,
    ProductionHistory,
    RegisteredModel,
    User,
)
from registry_store.personal_tokens import DEFAULT_EXPIRY_DAYS

__all__ = ["v1_router"]

v1_router = APIRouter(prefix="/api/v1")


class ModelCreate(BaseModel):
    """Body of ``POST /models``."""

    name: str
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class ModelUpdate(BaseModel):
    """Body of ``PATCH /models/{name}``: a new description and/or a new name."""

    description: str | None = None
    new_name: str | None = None


class VersionCreate(BaseModel):
    """Body of ``POST /models/{name}/versions``."""

    source: str
    run_id: str | None = None
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class DescriptionUpdate(BaseModel):
    """Body of ``PATCH /models/{name}/versions/{version}``."""

    description: str


class StageChange(BaseModel):
    """Body of ``POST /models/{name}/versions/{version}/stage``."""

    stage: str
    archive_existing_versions: bool = False
    reason: str = Field(default="", max_length=5000)
    """Why (an admin's break-glass move records it with the post-implementation review it opens)."""


class AliasSet(BaseModel):
    """Body of ``PUT /models/{name}/aliases/{alias}``."""

    version: int


class TagSet(BaseModel):
    """Body of the tag ``PUT`` routes."""

    value: str


class UserCreate(BaseModel):
    """Body of ``POST /users``."""

    name: str
    roles: list[str]


class ModelPage(BaseModel):
    """One page of models."""

    models: list[RegisteredModel]
    next_page_token: str | None = None


class VersionPage(BaseModel):
    """One page of versions."""

    versions: list[ModelVersion]
    next_page_token: str | None = None


class NewUser(BaseModel):
    """A created user and its token (shown once)."""

    user: User
    token: str


class Me(BaseModel):
    """The authenticated user."""

    name: str
    roles: list[str]
    groups: list[str] = Field(default_factory=list)


@v1_router.get("/me", response_model=Me)
def who_am_i(actor: CurrentActor) -> Me:
    """The user the presented token belongs to, with their roles and groups."""
    return Me(name=actor.name, roles=sorted(actor.roles), groups=sorted(actor.groups))


@v1_router.get("/models", response_model=ModelPage)
def list_models(
    services: ServicesDep, actor: CurrentActor, filter: str | None = None, max_results: int = 100,
    order_by: Annotated[list[str] | None, Query()] = None, page_token: str | None = None,
) -> ModelPage:
    """Search registered models with the MLflow filter grammar."""
    page = services.registry.models.search_registered_models(
        actor, filter_string=filter, max_results=max_results, order_by=order_by, page_token=page_token
    )
    return ModelPage(models=list(page.items), next_page_token=page.next_page_token)


@v1_router.post("/models", response_model=RegisteredModel, status_code=201)
def create_model(services: ServicesDep, actor: CurrentActor, body: ModelCreate) -> RegisteredModel:
    """Create a registered model."""
    return services.registry.models.create_registered_model(
        actor, name=body.name, description=body.description, tags=list(body.tags.items())
    )


@v1_router.get("/models/{name}", response_model=RegisteredModel)
def get_model(services: ServicesDep, actor: CurrentActor, name: str) -> RegisteredModel:
    """One registered model."""
    return services.registry.models.get_registered_model(actor, name)


@v1_router.patch("/models/{name}", response_model=RegisteredModel)
def update_model(services: ServicesDep, actor: CurrentActor, name: str, body: ModelUpdate) -> RegisteredModel:
    """Change a model's description and/or rename it."""
    model = services.registry.models.get_registered_model(actor, name)
    if body.description is not None:
        model = services.registry.models.update_registered_model(actor, name=name, description=body.description)
    if body.new_name is not None:
        model = services.registry.models.rename_registered_model(actor, name=name, new_name=body.new_name)
    return model


class RiskTierSet(BaseModel):
    """Body of ``PUT /models/{name}/risk-tier``: one of the policy's declared tiers, or null to clear it."""

    tier: str | None


@v1_router.put("/models/{name}/risk-tier", response_model=RegisteredModel)
def set_risk_tier(services: ServicesDep, actor: CurrentActor, name: str, body: RiskTierSet) -> RegisteredModel:
    """Set or clear a model's risk tier (MANAGE on the model); the tier must be declared by the policy."""
    return services.registry.models.set_risk_tier(actor, name=name, tier=body.tier)


@v1_router.delete("/models/{name}", status_code=204)
def delete_model(services: ServicesDep, actor: CurrentActor, name: str) -> Response:
    """Delete a model with all its versions and artifacts."""
    services.registry.models.delete_registered_model(actor, name)
    return Response(status_code=204)


@v1_router.get("/models/{name}/production-history", response_model=ProductionHistory | ProductionAt)
def production_history(
    services: ServicesDep, actor: CurrentActor, name: str,
    at: Annotated[str | None, Query(description="An instant: epoch milliseconds or ISO-8601")] = None,
) -> ProductionHistory | ProductionAt:
    """Which version was Production when, who moved it there and why; with ``at``, the version at that instant."""
    production = services.registry.production
    return production.production_history(actor, name) if at is None else production.production_at(actor, name, at)


@v1_router.get("/models/{name}/versions", response_model=VersionPage)
def list_versions(
    services: ServicesDep, actor: CurrentActor, name: str, max_results: int = 1000,
    page_token: str | None = None,
) -> VersionPage:
    """The versions of one model, newest first."""
    page = services.registry.versions.list_model_versions(actor, name=name, max_results=max_results,
                                                          page_token=page_token)
    return VersionPage(versions=list(page.items), next_page_token=page.next_page_token)


@v1_router.post("/models/{name}/versions", response_model=ModelVersion, status_code=201)
def create_version(
    services: ServicesDep, actor: CurrentActor, name: str, body: VersionCreate, background: BackgroundTasks
) -> ModelVersion:
    """Register a new version from a source URI."""
    created = services.registry.registration.create_model_version(
        actor, name=name, source=body.source, run_id=body.run_id, description=body.description,
        tags=list(body.tags.items()),
    )
    background.add_task(services.promotions.start_model_evidence, created.name, created.version)
    return created


@v1_router.get("/models/{name}/versions/{version}", response_model=ModelVersion)
def get_version(services: ServicesDep, actor: CurrentActor, name: str, version: str) -> ModelVersion:
    """One version."""
    return services.registry.versions.get_model_version(actor, name=name, version=version)


@v1_router.patch("/models/{name}/versions/{version}", response_model=ModelVersion)
def update_version(
    services: ServicesDep, actor: CurrentActor, name: str, version: str, body: DescriptionUpdate,
    background: BackgroundTasks,
) -> ModelVersion:
    """Replace a version's description (its live promotions re-verify their evidence)."""
    updated = services.registry.versions.update_model_version(actor, name=name, version=version,
                                                               description=body.description)
    background.add_task(services.promotions.evidence_may_have_changed, updated.name, updated.version)
    return updated


@v1_router.delete("/models/{name}/versions/{version}", status_code=204)
def delete_version(services: ServicesDep, actor: CurrentActor, name: str, version: str) -> Response:
    """Delete a version and its artifact."""
    services.registry.versions.delete_model_version(actor, name=name, version=version)
    return Response(status_code=204)


@v1_router.post("/models/{name}/versions/{version}/stage", response_model=ModelVersion)
def transition_version(
    services: ServicesDep, actor: CurrentActor, name: str, version: str, body: StageChange,
    background: BackgroundTasks,
) -> ModelVersion:
    """Move a version to another stage (into Production: an admin's break-glass, reviewed afterwards)."""
    moved = services.registry.stages.transition_stage(
        actor, name=name, version=version, stage=body.stage,
        archive_existing_versions=body.archive_existing_versions, reason=body.reason,
    )
    if moved.current_stage == PRODUCTION:
        background.add_task(services.promotions.start_reviews, moved.name)
    return moved


@v1_router.get("/models/{name}/aliases/{alias}", response_model=ModelVersion)
def get_alias(services: ServicesDep, actor: CurrentActor, name: str, alias: str) -> ModelVersion:
    """The version an alias names."""
    return services.registry.aliases.get_version_by_alias(actor, name=name, alias=alias)


@v1_router.put("/models/{name}/aliases/{alias}", response_model=ModelVersion)
def set_alias(
    services: ServicesDep, actor: CurrentActor, name: str, alias: str, body: AliasSet
) -> ModelVersion:
    """Point an alias at a version."""
    services.registry.aliases.set_alias(actor, name=name, alias=alias, version=body.version)
    return services.registry.aliases.get_version_by_alias(actor, name=name, alias=alias)


@v1_router.delete("/models/{name}/aliases/{alias}", status_code=204)
def delete_alias(services: ServicesDep, actor: CurrentActor, name: str, alias: str) -> Response:
    """Remove an alias."""
    services.registry.aliases.delete_alias(actor, name=name, alias=alias)
    return Response(status_code=204)


@v1_router.put("/models/{name}/tags/{key}", status_code=204)
def set_model_tag(services: ServicesDep, actor: CurrentActor, name: str, key: str, body: TagSet) -> Response:
    """Set a tag on a model."""
    services.registry.models.set_registered_model_tag(actor, name=name, key=key, value=body.value)
    return Response(status_code=204)


@v1_router.delete("/models/{name}/tags/{key}", status_code=204)
def delete_model_tag(services: ServicesDep, actor: CurrentActor, name: str, key: str) -> Response:
    """Delete a tag from a model."""
    services.registry.models.delete_registered_model_tag(actor, name=name, key=key)
    return Response(status_code=204)


@v1_router.put("/models/{name}/versions/{version}/tags/{key}", status_code=204)
def set_version_tag(
    services: ServicesDep, actor: CurrentActor, name: str, version: str, key: str, body: TagSet,
    background: BackgroundTasks,
) -> Response:
    """Set a tag on a version (its live promotions re-verify their evidence)."""
    services.registry.versions.set_model_version_tag(actor, name=name, version=version, key=key, value=body.value)
    background.add_task(services.promotions.evidence_may_have_changed, name, version)
    return Response(status_code=204)


@v1_router.delete("/models/{name}/versions/{version}/tags/{key}", status_code=204)
def delete_version_tag(
    services: ServicesDep, actor: CurrentActor, name: str, version: str, key: str, background: BackgroundTasks
) -> Response:
    """Delete a tag from a version (its live promotions re-verify their evidence)."""
    services.registry.versions.delete_model_version_tag(actor, name=name, version=version, key=key)
    background.add_task(services.promotions.evidence_may_have_changed, name, version)
    return Response(status_code=204)


@v1_router.get("/audit", response_model=list[AuditEvent])
def list_audit(
    services: ServicesDep, actor: CurrentActor, model: str | None = None, after_seq: int = 0, limit: int = 100,
    newest_first: bool = False,
) -> list[AuditEvent]:
    """Audit events in sequence order (or newest first), optionally for one model."""
    return services.registry.audit.list_audit_events(
        actor, model_name=model, after_seq=after_seq, limit=limit, newest_first=newest_first
    )


@v1_router.get("/audit/verify", response_model=AuditVerification)
def verify_audit(services: ServicesDep, actor: CurrentActor) -> AuditVerification:
    """Check the audit hash chain."""
    return services.registry.audit.verify_audit_chain(actor, services.audit_anchor)


@v1_router.get("/users", response_model=list[User])
def list_users(services: ServicesDep, actor: CurrentActor) -> list[User]:
    """All users (admin)."""
    return services.users.list_users(actor)


@v1_router.post("/users", response_model=NewUser, status_code=201)
def create_user(services: ServicesDep, actor: CurrentActor, body: UserCreate) -> NewUser:
    """Create a user with roles and return its token once (admin)."""
    user, token = services.users.create_user(actor, name=body.name, roles=body.roles)
    return NewUser(user=user, token=token)



class TokenCreate(BaseModel):
    """Body of ``POST /tokens``."""

    name: str
    expires_in_days: int = DEFAULT_EXPIRY_DAYS


class NewToken(BaseModel):
    """A created personal token and its secret (shown once)."""

    token: PersonalToken
    secret: str


@v1_router.get("/tokens", response_model=list[PersonalToken])
def list_tokens(services: ServicesDep, actor: CurrentActor) -> list[PersonalToken]:
    """The caller's own tokens (revoked and expired ones too), newest first."""
    return services.users.tokens.list_tokens(actor)


@v1_router.post("/tokens", response_model=NewToken, status_code=201)
def create_token(services: ServicesDep, actor: CurrentActor, body: TokenCreate) -> NewToken:
    """Create a token for the caller, expiring in ``expires_in_days`` (1-365); the secret is returned once."""
    token, secret = services.users.tokens.create_token(actor, name=body.name, expires_in_days=body.expires_in_days)
    return NewToken(token=token, secret=secret)


@v1_router.delete("/tokens/{token_id}", response_model=PersonalToken)
def revoke_token(services: ServicesDep, actor: CurrentActor, token_id: int) -> PersonalToken:
    """Revoke one of the caller's tokens (and end the web sessions opened with it)."""
    return services.users.tokens.revoke_token(actor, token_id)
