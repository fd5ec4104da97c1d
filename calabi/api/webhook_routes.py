"""Webhook routes: MLflow's webhooks API (root and ``/mlflow``, its wire format) and Calabi's ``/api/v1/webhooks``.

MLflow's view shows MLflow's events only (its client cannot parse Calabi's) and a paused webhook as
``DISABLED`` (MLflow has no paused state); ``/api/v1/webhooks`` shows everything, including the
delivery log, and redelivers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from calabi.api.deps import CurrentActor, ServicesDep
from calabi.webhook_dispatch import may_reach_private, send_test
from policies.webhooks import MLFLOW_EVENTS
from registry_store.entities import Page, Webhook, WebhookDelivery
from registry_store.errors import InvalidParameterError

__all__ = ["webhook_router"]

webhook_router = APIRouter()
F = TypeVar("F", bound=Callable[..., Any])
MLFLOW_PREFIXES = ("/api/2.0/mlflow", "/mlflow/api/2.0/mlflow")
_EXAMPLE: dict[str, object] = {
    "name": "example_model", "version": "1", "source": "models:/123", "run_id": "abcd1234abcd5678",
    "tags": {"example_key": "example_value"}, "description": "An example", "key": "example_key",
    "value": "example_value", "alias": "example_alias"}


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidParameterError("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidParameterError("The request body must be a JSON object.")
    return body


def _event_names(events: object) -> list[str]:
    """MLflow's ``[{"entity": "MODEL_VERSION", "action": "CREATED"}]`` as ``model_version.created``."""
    if events is None:
        return []
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise InvalidParameterError("Parameter 'events' must be a list of {entity, action} objects.")
    names = [f"{str(e.get('entity', '')).lower()}.{str(e.get('action', '')).lower()}" for e in events]
    unknown = [n for n in names if n not in MLFLOW_EVENTS]
    if unknown:
        raise InvalidParameterError(f"Unsupported webhook event(s) {', '.join(unknown)}; supported: "
                                    f"{', '.join(MLFLOW_EVENTS)}.")
    return names


def _mlflow_event(name: str) -> dict[str, str]:
    entity, _, action = name.partition(".")
    return {"entity": entity.upper(), "action": action.upper()}


def mlflow_webhook(hook: Webhook) -> dict[str, Any]:
    """A webhook as the mlflow client parses it (no secret, ever)."""
    body: dict[str, Any] = {
        "webhook_id": hook.id, "name": hook.name, "url": hook.url,
        "events": [_mlflow_event(e) for e in hook.events if e in MLFLOW_EVENTS],
        "status": "ACTIVE" if hook.status == "ACTIVE" else "DISABLED",
        "creation_timestamp": hook.creation_timestamp, "last_updated_timestamp": hook.last_updated_timestamp,
    }
    if hook.description:
        body["description"] = hook.description
    return body


def _mlflow(method: str, path: str) -> Callable[[F], F]:
    """Register a handler at both MLflow prefixes (hidden from the OpenAPI schema but for the root)."""

    def register(handler: F) -> F:
        for prefix in MLFLOW_PREFIXES:
            webhook_router.add_api_route(prefix + path, handler, methods=[method], tags=["mlflow"],
                                         include_in_schema=prefix == MLFLOW_PREFIXES[0])
        return handler

    return register


@_mlflow("POST", "/webhooks")
async def mlflow_create_webhook(request: Request, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """MLflow ``CreateWebhook``."""
    body = await _json(request)
    events = _event_names(body.get("events"))
    hook = await run_in_threadpool(
        services.registry.webhooks.create_webhook, actor, name=body.get("name"), url=body.get("url"), events=events,
        description=body.get("description") or "", secret=body.get("secret") or "", status=body.get("status"),
    )
    return {"webhook": mlflow_webhook(hook)}


@_mlflow("GET", "/webhooks")
def mlflow_list_webhooks(services: ServicesDep, actor: CurrentActor, max_results: int | None = None,
                         page_token: str | None = None) -> dict[str, Any]:
    """MLflow ``ListWebhooks``."""
    page = services.registry.webhooks.list_webhooks(actor, max_results=max_results, page_token=page_token)
    body: dict[str, Any] = {"webhooks": [mlflow_webhook(h) for h in page.items]}
    if page.next_page_token:
        body["next_page_token"] = page.next_page_token
    return body


@_mlflow("GET", "/webhooks/{webhook_id}")
def mlflow_get_webhook(webhook_id: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """MLflow ``GetWebhook``."""
    return {"webhook": mlflow_webhook(services.registry.webhooks.get_webhook(actor, webhook_id))}


@_mlflow("PATCH", "/webhooks/{webhook_id}")
async def mlflow_update_webhook(webhook_id: str, request: Request, services: ServicesDep,
                                actor: CurrentActor) -> dict[str, Any]:
    """MLflow ``UpdateWebhook``: MLflow's events replace the MLflow ones (Calabi's events are kept)."""
    body = await _json(request)
    hooks = services.registry.webhooks

    def update() -> Webhook:
        events = None
        if body.get("events"):
            kept = [e for e in hooks.get_webhook(actor, webhook_id).events if e not in MLFLOW_EVENTS]
            events = [*_event_names(body["events"]), *kept]
        return hooks.update_webhook(actor, webhook_id, name=body.get("name"), url=body.get("url"), events=events,
                                    description=body.get("description"), secret=body.get("secret") or None,
                                    status=body.get("status"))

    return {"webhook": mlflow_webhook(await run_in_threadpool(update))}


@_mlflow("DELETE", "/webhooks/{webhook_id}")
def mlflow_delete_webhook(webhook_id: str, services: ServicesDep, actor: CurrentActor) -> dict[str, Any]:
    """MLflow ``DeleteWebhook``."""
    services.registry.webhooks.delete_webhook(actor, webhook_id)
    return {}


@_mlflow("POST", "/webhooks/{webhook_id}/test")
async def mlflow_test_webhook(webhook_id: str, request: Request, services: ServicesDep,
                              actor: CurrentActor) -> dict[str, Any]:
    """MLflow ``TestWebhook``: one example event sent now (not through the outbox, not logged)."""
    body = await _json(request)
    settings = services.settings

    def test() -> dict[str, Any]:
        target = services.registry.webhooks.target(actor, webhook_id)
        requested = _event_names([body["event"]]) if body.get("event") else []
        event = requested[0] if requested else (target.events[0] if target.events else MLFLOW_EVENTS[0])
        result = send_test(target, event, _EXAMPLE, allow_private=may_reach_private(settings, target.url),
                           timeout_s=settings.webhook_timeout_s)
        answered = result.status_code is not None
        out: dict[str, Any] = {"success": answered and result.status_code is not None and result.status_code < 400}
        if answered:
            out |= {"response_status": result.status_code, "response_body": result.response_excerpt}
        else:
            out["error_message"] = f"Failed to test webhook: {result.error}"
        return {"result": out}

    return await run_in_threadpool(test)


# ---------------------------------------------------------------------- /api/v1/webhooks


class WebhookCreate(BaseModel):
    """Body of ``POST /api/v1/webhooks`` (events: MLflow's and Calabi's names, e.g. ``promotion.promoted``)."""

    name: str
    url: str
    events: list[str]
    description: str = ""
    secret: str = ""
    status: str = "ACTIVE"
    payload_format: str = "mlflow"
    template: str = ""


class WebhookUpdate(BaseModel):
    """Body of ``PATCH /api/v1/webhooks/{id}``: the fields to change."""

    name: str | None = None
    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    secret: str | None = None
    status: str | None = None
    payload_format: str | None = None
    template: str | None = None


class Redelivery(BaseModel):
    """Body of ``POST /api/v1/webhooks/{id}/redeliver``: one delivery, or the events of a time range (epoch ms)."""

    delivery_id: str | None = None
    since: int | None = None
    until: int | None = None


class Redelivered(BaseModel):
    """How many deliveries were queued again."""

    queued: int


@webhook_router.get("/api/v1/webhooks", response_model=Page[Webhook], tags=["webhooks"])
def list_webhooks(services: ServicesDep, actor: CurrentActor, max_results: int = 100,
                  page_token: str | None = None) -> Page[Webhook]:
    """Webhooks (admin)."""
    return services.registry.webhooks.list_webhooks(actor, max_results=max_results, page_token=page_token)


@webhook_router.post("/api/v1/webhooks", response_model=Webhook, status_code=201, tags=["webhooks"])
def create_webhook(services: ServicesDep, actor: CurrentActor, body: WebhookCreate) -> Webhook:
    """Create a webhook (admin)."""
    return services.registry.webhooks.create_webhook(actor, **body.model_dump())


@webhook_router.get("/api/v1/webhooks/{webhook_id}", response_model=Webhook, tags=["webhooks"])
def get_webhook(webhook_id: str, services: ServicesDep, actor: CurrentActor) -> Webhook:
    """One webhook (admin)."""
    return services.registry.webhooks.get_webhook(actor, webhook_id)


@webhook_router.patch("/api/v1/webhooks/{webhook_id}", response_model=Webhook, tags=["webhooks"])
def update_webhook(webhook_id: str, services: ServicesDep, actor: CurrentActor, body: WebhookUpdate) -> Webhook:
    """Change a webhook; ``status: ACTIVE`` resumes a paused one (admin)."""
    return services.registry.webhooks.update_webhook(actor, webhook_id, **body.model_dump())


@webhook_router.delete("/api/v1/webhooks/{webhook_id}", status_code=204, tags=["webhooks"])
def delete_webhook(webhook_id: str, services: ServicesDep, actor: CurrentActor) -> Response:
    """Delete a webhook and its delivery log (admin)."""
    services.registry.webhooks.delete_webhook(actor, webhook_id)
    return Response(status_code=204)


@webhook_router.get("/api/v1/webhooks/{webhook_id}/deliveries", response_model=list[WebhookDelivery],
                    tags=["webhooks"])
def list_deliveries(webhook_id: str, services: ServicesDep, actor: CurrentActor, limit: int = 100,
                    delivery_id: str | None = None) -> list[WebhookDelivery]:
    """The delivery log, newest first, with every attempt (admin)."""
    return services.registry.webhooks.list_deliveries(actor, webhook_id, limit=limit, delivery_id=delivery_id)


@webhook_router.post("/api/v1/webhooks/{webhook_id}/redeliver", response_model=Redelivered, tags=["webhooks"])
def redeliver(webhook_id: str, services: ServicesDep, actor: CurrentActor, body: Redelivery) -> Redelivered:
    """Send one delivery or a time range's again, with the same delivery ids (admin)."""
    queued = services.registry.webhooks.redeliver(actor, webhook_id, delivery_id=body.delivery_id, since=body.since,
                                                  until=body.until)
    return Redelivered(queued=queued)
