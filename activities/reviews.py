"""ReviewActivities: the reminders and the escalation of a post-implementation review (``workflows/review.py``).

Each notification is one event of the outbox with a key of its own (``review-<id>/reminder-<n>``,
``review-<id>/escalated``), so a retried attempt or a restarted workflow never sends it twice. The outbox
row's ``promotion_id`` is ``review-<id>``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity

from activities.errors import domain_errors
from activities.model_evidence import evidence_actor
from activities.notify import Notifier
from registry_store.entities import PostImplementationReview
from registry_store.service import RegistryService
from workflows.models import ReviewReminder, review_workflow_id

__all__ = ["ReviewActivities", "review_message"]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def review_message(review: PostImplementationReview, *, escalated: bool) -> str:
    """The text of a reminder, or of the escalation to admins."""
    subject = f"{review.model_name} v{review.version}"
    reason = f" Reason given: {review.reason}." if review.reason else ""
    if escalated:
        return (f"Overdue: the post-implementation review {review.id} of {review.admin}'s break-glass move of "
                f"{subject} into Production was due {_when(review.due_at)} and is not completed.{reason}")
    return (f"Reminder: the post-implementation review {review.id} of {review.admin}'s break-glass move of "
            f"{subject} into Production is due {_when(review.due_at)}; a {review.reviewer_role} other than "
            f"{review.admin} completes it (calabi reviews complete {review.id}).{reason}")


class ReviewActivities:
    """The activities of PostImplementationReviewWorkflow, bound to the registry and the notifier."""

    def __init__(self, registry: RegistryService, notifier: Notifier) -> None:
        self._registry = registry
        self._notifier = notifier

    @activity.defn(name="remind_review")
    @domain_errors
    def remind_review(self, reminder: ReviewReminder) -> bool:
        """Remind the reviewers (the admin who broke the glass excepted); False: the review is completed."""
        actor = evidence_actor()
        review = self._registry.reviews.get_review(actor, reminder.review_id)
        if review.status == "completed":
            return False
        recipients = [name for name in self._registry.reviews.people_with_role(actor, review.reviewer_role)
                      if name != review.admin]
        self._notifier.deliver(
            kind="review_reminder", promotion_id=review_workflow_id(review.id), model_name=review.model_name,
            body=review_message(review, escalated=False), payload=review.model_dump(mode="json"),
            event_key=f"{review_workflow_id(review.id)}/reminder-{reminder.number}", recipients=recipients,
        )
        return True

    @activity.defn(name="escalate_review")
    @domain_errors
    def escalate_review(self, review_id: int) -> bool:
        """Mark the review escalated and notify the admins; False: it was completed in time."""
        actor = evidence_actor()
        review = self._registry.reviews.escalate_review(actor, review_id)
        if review.status == "completed":
            return False
        self._notifier.deliver(
            kind="review_escalated", promotion_id=review_workflow_id(review.id), model_name=review.model_name,
            body=review_message(review, escalated=True), payload=review.model_dump(mode="json"),
            event_key=f"{review_workflow_id(review.id)}/escalated",
            recipients=self._registry.reviews.people_with_role(actor, "admin"),
        )
        return True
