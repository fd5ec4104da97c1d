"""A promotion's evidence pack as a printable page, and as the JSON file a signed-in browser downloads."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from calabi.api.pages.web import PageRoute, SignedIn, page_services, render
from registry_store.entities import EvidencePack

__all__ = ["evidence_pack_router"]

evidence_pack_router = APIRouter(route_class=PageRoute, include_in_schema=False)


async def _pack(request: Request, user: SignedIn, promotion_id: str) -> EvidencePack:
    services = page_services(request)
    return await run_in_threadpool(
        services.registry.evidence_packs.evidence_pack, user.actor, promotion_id,
        policy_dir=services.settings.resolved_policy_dir(), anchor=services.audit_anchor,
    )


@evidence_pack_router.get("/ui/promotions/{promotion_id}/evidence-pack", response_model=None)
async def evidence_pack_page(request: Request, user: SignedIn, promotion_id: str) -> Response:
    """The evidence pack, plain and print-friendly: candidate, policy, checks, sign-offs, notifications, audit."""
    pack = await _pack(request, user, promotion_id)
    events = {event.seq for event in pack.audit.events}
    return render(request, "evidence_pack.html", user=user, pack=pack, p=pack.promotion, promotion_events=events)


@evidence_pack_router.get("/ui/promotions/{promotion_id}/evidence-pack.json", response_model=None)
async def evidence_pack_file(request: Request, user: SignedIn, promotion_id: str) -> Response:
    """The same pack as ``GET /api/v1/promotions/{id}/evidence-pack``, as a file to keep."""
    pack = await _pack(request, user, promotion_id)
    return Response(pack.model_dump_json(indent=2), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="evidence-pack-{pack.promotion.id}.json"',
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
    })
