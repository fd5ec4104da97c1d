"""``notification_context``: what a notification says about a promotion's state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from activities.promotion import notification_context
from policies.checklist import Approval
from policies.render import render_notification
from policies.status import PromotionStatus as S
from workflows.models import PromotionState

AT = datetime(2026, 1, 15, tzinfo=UTC)


def state(status: S, message: str = "", target: str = "Production", **changes: object) -> PromotionState:
    return PromotionState(promotion_id="p1", model="churn", version=3, target_stage=target, kind="promotion",
                          requester="carol", status=status, message=message, **changes)


@pytest.mark.parametrize(
    ("kind", "message", "actor", "comment"),
    [
        ("rejected", "rejected by dave: holdout overlaps training data", "dave", "holdout overlaps training data"),
        ("rejected", "rejected by dave: reason: with a colon", "dave", "reason: with a colon"),
        ("cancelled", "cancelled by carol: found a bug", "carol", "found a bug"),
        ("cancelled", "cancelled by carol", "carol", ""),
        ("rejected", "something else entirely", "", "something else entirely"),
        ("failed", "apply failed: Version 3 is in Archived", "", "apply failed: Version 3 is in Archived"),
    ],
)
def test_the_decider_and_the_reason_come_from_the_message(kind: str, message: str, actor: str, comment: str) -> None:
    approvals = [Approval(user="bob", roles=["approver"], at=AT)]

    context = notification_context(kind, state(S(kind), message, approvals=approvals), justification="why not")

    assert (context.actor, context.comment, context.justification) == (actor, comment, "why not")
    assert context.approved_by == ["bob"]


def test_only_a_production_promotion_mentions_the_archived_version() -> None:
    production = notification_context("promoted", state(S.PROMOTED, incumbent_version=2))
    staging = notification_context("promoted", state(S.PROMOTED, target="Staging", incumbent_version=2))

    assert production.incumbent_version == 2 and staging.incumbent_version is None
    assert "The previous Production version 2 was archived." in render_notification("promoted", production)
    assert "archived" not in render_notification("promoted", staging)


@pytest.mark.parametrize("kind", ["cancelled", "failed"])
def test_terminal_kinds_the_workflow_sends_render(kind: str) -> None:
    text = render_notification(kind, notification_context(kind, state(S(kind), f"{kind} by carol: oops")))  # type: ignore[arg-type]

    assert text.startswith(f"[Calabi] churn v3 → Production: {kind}\n")
    assert text.rstrip().endswith("Requested by: carol")
