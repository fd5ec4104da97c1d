"""``/api/v1`` routes for groups, primary groups and who may use a model: thin adapters over the services."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from calabi.api.deps import CurrentActor, ServicesDep
from registry_store.entities import Group, ModelPermissions

__all__ = ["access_router"]

access_router = APIRouter(prefix="/api/v1")


class GroupCreate(BaseModel):
    """Body of ``POST /groups``."""

    name: str
    description: str = ""


class PrimaryGroup(BaseModel):
    """Body of ``PUT /users/{name}/primary-group``; ``group: null`` clears it."""

    group: str | None


class GrantSet(BaseModel):
    """Body of ``PUT /models/{name}/grants``."""

    principal_kind: str
    principal: str
    permission: str


class OwnerSet(BaseModel):
    """Body of ``PUT /models/{name}/owner``; ``group: null`` leaves the model without an owner."""

    group: str | None


class RestrictedSet(BaseModel):
    """Body of ``PUT /models/{name}/restricted``."""

    restricted: bool


@access_router.get("/groups", response_model=list[Group])
def list_groups(services: ServicesDep, actor: CurrentActor) -> list[Group]:
    """Every group with its members (admin)."""
    return services.groups.list_groups(actor)


@access_router.post("/groups", response_model=Group, status_code=201)
def create_group(services: ServicesDep, actor: CurrentActor, body: GroupCreate) -> Group:
    """Create a group (admin)."""
    return services.groups.create_group(actor, name=body.name, description=body.description)


@access_router.get("/groups/{name}", response_model=Group)
def get_group(services: ServicesDep, actor: CurrentActor, name: str) -> Group:
    """One group with its members (admin)."""
    return services.groups.get_group(actor, name)


@access_router.delete("/groups/{name}", status_code=204)
def delete_group(services: ServicesDep, actor: CurrentActor, name: str) -> Response:
    """Delete a group with its memberships and grants (admin)."""
    services.groups.delete_group(actor, name)
    return Response(status_code=204)


@access_router.put("/groups/{name}/members/{user}", response_model=Group)
def add_member(services: ServicesDep, actor: CurrentActor, name: str, user: str) -> Group:
    """Add a user to a group (admin)."""
    return services.groups.add_member(actor, group=name, user=user)


@access_router.delete("/groups/{name}/members/{user}", response_model=Group)
def remove_member(services: ServicesDep, actor: CurrentActor, name: str, user: str) -> Group:
    """Remove a user from a group (admin)."""
    return services.groups.remove_member(actor, group=name, user=user)


@access_router.put("/users/{name}/primary-group", status_code=204)
def set_primary_group(services: ServicesDep, actor: CurrentActor, name: str, body: PrimaryGroup) -> Response:
    """Set the group that owns the models the user creates (admin)."""
    services.groups.set_primary_group(actor, user=name, group=body.group)
    return Response(status_code=204)


@access_router.get("/models/{name}/grants", response_model=ModelPermissions)
def model_grants(services: ServicesDep, actor: CurrentActor, name: str) -> ModelPermissions:
    """The model's owning group, restricted flag and grants."""
    return services.registry.grants.model_permissions(actor, name)


@access_router.put("/models/{name}/grants", response_model=ModelPermissions)
def set_grant(services: ServicesDep, actor: CurrentActor, name: str, body: GrantSet) -> ModelPermissions:
    """Give a user or a group READ, EDIT or MANAGE on the model (MANAGE)."""
    return services.registry.grants.set_grant(actor, name=name, principal_kind=body.principal_kind,
                                              principal=body.principal, permission=body.permission)


@access_router.delete("/models/{name}/grants", response_model=ModelPermissions)
def revoke_grant(
    services: ServicesDep, actor: CurrentActor, name: str, principal_kind: str, principal: str
) -> ModelPermissions:
    """Remove a user's or a group's grant on the model (MANAGE); ``?principal_kind=…&principal=…``."""
    return services.registry.grants.revoke_grant(actor, name=name, principal_kind=principal_kind, principal=principal)


@access_router.put("/models/{name}/owner", response_model=ModelPermissions)
def set_owner(services: ServicesDep, actor: CurrentActor, name: str, body: OwnerSet) -> ModelPermissions:
    """Change the model's owning group (MANAGE)."""
    return services.registry.grants.set_owner(actor, name=name, group=body.group)


@access_router.put("/models/{name}/restricted", response_model=ModelPermissions)
def set_restricted(services: ServicesDep, actor: CurrentActor, name: str, body: RestrictedSet) -> ModelPermissions:
    """Restrict the model to admins, its owners and its grants, or lift that (MANAGE)."""
    return services.registry.grants.set_restricted(actor, name=name, restricted=body.restricted)
