"""Webhook pages (admin): the subscriptions, and one webhook's delivery log with every attempt and redelivery."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from calabi.api.pages.web import PageRoute, PostedForm, SignedIn, page_services, render, see_other

__all__ = ["webhooks_router"]

webhooks_router = APIRouter(route_class=PageRoute, include_in_schema=False)
DELIVERIES_SHOWN = 100


@webhooks_router.get("/ui/webhooks", response_model=None)
async def webhooks_page(request: Request, user: SignedIn) -> Response:
    """Every webhook with its status and failures in a row."""
    page = await run_in_threadpool(page_services(request).registry.webhooks.list_webhooks, user.actor,
                                   max_results=1000)
    return render(request, "webhooks.html", user=user, webhooks=page.items, nav="webhooks")


@webhooks_router.get("/ui/webhooks/{webhook_id}", response_model=None)
async def webhook_page(request: Request, user: SignedIn, webhook_id: str) -> Response:
    """One webhook's delivery log, newest first, each delivery with its attempts."""
    hooks = page_services(request).registry.webhooks
    hook = await run_in_threadpool(hooks.get_webhook, user.actor, webhook_id)
    deliveries = await run_in_threadpool(hooks.list_deliveries, user.actor, webhook_id, limit=DELIVERIES_SHOWN)
    return render(request, "webhook.html", user=user, webhook=hook, deliveries=deliveries, nav="webhooks")


@webhooks_router.post("/ui/webhooks/{webhook_id}/redeliver", response_model=None)
async def redeliver(request: Request, user: SignedIn, form: PostedForm, webhook_id: str) -> Response:
    """Queue one delivery again (same delivery id)."""
    queued = await run_in_threadpool(page_services(request).registry.webhooks.redeliver, user.actor, webhook_id,
                                     delivery_id=form.get("delivery_id"))
    return see_other(request, f"/ui/webhooks/{webhook_id}", flash=f"Queued {queued} delivery again.")
