"""The approvals desk: post-implementation reviews, promotions awaiting me, all promotions, one promotion with its
live checklist."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from calabi.api.pages.present import timeline
from calabi.api.pages.versions import version_url
from calabi.api.pages.web import PageRoute, PageUser, PostedForm, SignedIn, page_services, render, see_other
from calabi.bootstrap import Services
from policies.decisions import Action
from policies.status import PromotionStatus
from registry_store.entities import AuditEvent, Notification, Page, Promotion
from registry_store.errors import ConflictError, InvalidParameterError, PermissionDeniedError
from registry_store.reviews import OUTCOMES

__all__ = ["promotions_router"]

promotions_router = APIRouter(route_class=PageRoute, include_in_schema=False)
PROMOTIONS_PER_PAGE = 25
AWAITING_LIMIT = 100
RUNNING = frozenset({PromotionStatus.RUNNING_CHECKS.value, PromotionStatus.APPLYING.value})
_ACTIONS = {"sign-off": "sign_off", "reject": "reject", "cancel": "cancel", "recheck": "recheck"}
_DONE = {"sign_off": "Signed off", "reject": "Rejected", "cancel": "Cancelled", "recheck": "Re-check started"}


@promotions_router.get("/ui/promotions", response_model=None)
async def approvals_desk(
    request: Request, user: SignedIn, status: str = "", model: str = "", page_token: str | None = None
) -> Response:
    """Promotions awaiting my sign-off, then all promotions with status and model filters."""
    registry = page_services(request).registry

    def load() -> tuple[Page[Promotion], Page[Promotion]]:
        awaiting = registry.promotions.list_promotions(user.actor, awaiting=user.actor, max_results=AWAITING_LIMIT)
        everything = registry.promotions.list_promotions(user.actor, status=status or None, model=model.strip() or None,
                                              max_results=PROMOTIONS_PER_PAGE, page_token=page_token or None)
        return awaiting, everything

    error = ""
    reviews = await run_in_threadpool(registry.reviews.list_reviews, user.actor, status="open")
    try:
        awaiting, everything = await run_in_threadpool(load)
    except InvalidParameterError as exc:
        error, awaiting, everything = exc.message, Page(items=[]), Page(items=[])
    return render(
        request, "promotions.html", user=user, status=400 if error else 200, reviews=reviews,
        outcomes=OUTCOMES, awaiting=awaiting.items,
        promotions=everything.items, next_page_token=everything.next_page_token, first_page=not page_token,
        filters={"status": status, "model": model}, statuses=[s.value for s in PromotionStatus], error=error,
        nav="promotions",
    )


@dataclass
class _Detail:
    promotion: Promotion
    refusals: dict[str, str | None] = field(default_factory=dict)
    events: list[AuditEvent] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)


def _refusals(services: Services, user: PageUser, promotion_id: str) -> dict[str, str | None]:
    """Why the service would refuse each decision from this user now (None: allowed; buttons shown = rules)."""
    refusals: dict[str, str | None] = {}
    for action in Action:
        try:
            services.registry.promotions.authorize_decision(user.actor, promotion_id, action)
        except (PermissionDeniedError, ConflictError, InvalidParameterError) as exc:
            refusals[action] = exc.message
        else:
            refusals[action] = None
    return refusals


def _load(services: Services, user: PageUser, promotion_id: str) -> _Detail:
    registry = services.registry
    promotion = registry.promotions.get_promotion(user.actor, promotion_id)
    events = [e for e in registry.audit.list_audit_events(user.actor, model_name=promotion.model_name, limit=1000,
                                                    newest_first=True)
              if isinstance(e.after, dict) and e.after.get("promotion") == promotion.id]
    return _Detail(
        promotion=promotion, refusals=_refusals(services, user, promotion.id), events=events,
        notifications=registry.notifications.list_notifications(user.actor, promotion_id=promotion.id),
    )


def _ms(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, str) and value:
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    return value if isinstance(value, int) else None


def _view(promotion: Promotion) -> dict[str, Any]:
    """One shape for the template, from the read model (the workflow writes it before anyone may act on it)."""
    approvals = [{**approval, "at_ms": _ms(approval.get("at"))} for approval in promotion.approvals]
    history = [{"at": _ms(h.get("at")), "status": h.get("status", ""), "note": h.get("note", "")}
               for h in promotion.history]
    return {"checklist": promotion.checklist if isinstance(promotion.checklist, dict) else None,
            "approvals": approvals, "status": promotion.status, "message": promotion.message,
            "deadline": promotion.deadline, "history": history, "reminders_sent": promotion.reminders_sent}


@promotions_router.get("/ui/promotions/{promotion_id}", response_model=None)
async def promotion_page(request: Request, user: SignedIn, promotion_id: str) -> Response:
    """Checklist with evidence numbers, sign-offs so far, deadline and reminders, and the decisions I may make."""
    detail = await run_in_threadpool(_load, page_services(request), user, promotion_id)
    view = _view(detail.promotion)
    return render(
        request, "promotion.html", user=user, p=detail.promotion, view=view, refusals=detail.refusals,
        allowed={action for action, why in detail.refusals.items() if why is None}, trail=timeline(detail.events),
        notifications=detail.notifications, running=view["status"] in RUNNING,
        candidate_url=version_url(detail.promotion.model_name, detail.promotion.version), nav="promotions",
    )


@promotions_router.get("/ui/promotions/{promotion_id}/status.json", response_model=None)
async def promotion_status(request: Request, user: SignedIn, promotion_id: str) -> Response:
    """What the page's poller compares: status, liveness, approvals and the last update."""
    p = await run_in_threadpool(page_services(request).registry.promotions.get_promotion, user.actor, promotion_id)
    return JSONResponse({"status": p.status, "live": p.live, "approvals": len(p.approvals),
                         "updated": p.last_updated_timestamp})


@promotions_router.post("/ui/promotions", response_model=None)
async def request_promotion(request: Request, user: SignedIn, form: PostedForm) -> Response:
    """Submit a promotion request (the Stage dialog's governed path); its checks start at once."""
    promotion = await page_services(request).promotions.request(
        user.actor, model=form.get("model"), version=form.get("version"), target_stage=form.get("target_stage"),
        justification=form.get("justification"),
    )
    return see_other(request, f"/ui/promotions/{promotion.id}",
                     flash=f"Promotion of version {promotion.version} to {promotion.target_stage} requested; "
                     "its checks are running.")


@promotions_router.post("/ui/promotions/{promotion_id}/{action}", response_model=None)
async def decide(request: Request, user: SignedIn, form: PostedForm, promotion_id: str, action: str) -> Response:
    """Sign off, reject, cancel or re-check (what each needs is checked by the service)."""
    decision = _ACTIONS.get(action)
    if decision is None:
        raise InvalidParameterError(f"Unknown decision '{action}'.")
    comment = form.get("comment").strip()
    state = await page_services(request).promotions.decide(user.actor, promotion_id, decision, comment)
    return see_other(request, f"/ui/promotions/{promotion_id}",
                     flash=f"{_DONE[decision]}. The promotion is now {state.status.value.replace('_', ' ')}.")


@promotions_router.post("/ui/reviews/{review_id}/complete", response_model=None)
async def complete_review(request: Request, user: SignedIn, form: PostedForm, review_id: str) -> Response:
    """Complete a post-implementation review (the service refuses the admin who broke the glass)."""
    services = page_services(request)
    review = await run_in_threadpool(services.registry.reviews.complete_review, user.actor, review_id,
                                     outcome=form.get("outcome"), note=form.get("note").strip())
    response = see_other(request, "/ui/promotions",
                         flash=f"Review {review.id} of {review.model_name} v{review.version} completed: "
                         f"{review.outcome.replace('_', ' ') if review.outcome else ''}.")
    response.background = BackgroundTask(services.promotions.review_completed, review.id)
    return response
