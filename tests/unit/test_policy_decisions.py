"""Decision rules: who may sign off, reject, cancel or re-check, what each needs, and the sign-off count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies.decisions import (
    Action,
    Approval,
    PromotionFacts,
    Refusal,
    RefusalKind,
    Signer,
    SignOffState,
    person_key,
    refusal,
    same_person,
    sign_off_decision,
)
from policies.models import SignOffRule
from policies.status import PromotionStatus as S

RULE = SignOffRule(approvers=2, role="approver")
AT = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
FORBIDDEN, INVALID, CONFLICT = RefusalKind.FORBIDDEN, RefusalKind.INVALID, RefusalKind.CONFLICT


def facts(status: S = S.AWAITING_SIGN_OFF, *, rule: SignOffRule | None = RULE, approved: tuple[str, ...] = ()
          ) -> PromotionFacts:
    return PromotionFacts(status=status, requester="carol", sign_off=rule, signers=[Signer(user=a) for a in approved])


def why(action: Action, user: str, *roles: str, comment: str | None = None, **promotion: object) -> RefusalKind | None:
    """The kind of refusal (None: allowed) of ``action`` by ``user`` on a promotion requested by carol."""
    refused = refusal(action, user=user, roles=roles, promotion=facts(**promotion), comment=comment)  # type: ignore[arg-type]
    return refused.kind if refused else None


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("alice", "alice", True),
        ("Alice", "ALICE", True),
        ("\uff21lice", "alice", True),  # fullwidth A (NFKC compatibility form)
        ("ａｌｉｃｅ", "ALICE", True),
        ("  alice ", "alice", True),
        ("\u3000alice", "alice", True),  # ideographic space is whitespace after NFKC
        ("straße", "STRASSE", True),  # case folding, not lower()
        ("ﬁona", "fiona", True),  # the 'fi' ligature
        ("alice", "alicia", False),
        ("alice", "al ice", False),
        ("bob", "", False),
    ],
)
def test_same_person_after_nfkc_and_case_folding(a: str, b: str, same: bool) -> None:
    assert same_person(a, b) is same
    assert (person_key(a) == person_key(b)) is same


# ------------------------------------------------------------------------------ sign-off


@pytest.mark.parametrize(
    ("user", "roles", "kwargs", "expected"),
    [
        ("alice", ["approver"], {}, None),
        ("alice", ["viewer", "Approver"], {}, None),
        ("alice", ["viewer"], {}, FORBIDDEN),
        ("alice", [], {}, FORBIDDEN),
        ("alice", ["approver"], {"rule": SignOffRule(role="ds-lead")}, FORBIDDEN),
        ("carol", ["approver"], {}, FORBIDDEN),
        ("CAROL", ["approver"], {}, FORBIDDEN),
        ("\uff23arol", ["approver"], {}, FORBIDDEN),
        ("carol", ["approver"], {"rule": SignOffRule(exclude_requester=False)}, None),
        ("\uff23AROL", ["approver"], {"rule": SignOffRule(exclude_requester=False)}, None),
        ("alice", ["approver"], {"approved": ("bob", "ALICE")}, CONFLICT),
        ("alice", ["approver"], {"status": S.CHECKS_FAILED}, CONFLICT),
        ("alice", ["approver"], {"status": S.RUNNING_CHECKS, "rule": None}, CONFLICT),
        ("alice", ["approver"], {"rule": None}, CONFLICT),  # no sign-off rule: nothing to sign off
        ("  ", ["approver"], {}, INVALID),
    ],
)
def test_who_may_sign_off(user: str, roles: list[str], kwargs: dict[str, object], expected: RefusalKind | None
                          ) -> None:
    assert why(Action.SIGN_OFF, user, *roles, comment="", **kwargs) is expected


def test_sign_off_refusals_say_why() -> None:
    def message(user: str, *roles: str, **kwargs: object) -> str:
        refused = refusal(Action.SIGN_OFF, user=user, roles=roles, promotion=facts(**kwargs))  # type: ignore[arg-type]
        assert refused is not None
        return refused.message

    assert message("carol", "approver") == (
        "'carol' requested this promotion and cannot sign it off (separation of duties).")
    assert message("dave", "viewer") == "'dave' may not sign off this promotion: the 'approver' role is required."
    assert message("alice", "approver", approved=("Alice",)) == "'alice' has already signed off this promotion."
    assert message("alice", "approver", status=S.CHECKS_FAILED) == (
        "The promotion is checks_failed; sign off needs awaiting_sign_off.")


def test_permission_is_checked_before_status() -> None:
    assert why(Action.SIGN_OFF, "carol", "approver", status=S.CHECKS_FAILED) is FORBIDDEN
    assert why(Action.REJECT, "dave", "viewer", comment=" ", status=S.PROMOTED) is FORBIDDEN


# ------------------------------------------------------------------------------ reject


@pytest.mark.parametrize(
    ("user", "roles", "comment", "kwargs", "expected"),
    [
        ("alice", ["approver"], "holdout overlaps training", {}, None),
        ("alice", ["approver"], "no", {"status": S.CHECKS_FAILED}, None),
        ("carol", ["approver"], "withdrawn by the requester's lead hat", {}, None),  # rejecting is not signing off
        ("alice", ["approver"], "", {}, INVALID),
        ("alice", ["approver"], "   \n\t", {}, INVALID),
        ("alice", ["approver"], "\u3000", {}, INVALID),
        ("alice", ["approver"], None, {}, None),  # no comment yet: only who and when
        ("alice", ["approver"], "   ", {"status": S.PROMOTED}, INVALID),  # what it says before when
        ("alice", ["approver"], "why", {"status": S.RUNNING_CHECKS}, CONFLICT),
        ("alice", ["approver"], "why", {"status": S.APPLYING}, CONFLICT),
        ("dave", ["engineer"], "why", {}, FORBIDDEN),
        ("alice", ["approver"], "why", {"rule": SignOffRule(role="ds-lead")}, FORBIDDEN),
        ("alice", ["approver"], "why", {"status": S.CHECKS_FAILED, "rule": None}, None),  # default role
    ],
)
def test_who_may_reject_and_a_rejection_needs_a_reason(
    user: str, roles: list[str], comment: str | None, kwargs: dict[str, object], expected: RefusalKind | None
) -> None:
    assert why(Action.REJECT, user, *roles, comment=comment, **kwargs) is expected


def test_a_blank_reason_is_refused_with_one_message() -> None:
    assert refusal(Action.REJECT, user="alice", roles=["approver"], promotion=facts(), comment=" ") == Refusal(
        kind=INVALID, message="A rejection needs a reason.")


# ------------------------------------------------------------------------------ cancel, re-check


@pytest.mark.parametrize(
    ("action", "user", "roles", "status", "expected"),
    [
        (Action.CANCEL, "carol", ["engineer"], S.AWAITING_SIGN_OFF, None),
        (Action.CANCEL, "CAROL", ["engineer"], S.RUNNING_CHECKS, None),
        (Action.CANCEL, "\uff43arol", ["engineer"], S.CHECKS_FAILED, None),
        (Action.CANCEL, "root", ["admin"], S.AWAITING_SIGN_OFF, None),
        (Action.CANCEL, "erin", ["engineer", "approver"], S.AWAITING_SIGN_OFF, FORBIDDEN),
        (Action.CANCEL, "carol", ["engineer"], S.APPLYING, CONFLICT),
        (Action.CANCEL, "carol", ["engineer"], S.PROMOTED, CONFLICT),
        (Action.CANCEL, "carol", ["engineer"], S.REJECTED, CONFLICT),
        (Action.RECHECK, "carol", ["engineer"], S.CHECKS_FAILED, None),
        (Action.RECHECK, "Carol", ["engineer"], S.CHECKS_FAILED, None),
        (Action.RECHECK, "root", ["admin"], S.CHECKS_FAILED, None),
        (Action.RECHECK, "erin", ["engineer"], S.CHECKS_FAILED, FORBIDDEN),
        (Action.RECHECK, "carol", ["engineer"], S.AWAITING_SIGN_OFF, CONFLICT),
        (Action.RECHECK, "carol", ["engineer"], S.CHECK_ERROR, None),
        (Action.RECHECK, "erin", ["engineer"], S.CHECK_ERROR, FORBIDDEN),
        (Action.CANCEL, "carol", ["engineer"], S.CHECK_ERROR, None),
    ],
)
def test_only_the_requester_or_an_admin_cancels_or_rechecks(
    action: Action, user: str, roles: list[str], status: S, expected: RefusalKind | None
) -> None:
    assert why(action, user, *roles, comment="", status=status) is expected


def test_refusal_kinds_are_mlflow_error_codes() -> None:
    assert [kind.value for kind in RefusalKind] == ["INVALID_PARAMETER_VALUE", "PERMISSION_DENIED", "RESOURCE_CONFLICT"]


# ------------------------------------------------------------------------------ counting approvals


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
            [approval("alice"), approval("ＡＬＩＣＥ"), approval("carol"), approval("dave", "viewer")],
            SignOffState(
                approved_by=["alice"],
                needed=2,
                satisfied=False,
                refused=[
                    "'ＡＬＩＣＥ' has already signed off this promotion.",
                    "'carol' requested this promotion and cannot sign it off (separation of duties).",
                    "'dave' may not sign off this promotion: the 'approver' role is required.",
                ],
            ),
        ),
        (
            SignOffRule(approvers=2, exclude_requester=False),
            [approval("carol"), approval("bob")],
            SignOffState(approved_by=["carol", "bob"], needed=2, satisfied=True),
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
