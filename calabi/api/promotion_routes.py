"""``/api/v1/promotions``: submit promotions, decide on them, follow them; serving schemas and rollback."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, BackgroundTasks
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from calabi.api.deps import CurrentActor, ServicesDep
from registry_store.entities import EvidencePack, Notification, Promotion
from registry_store.errors import NotFoundError
from workflows.models import PromotionState

__all__ = ["promotion_router"]

promotion_router = APIRouter(prefix="/api/v1", tags=["promotions"])


class PromotionCreate(BaseModel):
    """Body of ``POST /promotions``."""

    model: str
    version: int
    target_stage: str = "Production"
    justification: str = Field(min_length=1, max_length=5000)


class CommentBody(BaseModel):
    """Body of ``sign-off`` (optional comment)."""

    comment: str = Field(default="", max_length=5000)


class ReasonBody(BaseModel):
    """Body of ``cancel`` (optional reason)."""

    reason: str = Field(default="", max_length=5000)


class RejectBody(BaseModel):
    """Body of ``reject``: the reason (a rejection needs one: ``policies.decisions``)."""

    reason: str = Field(max_length=5000)


class RollbackBody(BaseModel):
    """Body of ``POST /models/{name}/rollback``."""

    justification: str = Field(min_length=1, max_length=5000)


class ServingSchemaBody(BaseModel):
    """The live serving schema: an MLflow signature JSON string."""

    signature: str = Field(min_length=2, max_length=200_000)


class PromotionDetail(BaseModel):
    """A promotion: its read model (status, checklist, sign-offs, sign-off rule, deadline, history)."""

    promotion: Promotion


class PromotionPage(BaseModel):
    """One page of promotions."""

    promotions: list[Promotion]
    next_page_token: str | None = None


@promotion_router.post("/promotions", response_model=Promotion, status_code=201)
async def create_promotion(services: ServicesDep, actor: CurrentActor, body: PromotionCreate) -> Promotion:
    """Request a promotion; its checks start at once."""
    return await services.promotions.request(
        actor, model=body.model, version=body.version, target_stage=body.target_stage,
        justification=body.justification,
    )


@promotion_router.get("/promotions", response_model=PromotionPage)
async def list_promotions(
    services: ServicesDep, actor: CurrentActor, status: str | None = None, model: str | None = None,
    awaiting: Literal["me"] | None = None, max_results: int = 100, page_token: str | None = None,
) -> PromotionPage:
    """Promotions, newest first; ``awaiting=me`` lists those waiting for the caller's sign-off."""
    page = await run_in_threadpool(
        services.registry.promotions.list_promotions, actor, status=status, model=model,
        awaiting=actor if awaiting == "me" else None, max_results=max_results, page_token=page_token,
    )
    return PromotionPage(promotions=list(page.items), next_page_token=page.next_page_token)


@promotion_router.get("/promotions/{promotion_id}", response_model=PromotionDetail)
async def get_promotion(services: ServicesDep, actor: CurrentActor, promotion_id: str) -> PromotionDetail:
    """Checklist with evidence numbers, sign-offs, deadline and history, from the read model (no workflow query)."""
    promotion = await run_in_threadpool(services.registry.promotions.get_promotion, actor, promotion_id)
    return PromotionDetail(promotion=promotion)


@promotion_router.get("/promotions/{promotion_id}/notifications", response_model=list[Notification])
async def promotion_notifications(services: ServicesDep, actor: CurrentActor, promotion_id: str) -> list[Notification]:
    """The messages sent about one promotion, newest first."""
    return await run_in_threadpool(services.registry.notifications.list_notifications, actor, promotion_id=promotion_id)


@promotion_router.get("/promotions/{promotion_id}/evidence-pack", response_model=EvidencePack)
async def evidence_pack(services: ServicesDep, actor: CurrentActor, promotion_id: str) -> EvidencePack:
    """Everything an examiner needs about one promotion, with the audit chain from its events to the head."""
    return await run_in_threadpool(
        services.registry.evidence_packs.evidence_pack, actor, promotion_id,
        policy_dir=services.settings.resolved_policy_dir(), anchor=services.audit_anchor,
    )


@promotion_router.post("/promotions/{promotion_id}/sign-off", response_model=PromotionState)
async def sign_off(services: ServicesDep, actor: CurrentActor, promotion_id: str, body: CommentBody) -> PromotionState:
    """Sign a promotion off (the policy's approver role; not the requester unless the policy allows it)."""
    return await services.promotions.decide(actor, promotion_id, "sign_off", body.comment)


@promotion_router.post("/promotions/{promotion_id}/reject", response_model=PromotionState)
async def reject(services: ServicesDep, actor: CurrentActor, promotion_id: str, body: RejectBody) -> PromotionState:
    """Reject a promotion with a reason (approver role)."""
    return await services.promotions.decide(actor, promotion_id, "reject", body.reason)


@promotion_router.post("/promotions/{promotion_id}/cancel", response_model=PromotionState)
async def cancel(services: ServicesDep, actor: CurrentActor, promotion_id: str, body: ReasonBody) -> PromotionState:
    """Withdraw a promotion (requester or admin)."""
    return await services.promotions.decide(actor, promotion_id, "cancel", body.reason)


@promotion_router.post("/promotions/{promotion_id}/recheck", response_model=PromotionState)
async def recheck(services: ServicesDep, actor: CurrentActor, promotion_id: str) -> PromotionState:
    """Run the failed checks again (requester or admin)."""
    return await services.promotions.decide(actor, promotion_id, "recheck")


@promotion_router.post("/models/{name}/rollback", response_model=Promotion, status_code=201)
async def rollback(services: ServicesDep, actor: CurrentActor, name: str, body: RollbackBody) -> Promotion:
    """Request re-promotion of the previous Production version (rollback policy)."""
    return await services.promotions.rollback(actor, model=name, justification=body.justification)


@promotion_router.put("/models/{name}/serving-schema", status_code=204)
async def set_serving_schema(
    services: ServicesDep, actor: CurrentActor, name: str, body: ServingSchemaBody, background: BackgroundTasks
) -> None:
    """Set the live serving schema promotions are checked against (the model's live promotions re-verify)."""
    await run_in_threadpool(services.registry.schemas.set_serving_schema, actor, model=name, signature=body.signature)
    background.add_task(services.promotions.evidence_may_have_changed, name)


@promotion_router.get("/models/{name}/serving-schema", response_model=ServingSchemaBody)
async def get_serving_schema(services: ServicesDep, actor: CurrentActor, name: str) -> ServingSchemaBody:
    """The live serving schema (404 when none is set)."""
    signature = await run_in_threadpool(services.registry.schemas.get_serving_schema, actor, name)
    if not signature:
        raise NotFoundError(f"No serving schema is set for {name}.")
    return ServingSchemaBody(signature=signature)
