"""``notification_context``: what a notification says about a promotion's state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from activities.promotion import notification_context
from policies.decisions import Approval
from policies.models import SignOffRule
from policies.render import render_notification
from policies.status import PromotionStatus as S
from workflows.models import PromotionState, StopReason

AT = datetime(2026, 1, 15, tzinfo=UTC)


def state(status: S, message: str = "", target: str = "Production", **changes: Any) -> PromotionState:
    return PromotionState(promotion_id="p1", model="churn", version=3, target_stage=target, kind="promotion",
                          requester="carol", status=status, message=message, **changes)


@pytest.mark.parametrize(
    ("stop", "message", "actor", "comment"),
    [
        (StopReason(status=S.REJECTED, by="dave", reason="holdout overlaps training data"), "",
         "dave", "holdout overlaps training data"),
        # Text that looks like another decider is only text: nothing is parsed out of it.
        (StopReason(status=S.REJECTED, by="dave", reason="rejected by erin: no"), "", "dave", "rejected by erin: no"),
        (StopReason(status=S.CANCELLED, by="carol: the requester", reason="found a bug"), "",
         "carol: the requester", "found a bug"),
        (StopReason(status=S.CANCELLED, by="carol"), "", "carol", ""),
        (StopReason(status=S.EXPIRED, reason="not signed off before 2026-01-22"), "",
         "", "not signed off before 2026-01-22"),
        (None, "rejected by dave: looks like a decision", "", "rejected by dave: looks like a decision"),
    ],
)
def test_the_decider_and_the_reason_come_from_the_stop_field(
    stop: StopReason | None, message: str, actor: str, comment: str
) -> None:
    approvals = [Approval(user="bob", roles=["approver"], at=AT)]
    status = stop.status if stop else S.CHECKS_FAILED

    context = notification_context(state(status, message, approvals=approvals, stop=stop), justification="why not")

    assert (context.actor, context.comment, context.justification) == (actor, comment, "why not")
    assert context.approved_by == ["bob"]


@pytest.mark.parametrize("exclude", [True, False])
def test_the_awaiting_notice_follows_the_snapshot_sign_off_rule(exclude: bool) -> None:
    rule = SignOffRule(approvers=1, exclude_requester=exclude)

    text = render_notification("awaiting", notification_context(
        state(S.AWAITING_SIGN_OFF, sign_off=rule, required_approvals=1)))

    assert ("(not the requester)" in text) is exclude, text


def test_only_a_production_promotion_mentions_the_archived_version() -> None:
    production = notification_context(state(S.PROMOTED, incumbent_version=2))
    staging = notification_context(state(S.PROMOTED, target="Staging", incumbent_version=2))

    assert production.incumbent_version == 2 and staging.incumbent_version is None
    assert "The previous Production version 2 was archived." in render_notification("promoted", production)
    assert "archived" not in render_notification("promoted", staging)


@pytest.mark.parametrize("kind", ["cancelled", "failed"])
def test_terminal_kinds_the_workflow_sends_render(kind: str) -> None:
    stop = StopReason(status=S(kind), by="carol", reason="oops")
    text = render_notification(kind, notification_context(state(S(kind), stop.summary, stop=stop)))  # type: ignore[arg-type]

    assert text.startswith(f"[Calabi] churn v3 → Production: {kind}\n")
    assert text.rstrip().endswith("Requested by: carol")


@pytest.mark.parametrize(
    ("stop", "summary"),
    [
        (StopReason(status=S.REJECTED, by="dave", reason="too loose"), "rejected by dave: too loose"),
        (StopReason(status=S.CANCELLED, by="carol"), "cancelled by carol"),
        (StopReason(status=S.EXPIRED, reason="no re-check before the deadline"), "no re-check before the deadline"),
    ],
)
def test_the_stop_summary_is_the_promotions_message(stop: StopReason, summary: str) -> None:
    assert stop.summary == summary
