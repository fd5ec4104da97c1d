"""What crosses the Temporal boundary: workflow input, messages, state and activity payloads.

Only pydantic and ``policies`` models (pure data) live here, so the workflow sandbox
imports nothing that touches a database or the network.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from policies.decisions import Approval
from policies.evidence import Evidence, TestRun
from policies.models import SignOffRule, StagePolicy, TestsRule
from policies.results import Checklist, CheckResult
from policies.status import PromotionStatus

__all__ = [
    "HEAVY_QUEUE_SUFFIX",
    "TASK_QUEUE",
    "ApplyInput",
    "CheckInput",
    "Decision",
    "EvidenceSnapshot",
    "ModelEvidenceInput",
    "NotifyInput",
    "PromotionInput",
    "PromotionOutcome",
    "PromotionState",
    "RecordStateInput",
    "ReviewInput",
    "ReviewReminder",
    "SignOffRecord",
    "StateChange",
    "StopReason",
    "TestsInput",
    "heavy_task_queue",
    "review_workflow_id",
]

TASK_QUEUE = "calabi-promotions"
HEAVY_QUEUE_SUFFIX = "-heavy"


def heavy_task_queue(task_queue: str) -> str:
    """The queue of the heavy activities (model loads, test runs) next to ``task_queue``; bounded slots."""
    return task_queue + HEAVY_QUEUE_SUFFIX


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PromotionInput(_Message):
    """Starts a PromotionWorkflow; the request row already exists in the registry."""

    promotion_id: str
    model: str
    version: int
    target_stage: str
    kind: str = "promotion"
    requester: str


class Decision(_Message):
    """A human decision sent to the workflow: sign-off, reject, cancel or re-check.

    ``user``, ``roles`` and ``groups`` come from the authenticated caller, never from the request body.
    """

    user: str
    roles: list[str]
    groups: list[str] = []
    comment: str = ""


class EvidenceSnapshot(_Message):
    """The evidence a checklist runs over, with the policy in force (of the model's risk tier, if any).

    ``run_author`` is who trained the candidate (its run's user on the tracking server, else who registered it).
    """

    evidence: Evidence
    policy: StagePolicy
    policy_hash: str
    incumbent_version: int | None
    storage_location: str
    checks: list[str]
    run_author: str = ""
    risk_tier: str | None = None


class ModelEvidenceInput(_Message):
    """Compute (once per artifact digest) what the checks need from a version's model files."""

    model: str
    version: int


def review_workflow_id(review_id: int) -> str:
    """The id of the workflow that follows one post-implementation review."""
    return f"review-{review_id}"


class ReviewInput(_Message):
    """Starts a PostImplementationReviewWorkflow; the review row already exists in the registry.

    ``time_left`` is measured by the starter against the registry's clock, so the workflow's deadline does
    not depend on Temporal's clock agreeing with it.
    """

    review_id: int
    model: str
    version: int
    time_left: timedelta
    reminder_every: timedelta


class ReviewReminder(_Message):
    """The ``number``-th reminder of a review (one notification event each)."""

    review_id: int
    number: int = Field(ge=1)


class TestsInput(_Message):
    """Run the policy's test command against the candidate artifact."""

    __test__ = False  # not a pytest class

    promotion_id: str
    storage_location: str
    rule: TestsRule
    digest: str = ""
    """The candidate's digest recorded at registration: the downloaded copy must match it."""


class CheckInput(_Message):
    """Run one named check over a snapshot (with the test run, for the tests check)."""

    name: str
    snapshot: EvidenceSnapshot
    test_run: TestRun | None = None


class StateChange(_Message):
    """One entry of a promotion's history."""

    at: datetime
    status: PromotionStatus
    note: str = ""


class StopReason(_Message):
    """Why a promotion stopped: the status it ends in, who decided (empty: the workflow itself), and why."""

    status: PromotionStatus
    by: str = ""
    reason: str = ""

    @property
    def summary(self) -> str:
        """One line: ``rejected by dave: <reason>``, ``cancelled by carol``, or the workflow's own reason."""
        if not self.by:
            return self.reason
        return f"{self.status.value} by {self.by}" + (f": {self.reason}" if self.reason else "")


class PromotionState(_Message):
    """The live state the query returns.

    ``sign_off`` is the sign-off rule of the policy snapshot the checks ran under (``None``: no
    sign-off needed, or no checks run yet), ``run_author`` and ``risk_tier`` come from that snapshot;
    ``stop`` is set once the promotion is stopping.
    """

    promotion_id: str
    model: str
    version: int
    target_stage: str
    kind: str
    requester: str
    status: PromotionStatus
    checklist: Checklist | None = None
    approvals: list[Approval] = Field(default_factory=list)
    required_approvals: int = 0
    approver_role: str = "approver"
    deadline: datetime | None = None
    reminders_sent: int = 0
    sign_off: SignOffRule | None = None
    stop: StopReason | None = None
    message: str = ""
    policy_hash: str = ""
    incumbent_version: int | None = None
    run_author: str = ""
    risk_tier: str | None = None
    history: list[StateChange] = Field(default_factory=list)


class RecordStateInput(_Message):
    """Mirror the workflow's state into the registry's read model."""

    state: PromotionState


class SignOffRecord(_Message):
    """Audit one accepted sign-off under the approver's name."""

    promotion_id: str
    approval: Approval
    approvals: list[Approval]


class ApplyInput(_Message):
    """Perform the approved transition in one transaction."""

    promotion_id: str
    expected_incumbent: int | None
    approvers: list[str]
    validated_on: datetime
    checklist: Checklist | None = None


class NotifyInput(_Message):
    """Render a notification for a promotion and deliver it to the outbox and webhooks."""

    kind: str
    state: PromotionState


class PromotionOutcome(_Message):
    """How a promotion ended."""

    status: PromotionStatus
    message: str = ""


def check_result_failed(name: str, reason: str) -> CheckResult:
    """A failed result for a check that could not run."""
    return CheckResult(name=name, passed=False, reasons=[reason])
