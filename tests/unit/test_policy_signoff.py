"""Sign-off rules: who may approve, and when enough approvals are in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies.checklist import Approval, SignOffState, sign_off_decision, validate_approval
from policies.models import SignOffRule

RULE = SignOffRule(approvers=2, role="approver")
AT = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rule", "approver", "roles", "already", "refusal"),
    [
        (RULE, "alice", ["approver"], [], None),
        (RULE, "alice", ["viewer", "Approver"], [], None),
        (RULE, "carol", ["approver"], [], "'carol' requested this promotion and cannot approve it"),
        (RULE, " Carol ", ["approver"], [], "' Carol ' requested this promotion and cannot approve it"),
        (SignOffRule(exclude_requester=False), "carol", ["approver"], [], None),
        (RULE, "alice", ["viewer"], [], "'alice' does not have the 'approver' role"),
        (RULE, "alice", [], [], "'alice' does not have the 'approver' role"),
        (SignOffRule(role="ds-lead"), "alice", ["approver"], [], "'alice' does not have the 'ds-lead' role"),
        (RULE, "alice", ["approver"], ["bob", "Alice"], "'alice' has already approved this promotion"),
        (RULE, "  ", ["approver"], [], "an approval needs a user name"),
    ],
)
def test_validate_approval(
    rule: SignOffRule, approver: str, roles: list[str], already: list[str], refusal: str | None
) -> None:
    assert validate_approval(rule, "carol", approver, roles, already) == refusal


def approval(user: str, *roles: str) -> Approval:
    return Approval(user=user, roles=list(roles) or ["approver"], comment="lgtm", at=AT)


@pytest.mark.parametrize(
    ("rule", "approvals", "expected"),
    [
        (RULE, [], SignOffState(approved_by=[], needed=2, satisfied=False)),
        (RULE, [approval("alice")], SignOffState(approved_by=["alice"], needed=2, satisfied=False)),
        (
            RULE,
            [approval("alice"), approval("bob")],
            SignOffState(approved_by=["alice", "bob"], needed=2, satisfied=True),
        ),
        (
            RULE,
            [approval("alice"), approval("alice"), approval("carol"), approval("dave", "viewer")],
            SignOffState(
                approved_by=["alice"],
                needed=2,
                satisfied=False,
                refused=[
                    "'alice' has already approved this promotion",
                    "'carol' requested this promotion and cannot approve it",
                    "'dave' does not have the 'approver' role",
                ],
            ),
        ),
        (
            RULE,
            [approval("alice"), approval("bob"), approval("erin")],
            SignOffState(approved_by=["alice", "bob", "erin"], needed=2, satisfied=True),
        ),
        (SignOffRule(approvers=0), [], SignOffState(approved_by=[], needed=0, satisfied=True)),
    ],
)
def test_sign_off_decision(rule: SignOffRule, approvals: list[Approval], expected: SignOffState) -> None:
    assert sign_off_decision(rule, requester="carol", approvals=approvals) == expected


@pytest.mark.parametrize(
    ("approved", "remaining"), [([], 2), (["alice"], 1), (["alice", "bob"], 0), (["a", "b", "c"], 0)]
)
def test_remaining_approvals(approved: list[str], remaining: int) -> None:
    assert SignOffState(approved_by=approved, needed=2, satisfied=len(approved) >= 2).remaining == remaining


def test_expiry_and_reminders_come_from_the_rule() -> None:
    rule = SignOffRule(reminder_every="12h", expires_after="3d")

    assert rule.reminder_every == timedelta(hours=12)
    assert rule.expires_at(AT) == AT + timedelta(days=3)
