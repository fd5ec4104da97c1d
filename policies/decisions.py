"""Who may sign off, reject, cancel or re-check a promotion, and what each decision needs.

The one home of these rules. ``RegistryService`` applies ``refusal`` before a decision is
sent to the workflow; the workflow's update validators apply it again to the workflow's own
state, and the workflow counts approvals with ``sign_off_decision``. The sign-off rule
(role, quorum, ``exclude_requester``) comes from the policy snapshot the promotion runs under.

Two names are the same person when they are equal after Unicode NFKC normalisation, case
folding and trimming: ``Ａlice``, ``ALICE`` and ``alice`` are one person. Roles are
compared the same way.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence
from datetime import datetime
from enum import StrEnum

from policies._base import Frozen
from policies.models import SignOffRule
from policies.status import TERMINAL_STATUSES, PromotionStatus

__all__ = [
    "ALLOWED_STATUSES",
    "Action",
    "Approval",
    "PromotionFacts",
    "Refusal",
    "RefusalKind",
    "SignOffState",
    "person_key",
    "refusal",
    "same_person",
    "sign_off_decision",
]


class Action(StrEnum):
    """A human decision on a promotion."""

    SIGN_OFF = "sign_off"
    REJECT = "reject"
    CANCEL = "cancel"
    RECHECK = "recheck"

    @property
    def verb(self) -> str:
        """How a message names the decision."""
        return {"sign_off": "sign off", "recheck": "re-check"}.get(self.value, self.value)


_S = PromotionStatus
ALLOWED_STATUSES: dict[Action, frozenset[PromotionStatus]] = {
    Action.SIGN_OFF: frozenset({_S.AWAITING_SIGN_OFF}),
    Action.REJECT: frozenset({_S.AWAITING_SIGN_OFF, _S.CHECKS_FAILED, _S.CHECK_ERROR}),
    Action.CANCEL: frozenset(_S) - TERMINAL_STATUSES - {_S.APPLYING},
    Action.RECHECK: frozenset({_S.CHECKS_FAILED, _S.CHECK_ERROR}),
}
"""The statuses in which each decision can be made."""


class RefusalKind(StrEnum):
    """Why a decision is refused, named by its MLflow error code."""

    INVALID = "INVALID_PARAMETER_VALUE"
    """The decision is incomplete (a rejection without a reason)."""
    FORBIDDEN = "PERMISSION_DENIED"
    """This user may not make it."""
    CONFLICT = "RESOURCE_CONFLICT"
    """Not now: the promotion's status (or an earlier sign-off) stands in the way."""


class Refusal(Frozen):
    """A refused decision: what kind of refusal and the message for the user."""

    kind: RefusalKind
    message: str


class Approval(Frozen):
    """One approval signal: who, with which roles, why and when."""

    user: str
    roles: list[str] = []
    comment: str = ""
    at: datetime


class PromotionFacts(Frozen):
    """What the rules look at: status, requester, the snapshot's sign-off rule, approvers so far.

    ``sign_off`` is ``None`` when the promotion needs no sign-off or its checks have not run
    yet; the default rule's role then decides who may reject.
    """

    status: PromotionStatus
    requester: str
    sign_off: SignOffRule | None = None
    approved_by: list[str] = []


class SignOffState(Frozen):
    """Accepted approvers so far, how many are needed, and whether that is enough."""

    approved_by: list[str] = []
    needed: int
    satisfied: bool
    refused: list[str] = []

    @property
    def remaining(self) -> int:
        """Approvals still missing."""
        return max(self.needed - len(self.approved_by), 0)


def person_key(name: str) -> str:
    """The comparison key of a user (or role) name: NFKC-normalised, case-folded, trimmed."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold()).strip()


def same_person(a: str, b: str) -> bool:
    """Whether two user names name the same person."""
    return person_key(a) == person_key(b)


def _holds(roles: Collection[str], role: str) -> bool:
    return person_key(role) in {person_key(r) for r in roles}


def _role_refusal(user: str, action: Action, role: str) -> Refusal:
    return Refusal(kind=RefusalKind.FORBIDDEN,
                   message=f"'{user}' may not {action.verb} this promotion: the '{role}' role is required.")


def _signer_refusal(rule: SignOffRule, *, requester: str, user: str, roles: Collection[str]) -> Refusal | None:
    """Why ``user`` may not sign off under ``rule`` at all, or ``None``."""
    if not person_key(user):
        return Refusal(kind=RefusalKind.INVALID, message="A sign-off needs a user name.")
    if not _holds(roles, rule.role):
        return _role_refusal(user, Action.SIGN_OFF, rule.role)
    if rule.exclude_requester and same_person(user, requester):
        return Refusal(kind=RefusalKind.FORBIDDEN,
                       message=f"'{user}' requested this promotion and cannot sign it off (separation of duties).")
    return None


def _repeat_refusal(user: str, approved_by: Collection[str]) -> Refusal | None:
    """A person signs a promotion off once."""
    if any(same_person(user, earlier) for earlier in approved_by):
        return Refusal(kind=RefusalKind.CONFLICT, message=f"'{user}' has already signed off this promotion.")
    return None


def _who_refusal(action: Action, *, user: str, roles: Collection[str], requester: str, rule: SignOffRule
                 ) -> Refusal | None:
    if action is Action.SIGN_OFF:
        return _signer_refusal(rule, requester=requester, user=user, roles=roles)
    if action is Action.REJECT:
        return None if _holds(roles, rule.role) else _role_refusal(user, action, rule.role)
    if same_person(user, requester) or _holds(roles, "admin"):
        return None
    return Refusal(kind=RefusalKind.FORBIDDEN,
                   message=f"Only the requester ({requester}) or an admin may {action.verb} this promotion.")


def refusal(
    action: Action, *, user: str, roles: Collection[str], promotion: PromotionFacts, comment: str | None = None
) -> Refusal | None:
    """Why ``user`` may not make ``action`` on ``promotion`` now, or ``None`` when they may.

    Checked in order: who (role, separation of duties, requester or admin), what the decision
    says (a rejection needs a reason), then when (status, an earlier sign-off by the same person).
    ``comment=None`` leaves out what the decision says (a page choosing which buttons to show).
    """
    refused = _who_refusal(action, user=user, roles=roles, requester=promotion.requester,
                           rule=promotion.sign_off or SignOffRule())
    if refused is not None:
        return refused
    if action is Action.REJECT and comment is not None and not comment.strip():
        return Refusal(kind=RefusalKind.INVALID, message="A rejection needs a reason.")
    allowed = ALLOWED_STATUSES[action]
    if promotion.status not in allowed or (action is Action.SIGN_OFF and promotion.sign_off is None):
        needed = " or ".join(sorted(s.value for s in allowed))
        return Refusal(kind=RefusalKind.CONFLICT,
                       message=f"The promotion is {promotion.status.value}; {action.verb} needs {needed}.")
    return _repeat_refusal(user, promotion.approved_by) if action is Action.SIGN_OFF else None


def sign_off_decision(rule: SignOffRule, *, requester: str, approvals: Sequence[Approval]) -> SignOffState:
    """Count the valid approvals in order (refused ones are listed with their reason)."""
    approved_by: list[str] = []
    refused: list[str] = []
    for approval in approvals:
        reason = _signer_refusal(rule, requester=requester, user=approval.user, roles=approval.roles) or \
            _repeat_refusal(approval.user, approved_by)
        if reason is None:
            approved_by.append(approval.user)
        else:
            refused.append(reason.message)
    return SignOffState(
        approved_by=approved_by, needed=rule.approvers, satisfied=len(approved_by) >= rule.approvers, refused=refused
    )
