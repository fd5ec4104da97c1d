"""FastAPI dependencies: the services and the authenticated actor."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from calabi.bootstrap import Services
from calabi.request_context import REQUEST_ID_KEY, current_request
from registry_store.audit import Actor

__all__ = [
    "CurrentActor", "ServicesDep", "client_address", "current_actor", "get_services", "note_actor", "request_actor",
    "request_id",
    "token_from_header",
]


def get_services(request: Request) -> Services:
    """The services built at start-up."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def token_from_header(header: str | None) -> str | None:
    """The bearer token, or the password of basic auth (MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def request_id(request: Request) -> str:
    """The request's id (the caller's ``X-Request-ID``, at most 64 characters, or a fresh one, the same for the
    whole request: ``RequestObservation`` picks it); audit events and log records carry it."""
    chosen = request.scope.get(REQUEST_ID_KEY)
    if isinstance(chosen, str):
        return chosen
    return (request.headers.get("x-request-id") or uuid.uuid4().hex)[:64]


def note_actor(actor: Actor) -> Actor:
    """Name ``actor`` in the current request's log context; returns it."""
    context = current_request()
    if context is not None:
        context.actor = actor.name
    return actor


def client_address(request: Request) -> str:
    """The peer's address, by which failed token attempts are counted."""
    return request.client.host if request.client else ""


async def current_actor(request: Request, services: ServicesDep) -> Actor:
    """The user owning the request's bearer token (or basic-auth password)."""
    return await request_actor(request, services)


async def request_actor(request: Request, services: Services) -> Actor:
    """``current_actor`` for handlers outside FastAPI's dependency injection."""
    token = token_from_header(request.headers.get("authorization"))
    return note_actor(await run_in_threadpool(
        services.users.authenticate, token, request_id=request_id(request), client=client_address(request)
    ))


CurrentActor = Annotated[Actor, Depends(current_actor)]
