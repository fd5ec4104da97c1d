"""A break-glass move into Production opens a post-implementation review that reminds, then escalates when overdue.

On the time-skipping server with the real activities and registry: one review's workflow is started as the
API starts it after the move, the other's by the reconciler (as after a crash between the move's commit and
the start); the first is completed and its workflow ends, the other is reminded every ``reminder_every`` and
escalated to the admins at its deadline.
"""

from __future__ import annotations

from datetime import timedelta

from calabi.reconciler import PromotionReconciler
from registry_store.entities import Notification, PostImplementationReview
from tests.workflows.conftest import Harness, wait_until
from workflows.models import review_workflow_id


def _break_glass(h: Harness, reason: str) -> tuple[str, PostImplementationReview]:
    model = f"churn-{reason.split()[0].lower()}"
    h.registry.models.create_registered_model(h.requester, name=model)
    h.add_version(model, auc=0.85, log_loss=0.4)
    h.registry.stages.transition_stage(h.admin, name=model, version=1, stage="production", reason=reason)
    [review] = h.registry.reviews.list_reviews(h.viewer, model=model)
    h.started.append(review_workflow_id(review.id))
    return model, review


def _sent(h: Harness, review: PostImplementationReview, kind: str) -> list[Notification]:
    return [n for n in reversed(h.registry.notifications.list_notifications(
        h.viewer, promotion_id=review_workflow_id(review.id))) if n.kind == kind]


async def test_break_glass_review_reminds_then_shows_overdue_and_notifies_admins(harness: Harness) -> None:
    h = harness
    rule = h.stage_policy("any").break_glass_review()
    assert rule is not None and rule.review_within == 4 * rule.reminder_every
    late_model, late = _break_glass(h, "Outage scores are wrong")
    done_model, done = _break_glass(h, "Hotfix for a bad release")
    assert late.status == "open" and late.admin == h.admin.name and late.reason == "Outage scores are wrong"
    assert late.due_at - late.opened_at == rule.review_within.total_seconds() * 1000
    [stint] = h.registry.production.production_history(h.viewer, late_model).stints
    assert stint.break_glass and stint.review is not None and stint.review.id == late.id
    assert stint.why == "Outage scores are wrong"

    await h.promotions.start_reviews(done_model)  # as the API does once the move committed
    # ``late`` lost its start (a crash after the commit): the reconciler starts it, and keeps ``done``'s run.
    started = await PromotionReconciler(h.registry, h.promotions, grace=timedelta(0)).reconcile_reviews()
    assert sorted(started.reviews_started) == sorted([late.id, done.id])
    h.registry.reviews.complete_review(h.approver, done.id, outcome="accepted", note="the fix was right")
    await h.promotions.review_completed(done.id)
    assert await h.client.get_workflow_handle(review_workflow_id(done.id)).result() == "completed"

    await h.skip(rule.reminder_every + timedelta(hours=1))  # virtual time: the first reminder is due
    await wait_until(lambda: len(_sent(h, late, "review_reminder")) == 1, "the first reminder")
    [reminder] = _sent(h, late, "review_reminder")
    assert h.approver.name in reminder.recipients and h.admin.name not in reminder.recipients
    assert h.registry.reviews.get_review(h.viewer, late.id).status == "open"

    await h.skip(rule.review_within)  # past the deadline
    assert await h.client.get_workflow_handle(review_workflow_id(late.id)).result() == "escalated"

    assert len(_sent(h, late, "review_reminder")) == 3  # at 12 h, 24 h and 36 h of the 48 h
    [escalation] = _sent(h, late, "review_escalated")
    assert escalation.recipients == [h.admin.name] and "Overdue" in escalation.body
    assert [r.id for r in h.registry.reviews.list_reviews(h.viewer, status="overdue")] == [late.id]
    [stint] = h.registry.production.production_history(h.viewer, late_model).stints
    assert stint.review is not None and stint.review.status == "overdue"
    assert h.registry.production.production_history(h.viewer, done_model).stints[0].review.status == "completed"
    assert not _sent(h, done, "review_reminder")
    again = await PromotionReconciler(h.registry, h.promotions, grace=timedelta(0)).reconcile_reviews()
    assert again.reviews_started == []  # escalated and completed reviews need no workflow
