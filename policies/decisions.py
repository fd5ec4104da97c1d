"""Who may sign off, reject, cancel or re-check a promotion, and what each decision needs.

The one home of these rules. ``RegistryService`` applies ``refusal`` before a decision is
sent to the workflow; the workflow's update validators apply it again to the workflow's own
state, and the workflow counts approvals with ``sign_off_decision``. The sign-off rule
(role, quorum or quorum per group, ``exclude_requester``, ``exclude_run_author``) comes from the
policy snapshot the promotion runs under; a signer's groups are those they were in when signing.

Two names are the same person when they are equal after Unicode NFKC normalisation, case
folding and trimming: ``Ａlice``, ``ALICE`` and ``alice`` are one person. Roles and groups
are compared the same way.
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
    "Signer",
    "person_key",
    "quorum_assignment",
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


class Signer(Frozen):
    """Who signed off, with the groups they were in when they signed."""

    user: str
    groups: list[str] = []


class Approval(Signer):
    """One approval signal: who, with which roles and groups, why and when."""

    roles: list[str] = []
    comment: str = ""
    at: datetime


class PromotionFacts(Frozen):
    """What the rules look at: status, requester, run author, the snapshot's sign-off rule, signers so far.

    ``sign_off`` is ``None`` when the promotion needs no sign-off or its checks have not run
    yet; the default rule's role then decides who may reject. ``run_author`` is empty until the
    checks' snapshot named the author of the candidate's training run.
    """

    status: PromotionStatus
    requester: str
    run_author: str = ""
    sign_off: SignOffRule | None = None
    signers: list[Signer] = []


class SignOffState(Frozen):
    """Accepted approvers so far, how many are needed, whether that is enough, and the groups' open slots."""

    approved_by: list[str] = []
    needed: int
    satisfied: bool
    refused: list[str] = []
    missing: dict[str, int] = {}
    """Per group of the rule's ``from`` quorum, the sign-offs it still lacks (groups with none missing left out)."""

    @property
    def remaining(self) -> int:
        """Approvals still missing."""
        return max(self.needed - len(self.approved_by), 0)


def person_key(name: str) -> str:
    """The comparison key of a user (or role, or group) name: NFKC-normalised, case-folded, trimmed."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold()).strip()


def same_person(a: str, b: str) -> bool:
    """Whether two user names name the same person."""
    return person_key(a) == person_key(b)


def _holds(roles: Collection[str], role: str) -> bool:
    return person_key(role) in {person_key(r) for r in roles}


def _role_refusal(user: str, action: Action, role: str) -> Refusal:
    return Refusal(kind=RefusalKind.FORBIDDEN,
                   message=f"'{user}' may not {action.verb} this promotion: the '{role}' role is required.")


# ---------------------------------------------------------------- the group quorum as an assignment


def quorum_assignment(rule: SignOffRule, signers: Sequence[Signer]) -> list[int | None]:
    """Which signer fills each slot of the rule's group quorum (``None``: open), as a maximum matching.

    Slots are the groups of ``rule.from_`` repeated ``count`` times, in order; a signer may fill one
    slot of any group they are in, and fills at most one. Augmenting paths (Kuhn's algorithm) move an
    earlier signer in two groups to their other group when that lets a later signer in, which a greedy
    count would refuse.
    """
    slots = [person_key(quorum.group) for quorum in rule.from_ for _ in range(quorum.count)]
    members = [{person_key(group) for group in signer.groups} for signer in signers]
    owner: list[int | None] = [None] * len(slots)

    def augment(person: int, seen: set[int]) -> bool:
        for slot, group in enumerate(slots):
            if group in members[person] and slot not in seen:
                seen.add(slot)
                holder = owner[slot]
                if holder is None or augment(holder, seen):
                    owner[slot] = person
                    return True
        return False

    for person in range(len(signers)):
        augment(person, set())
    return owner


def _missing(rule: SignOffRule, owner: Sequence[int | None]) -> dict[str, int]:
    missing: dict[str, int] = {}
    slot = 0
    for quorum in rule.from_:
        open_slots = sum(1 for holder in owner[slot:slot + quorum.count] if holder is None)
        slot += quorum.count
        if open_slots:
            missing[quorum.group] = open_slots
    return missing


def _filled(owner: Sequence[int | None]) -> int:
    return sum(1 for holder in owner if holder is not None)


def _named(missing: dict[str, int]) -> str:
    return ", ".join(f"{group} ({count})" for group, count in missing.items()) or "none"


# ---------------------------------------------------------------- who may sign


def _signer_refusal(
    rule: SignOffRule, *, requester: str, run_author: str, user: str, roles: Collection[str], groups: Collection[str]
) -> Refusal | None:
    """Why ``user`` may not sign off under ``rule`` at all, or ``None``."""
    if not person_key(user):
        return Refusal(kind=RefusalKind.INVALID, message="A sign-off needs a user name.")
    if not _holds(roles, rule.role):
        return _role_refusal(user, Action.SIGN_OFF, rule.role)
    if rule.exclude_requester and same_person(user, requester):
        return Refusal(kind=RefusalKind.FORBIDDEN,
                       message=f"'{user}' requested this promotion and cannot sign it off (separation of duties).")
    if rule.exclude_run_author and person_key(run_author) and same_person(user, run_author):
        return Refusal(kind=RefusalKind.FORBIDDEN, message=(
            f"'{user}' is the author of the candidate's training run and cannot sign it off (separation of duties)."))
    wanted = {person_key(quorum.group) for quorum in rule.from_}
    if wanted and not wanted & {person_key(group) for group in groups}:
        listed = ", ".join(quorum.group for quorum in rule.from_)
        return Refusal(kind=RefusalKind.FORBIDDEN, message=(
            f"'{user}' may not sign off this promotion: it needs sign-offs from members of {listed}, "
            f"and '{user}' is in none of these groups."))
    return None


def _repeat_refusal(user: str, signers: Sequence[Signer]) -> Refusal | None:
    """A person signs a promotion off once."""
    if any(same_person(user, earlier.user) for earlier in signers):
        return Refusal(kind=RefusalKind.CONFLICT, message=f"'{user}' has already signed off this promotion.")
    return None


def _slot_refusal(rule: SignOffRule, signer: Signer, signers: Sequence[Signer]) -> Refusal | None:
    """Refuse a sign-off that fills no open slot of the group quorum (its groups already have theirs)."""
    if not rule.from_:
        return None
    before = quorum_assignment(rule, signers)
    if _filled(quorum_assignment(rule, [*signers, signer])) > _filled(before):
        return None
    return Refusal(kind=RefusalKind.CONFLICT, message=(
        f"'{signer.user}' cannot add to the sign-offs: the groups '{signer.user}' is in already have theirs "
        f"(still needed: {_named(_missing(rule, before))})."))


def _who_refusal(action: Action, *, user: str, roles: Collection[str], groups: Collection[str],
                 promotion: PromotionFacts, rule: SignOffRule) -> Refusal | None:
    if action is Action.SIGN_OFF:
        return _signer_refusal(rule, requester=promotion.requester, run_author=promotion.run_author, user=user,
                               roles=roles, groups=groups)
    if action is Action.REJECT:
        return None if _holds(roles, rule.role) else _role_refusal(user, action, rule.role)
    if same_person(user, promotion.requester) or _holds(roles, "admin"):
        return None
    return Refusal(kind=RefusalKind.FORBIDDEN,
                   message=f"Only the requester ({promotion.requester}) or an admin may {action.verb} this promotion.")


def refusal(
    action: Action, *, user: str, roles: Collection[str], promotion: PromotionFacts, comment: str | None = None,
    groups: Collection[str] = (),
) -> Refusal | None:
    """Why ``user`` (in ``groups``) may not make ``action`` on ``promotion`` now, or ``None`` when they may.

    Checked in order: who (role, separation of duties from the requester and the run author,
    membership of a group the quorum names, requester or admin), what the decision says (a rejection
    needs a reason), then when (status, an earlier sign-off by the same person, an open slot of the
    group quorum). ``comment=None`` leaves out what the decision says (a page choosing which buttons to show).
    """
    rule = promotion.sign_off or SignOffRule()
    refused = _who_refusal(action, user=user, roles=roles, groups=groups, promotion=promotion, rule=rule)
    if refused is not None:
        return refused
    if action is Action.REJECT and comment is not None and not comment.strip():
        return Refusal(kind=RefusalKind.INVALID, message="A rejection needs a reason.")
    allowed = ALLOWED_STATUSES[action]
    if promotion.status not in allowed or (action is Action.SIGN_OFF and promotion.sign_off is None):
        needed = " or ".join(sorted(s.value for s in allowed))
        return Refusal(kind=RefusalKind.CONFLICT,
                       message=f"The promotion is {promotion.status.value}; {action.verb} needs {needed}.")
    if action is not Action.SIGN_OFF:
        return None
    return _repeat_refusal(user, promotion.signers) or \
        _slot_refusal(rule, Signer(user=user, groups=list(groups)), promotion.signers)


def sign_off_decision(
    rule: SignOffRule, *, requester: str, approvals: Sequence[Approval], run_author: str = ""
) -> SignOffState:
    """Count the valid approvals in order (refused ones are listed with their reason).

    With a group quorum an approval counts when it fills an open slot of the maximum assignment of
    signers to group slots (``quorum_assignment``); the rule is satisfied when every slot is filled.
    """
    accepted: list[Approval] = []
    refused: list[str] = []
    for approval in approvals:
        reason = _signer_refusal(rule, requester=requester, run_author=run_author, user=approval.user,
                                 roles=approval.roles, groups=approval.groups) or \
            _repeat_refusal(approval.user, accepted) or _slot_refusal(rule, approval, accepted)
        if reason is None:
            accepted.append(approval)
        else:
            refused.append(reason.message)
    approved_by = [a.user for a in accepted]
    if not rule.from_:
        return SignOffState(approved_by=approved_by, needed=rule.approvers,
                            satisfied=len(approved_by) >= rule.approvers, refused=refused)
    missing = _missing(rule, quorum_assignment(rule, accepted))
    return SignOffState(approved_by=approved_by, needed=rule.needed, satisfied=not missing, refused=refused,
                        missing=missing)
