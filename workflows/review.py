"""PostImplementationReviewWorkflow: remind the reviewers of a break-glass move, escalate to admins when overdue.

Started (best effort) after the move's transaction commits, with id ``review-<review id>``; the reconciler
starts it for an open review that has none. Every ``reminder_every`` before the deadline it sends a reminder
(``remind_review``); at the deadline it marks the review escalated and notifies the admins
(``escalate_review``). Completing the review signals ``completed`` and the run ends; a reminder or the
escalation that finds the review completed (the signal was lost) ends it too.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.models import ReviewInput, ReviewReminder, review_workflow_id

__all__ = ["REVIEW_ACTIVITY_TIMEOUT", "REVIEW_RETRY", "PostImplementationReviewWorkflow", "review_workflow_id"]

REVIEW_ACTIVITY_TIMEOUT = timedelta(seconds=30)
"""A reminder or the escalation: a few reads and writes, and webhooks bounded at 5 s each."""
REVIEW_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1), maximum_attempts=0,
    non_retryable_error_types=["RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED"],
)


@workflow.defn
class PostImplementationReviewWorkflow:
    """Remind until the deadline, then escalate; ends when the review is completed."""

    def __init__(self) -> None:
        self._completed = False

    @workflow.run
    async def run(self, review: ReviewInput) -> str:
        """``completed`` or ``escalated``."""
        deadline = workflow.now() + review.time_left
        reminders = 0
        while (left := deadline - workflow.now()) > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self._completed, timeout=min(review.reminder_every, left))
            except TimeoutError:
                pass
            if self._completed:
                return "completed"
            if workflow.now() >= deadline:
                break
            reminders += 1
            still_open: bool = await workflow.execute_activity(
                "remind_review", ReviewReminder(review_id=review.review_id, number=reminders), result_type=bool,
                start_to_close_timeout=REVIEW_ACTIVITY_TIMEOUT, retry_policy=REVIEW_RETRY,
            )
            if not still_open:
                return "completed"
        escalated: bool = await workflow.execute_activity(
            "escalate_review", review.review_id, result_type=bool,
            start_to_close_timeout=REVIEW_ACTIVITY_TIMEOUT, retry_policy=REVIEW_RETRY,
        )
        return "escalated" if escalated else "completed"

    @workflow.signal
    def completed(self) -> None:
        """The review was completed: stop reminding."""
        self._completed = True
