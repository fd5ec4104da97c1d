"""``/api/v1/reviews``: the post-implementation reviews that admins' break-glass moves into Production opened."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Query
from pydantic import BaseModel, Field

from calabi.api.deps import CurrentActor, ServicesDep
from registry_store.entities import PostImplementationReview

__all__ = ["review_router"]

review_router = APIRouter(prefix="/api/v1", tags=["reviews"])


class ReviewList(BaseModel):
    """Reviews, most urgent first (completed ones: most recently completed first)."""

    reviews: list[PostImplementationReview]


class ReviewCompletion(BaseModel):
    """Body of ``POST /reviews/{id}/complete``."""

    outcome: Literal["accepted", "rollback_required"]
    note: str = Field(default="", max_length=10_000)


@review_router.get("/reviews", response_model=ReviewList)
def list_reviews(
    services: ServicesDep, actor: CurrentActor,
    status: Annotated[str | None, Query(description="open (overdue included), overdue or completed")] = None,
    model: str | None = None,
) -> ReviewList:
    """Post-implementation reviews; overdue is derived from the due time when read."""
    return ReviewList(reviews=services.registry.reviews.list_reviews(actor, status=status, model=model))


@review_router.get("/reviews/{review_id}", response_model=PostImplementationReview)
def get_review(services: ServicesDep, actor: CurrentActor, review_id: str) -> PostImplementationReview:
    """One review."""
    return services.registry.reviews.get_review(actor, review_id)


@review_router.post("/reviews/{review_id}/complete", response_model=PostImplementationReview)
def complete_review(
    services: ServicesDep, actor: CurrentActor, review_id: str, body: ReviewCompletion, background: BackgroundTasks,
) -> PostImplementationReview:
    """Complete a review (a reviewer other than the admin who broke the glass); its workflow is told to end."""
    review = services.registry.reviews.complete_review(actor, review_id, outcome=body.outcome, note=body.note)
    background.add_task(services.promotions.review_completed, review.id)
    return review
